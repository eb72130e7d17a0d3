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


def test_the_fastest_within_the_perplexity_budget_ships():
    chosen, why = choose_variant(rows(fp32=(10.0, 100, 400), int8_weights=(10.1, 150, 120),
                                      int4_weights=(12.0, 220, 70)), 0.10)
    assert chosen == "int8_weights"
    assert "int4_weights beyond the perplexity budget" in why


def test_quicker_in_every_interleaved_round_wins_even_by_little():
    chosen, why = choose_variant(rows(fp32=(10.0, 100, 400), int8_weights=(10.1, (201, 202, 203, 204, 205), 120),
                                      int4_weights=(10.5, (196, 197, 198, 199, 200), 70)), 0.10)
    assert chosen == "int8_weights" and "tied" not in why


def test_a_speed_tie_beyond_noise_goes_to_the_smaller_file():
    """int8_weights is quicker by its median but not in every round: a tie, and int4's file is smaller."""
    chosen, why = choose_variant(rows(fp32=(10.0, 100, 400), int8_weights=(10.1, (210, 190, 205, 206, 207), 120),
                                      int4_weights=(10.5, (196, 197, 198, 199, 200), 70)), 0.10)
    assert chosen == "int4_weights" and "tied with int8_weights" in why and "smaller file wins a tie" in why


def test_nothing_within_budget_but_fp32_ships_fp32():
    assert choose_variant(rows(fp32=(10.0, 100, 400), int4_weights=(20.0, 300, 70)), 0.10)[0] == "fp32"


@pytest.fixture(scope="module")
def decoder(tiny_llama, tmp_path_factory):
    from edge_distill.lm.export import export_decoder
    from edge_distill.lm.teacher import TeacherSource, load_teacher

    path = tmp_path_factory.mktemp("decoder") / "fp32.onnx"
    export_decoder(load_teacher(TeacherSource(tiny_llama)).model, path)
    return path


@pytest.mark.parametrize("variant, op", [("int8_weights", "MatMulNBits"), ("int4_weights", "MatMulNBits"),
                                         ("int8_dynamic", "DynamicQuantizeLinear")])
def test_each_variant_is_onnx_runtimes_own_kind_and_stays_close(decoder, variant, op, tmp_path):
    import onnx

    from edge_distill.device.decoder import Decoder
    from edge_distill.lm.quantize import make_variant
    from edge_distill.sessions import open_session

    make_variant(variant, decoder, tmp_path / "q.onnx")
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    weights = {init.name for init in graph.initializer}
    assert op in {node.op_type for node in graph.node}
    # Every weight matrix quantized; what stays MatMul is attention's, between activations.
    assert not [node for node in graph.node if node.op_type == "MatMul" and weights.intersection(node.input)]
    prompt = np.asarray([[5, 6, 7, 8]])
    full = Decoder(open_session(decoder)).start(prompt).logits[0]
    quantized = Decoder(open_session(tmp_path / "q.onnx")).start(prompt).logits[0]
    assert np.abs(quantized - full).max() < 0.25 * np.abs(full).max()


@pytest.mark.parametrize("variant", ["int8_weights", "int8_dynamic"])
def test_a_variant_made_from_relative_paths_reads_and_writes_them_where_the_user_is(decoder, variant, tmp_path,
                                                                                   monkeypatch):
    """ONNX Runtime's tools run in a scratch folder of their own; a relative path given to
    make_variant (the README's default cache is `.edge-distill/cache`) must still name the user's file."""
    import shutil

    from edge_distill.lm.quantize import make_variant

    monkeypatch.chdir(tmp_path)
    shutil.copyfile(decoder, tmp_path / "fp32.onnx")
    make_variant(variant, Path("fp32.onnx"), Path("q.onnx"))
    assert (tmp_path / "q.onnx").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "q.onnx"]
