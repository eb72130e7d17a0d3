"""The variants of a decoder and the rule that picks one."""

from pathlib import Path

import numpy as np
import pytest

from edge_distill.lm.quantize import choose_variant


def rows(**figures):
    """name=(perplexity, tokens/s in each of 5 interleaved rounds, or one figure for all, file size)."""
    def rounds(rate):
        return list(rate) if isinstance(rate, tuple) else [rate] * 5

    return {name: {"perplexity": ppl, "decode_tokens_per_s": float(np.median(rounds(rate))),
                   "round_decode_tokens_per_s": rounds(rate), "size_bytes": size}
            for name, (ppl, rate, size) in figures.items()}


def test_the_fastest_within_the_perplexity_budget_of_the_teacher_ships():
    chosen, why = choose_variant(rows(fp32=(14.0, 100, 400), int8_weights=(14.1, 150, 120),
                                      int4_weights=(16.0, 220, 70)), 10.0, 1.5)
    assert chosen == "int8_weights"
    assert "1.41x the teacher's fp32 10.00, within 1.5x" in why and "int4_weights beyond the perplexity budget" in why


def test_the_quantized_teacher_ships_where_no_student_earns_its_place():
    """A student 4.6x the teacher's perplexity (a user's small corpus) loses to the teacher at 4 bits."""
    chosen, why = choose_variant(rows(fp32=(46.0, 300, 400), int4_weights=(50.0, 500, 70),
                                      teacher_int4_weights=(13.0, 200, 90), teacher_int8_weights=(10.2, 150, 160)),
                                 10.0, 1.5)
    assert chosen == "teacher_int4_weights" and "fp32, int4_weights beyond the perplexity budget" in why


def test_quicker_in_every_interleaved_round_wins_even_by_little():
    chosen, why = choose_variant(rows(fp32=(10.0, 100, 400), int8_weights=(10.1, (201, 202, 203, 204, 205), 120),
                                      int4_weights=(10.5, (196, 197, 198, 199, 200), 70)), 10.0, 1.5)
    assert chosen == "int8_weights" and "tied" not in why


def test_a_speed_tie_beyond_noise_goes_to_the_smaller_file():
    """int8_weights is quicker by its median but not in every round: a tie, and int4's file is smaller."""
    chosen, why = choose_variant(rows(fp32=(10.0, 100, 400), int8_weights=(10.1, (210, 190, 205, 206, 207), 120),
                                      int4_weights=(10.5, (196, 197, 198, 199, 200), 70)), 10.0, 1.5)
    assert chosen == "int4_weights" and "tied with int8_weights" in why and "smaller file wins a tie" in why


def test_nothing_within_budget_ships_the_closest_to_the_teacher_and_says_so():
    chosen, why = choose_variant(rows(fp32=(20.0, 100, 400), int4_weights=(30.0, 300, 70)), 10.0, 1.5)
    assert chosen == "fp32" and why.startswith("no candidate within 1.5x the teacher's perplexity 10.00")


@pytest.fixture(scope="module")
def decoder(tiny_llama, tmp_path_factory):
    from edge_distill.lm.export import build_decoder

    path = tmp_path_factory.mktemp("decoder") / "fp32.onnx"
    build_decoder(tiny_llama, tiny_llama / "tokenizer.json", path, "fp32")
    return path


@pytest.mark.parametrize("variant, bits", [("int8_weights", 8), ("int4_weights", 4)])
def test_each_variant_is_the_builders_weight_only_kind_and_stays_close(decoder, tiny_llama, variant, bits, tmp_path):
    import onnx

    from edge_distill.device.decoder import Decoder
    from edge_distill.lm.quantize import make_variant
    from edge_distill.sessions import open_session

    report = make_variant(variant, tiny_llama, tiny_llama / "tokenizer.json", tmp_path / "q.onnx")
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    quantized = [node for node in graph.node if node.op_type in ("MatMulNBits", "GatherBlockQuantized")]
    assert report["quantized_nodes"] == len(quantized) > 0
    assert {a.i for node in quantized for a in node.attribute if a.name == "bits"} == {bits}
    # Every weight matrix quantized: no plain MatMul reads a weight.
    weights = {init.name for init in graph.initializer}
    assert not [node for node in graph.node if node.op_type == "MatMul" and weights.intersection(node.input)]
    prompt = np.asarray([[5, 6, 7, 8]])
    full = Decoder(open_session(decoder)).start(prompt).logits[0]
    quantized_logits = Decoder(open_session(tmp_path / "q.onnx")).start(prompt).logits[0]
    assert np.abs(quantized_logits - full).max() < 0.25 * np.abs(full).max()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]  # the builder's scratch folder is gone


def test_a_variant_made_from_relative_paths_reads_and_writes_them_where_the_user_is(tiny_llama, tmp_path, monkeypatch):
    """The builder runs in a scratch folder; a relative path given to make_variant (the
    README's default cache is `.edge-distill/cache`) must still name the user's files."""
    import shutil

    from edge_distill.lm.quantize import make_variant

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_llama, tmp_path / "model")
    make_variant("int8_weights", Path("model"), Path("model/tokenizer.json"), Path("q.onnx"))
    assert (tmp_path / "q.onnx").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["model", "q.onnx"]
