"""`edge-distill llm` end to end on a tiny random Llama: the bundle verifies, generates, reruns as a
no-op; bad input is one line and writes nothing."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edge_distill.cli import main
from tests.lm.conftest import tiny_llama_folder
from tests.test_current_folder import run_in


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tiny_args(teacher, text, tmp_path):
    return ["llm", "--teacher", teacher, "--text", text, "--context", 16, "--layers", 2, "--vocab", 0, "--epochs", 1,
            "--train-windows", 64, "--out", tmp_path / "dist", "--cache-dir", tmp_path / "cache"]


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "dist").exists() and not (tmp_path / "cache").exists()


def test_a_folder_that_is_not_a_causal_lm_is_one_line(tmp_path, tiny_text):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (folder / "tokenizer.json").write_text("{}")
    result = invoke(*tiny_args(folder, tiny_text, tmp_path))
    assert result.exit_code != 0 and "name no ...ForCausalLM; not a causal language model" in result.output
    assert "Traceback" not in result.output
    assert_nothing_written(tmp_path)


def test_a_teacher_without_an_eos_token_is_one_line(tmp_path, tiny_text):
    folder = tiny_llama_folder(tmp_path / "no-eos", layers=1, eos=False)
    result = invoke(*tiny_args(folder, tiny_text, tmp_path))
    assert result.exit_code != 0 and "no end-of-sequence token id" in result.output
    assert_nothing_written(tmp_path)


def test_a_file_that_is_not_gguf_is_one_line(tmp_path, tiny_text):
    pytest.importorskip("gguf")
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf file at all" * 10)
    result = invoke(*tiny_args(fake, tiny_text, tmp_path))
    assert result.exit_code != 0 and "not a GGUF file gguf can read" in result.output
    assert_nothing_written(tmp_path)


def test_text_too_small_to_hold_out_a_split_is_one_line(tmp_path, tiny_llama):
    text = tmp_path / "small.txt"
    text.write_text("\n".join(f"The fox number {n} jumps over the fence." for n in range(12)))
    result = invoke(*tiny_args(tiny_llama, text, tmp_path))
    assert result.exit_code != 0 and "too little text for held-out windows of 16 tokens" in result.output
    assert not (tmp_path / "dist").exists() and not list((tmp_path / "cache").glob("*/*"))


@pytest.mark.slow
def test_the_bundle_verifies_generates_and_reruns_from_the_cache(tmp_path, tiny_llama, tiny_text):
    result = invoke(*tiny_args(tiny_llama, tiny_text, tmp_path), "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert [step["cached"] for step in manifest["steps"]] == [False] * 5
    assert set(manifest["metrics"]["variants"]) == {"fp32", "int8_weights", "int4_weights", "int8_dynamic"}
    assert manifest["model"]["precision"] in manifest["metrics"]["variants"]
    bundle = tmp_path / "dist"
    assert invoke("verify", bundle).exit_code == 0

    with np.load(bundle / "golden.npz") as golden:
        prompt = golden["prompt_ids"][0][: golden["prompt_lengths"][0]].tolist()
        expected = golden["greedy_ids"][0].tolist()
    generated = invoke("generate", bundle, manifest["golden"]["prompts"][0], "--max-new-tokens", 8, "--json")
    assert generated.exit_code == 0, generated.output
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    assert tokenizer.encode(manifest["golden"]["prompts"][0]).ids == prompt
    eos = manifest["generation"]["eos_token_ids"]
    greedy = expected[: next((i for i, t in enumerate(expected) if t in eos), 8)][:8]
    assert json.loads(generated.stdout)["text"] == tokenizer.decode(greedy)

    too_long = invoke("generate", bundle, "fox " * 200)
    assert too_long.exit_code != 0 and "generates at most 32 in all" in too_long.output

    # A rerun reads every stage from the cache, in a new process that never imports torch.
    again = run_in(tmp_path / "here", *map(str, tiny_args(tiny_llama, tiny_text, tmp_path)))
    assert "plan: all 5 stage(s) cached" in again.stderr and "torch not imported" in again.stderr

    # A golden id the model does not generate fails verify's greedy check (the hashes vouched for).
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    golden = dict(np.load(tampered / "golden.npz"))
    golden["greedy_ids"][0, 0] = (golden["greedy_ids"][0, 0] + 1) % 300
    np.savez(tampered / "golden.npz", **golden)
    (tampered / "golden.json").write_text(json.dumps({k: v.tolist() for k, v in golden.items()}))
    from edge_distill.hashing import sha256

    stated = json.loads((tampered / "manifest.json").read_text())
    for name in ("golden.npz", "golden.json"):
        stated["files"][name] = {"sha256": sha256(tampered / name), "size_bytes": (tampered / name).stat().st_size}
    (tampered / "manifest.json").write_text(json.dumps(stated))
    failed = invoke("verify", tampered)
    assert failed.exit_code == 1 and "FAIL  golden greedy ids        3/4 prompts" in failed.output
