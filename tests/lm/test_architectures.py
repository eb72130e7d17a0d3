"""Every architecture `edge-distill llm` accepts (lm/teacher.ARCHITECTURES), as a tiny random model
built end to end: teacher, student, onnxruntime-genai's builder, parity, bundle; then the bundle
verifies, generates, decodes its golden prompts through onnxruntime-genai and in onnxruntime-node,
and (one of each family, EMULATED) on aarch64 under emulation. A refusal names the architectures
that work."""

from __future__ import annotations

import json
import random
import subprocess

import numpy as np
import pytest

from edge_distill.lm.teacher import ARCHITECTURES
from tests.lm.conftest import ARCHITECTURE_SETTINGS, SENTENCES, tiny_model_folder
from tests.lm.test_build import invoke


def test_every_accepted_architecture_has_a_tiny_model_here():
    assert set(ARCHITECTURE_SETTINGS) == set(ARCHITECTURES)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """{architecture: (bundle folder, its manifest)}, built on first use."""
    built = {}

    def build(architecture: str):
        if architecture not in built:
            work = tmp_path_factory.mktemp(architecture)
            teacher = tiny_model_folder(work / "teacher", architecture)
            rng = random.Random(0)
            (work / "text.txt").write_text("\n".join(" ".join(rng.sample(SENTENCES, 3)) for _ in range(200)))
            result = invoke("llm", "--teacher", teacher, "--text", work / "text.txt", "--context", 16, "--layers", 2,
                            "--vocab", 40, "--epochs", 1, "--train-windows", 64, "--out", work / "dist",
                            "--cache-dir", work / "cache", "--json")
            assert result.exit_code == 0, result.output
            built[architecture] = (work / "dist", json.loads(result.stdout))
        return built[architecture]
    return build


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_tiny_model_of_each_architecture_builds_verifies_and_generates(architecture, bundles):
    """Parity with transformers over a prefill and 32 decode steps is part of the build (llm-export);
    the student cuts the vocabulary to 40 tokens, so the graph edit runs on every architecture."""
    bundle, manifest = bundles(architecture)
    assert manifest["teacher"]["architecture"] == architecture
    assert manifest["export"]["parity"]["steps"] == 32 and manifest["training"]["vocabulary"] < 300
    assert invoke("verify", bundle).exit_code == 0
    generated = invoke("generate", bundle, manifest["golden"]["prompts"][0], "--max-new-tokens", 4, "--json")
    assert generated.exit_code == 0, generated.output


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_onnxruntime_genai_gives_the_golden_tokens_for_each_architecture(architecture, bundles):
    og = pytest.importorskip("onnxruntime_genai", reason='pip install -e ".[llm]"')
    bundle, manifest = bundles(architecture)
    model = og.Model(str(bundle))
    eos = manifest["generation"]["eos_token_ids"]
    with np.load(bundle / "golden.npz") as golden:
        for prompt_ids, length, expected in zip(golden["prompt_ids"], golden["prompt_lengths"], golden["greedy_ids"]):
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=int(length) + len(expected), do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens(prompt_ids[:length].astype(np.int32))
            tokens = []
            while not generator.is_done():
                generator.generate_next_token()
                tokens.append(int(generator.get_next_tokens()[0]))
            until_eos = next((i + 1 for i, t in enumerate(expected) if t in eos), len(expected))
            assert tokens[:until_eos] == expected.tolist()[:until_eos]


@pytest.mark.node
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_onnxruntime_node_gives_the_golden_tokens_for_each_architecture(architecture, bundles):
    from tests.bundle.test_verify import NODE_DIR

    bundle, _ = bundles(architecture)
    done = subprocess.run(["node", str(NODE_DIR / "check_generation.mjs"), str(bundle)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["generationMatch"] == 4


# Under qemu each takes 7 s; CI's 25 minutes hold one of each family of the builder's own classes:
# Llama's (llama, mistral), Qwen 3's (q/k norms), Gemma's (scaled embeddings, sliding windows, and
# Gemma 2's soft-capping) and Phi-3's.
EMULATED = ("llama", "qwen3", "gemma2", "gemma3_text", "phi3")


@pytest.mark.arm
@pytest.mark.parametrize("architecture", EMULATED)
def test_aarch64_gives_the_golden_tokens_for_each_architecture(architecture, bundles):
    bundle, _ = bundles(architecture)
    result = invoke("verify", bundle, "--emulate", "aarch64", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checks"][-1]["detail"].startswith("4/4 golden prompts generate")


def test_an_architecture_it_does_not_export_is_refused_naming_those_it_does(tmp_path):
    folder = tiny_model_folder(tmp_path / "t", "llama", layers=1)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "gpt2", "architectures": ["GPT2ForCausalLM"]}))
    result = invoke("llm", "--teacher", folder, "--out", tmp_path / "dist", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 4, result.output
    assert "architecture 'gpt2' is not one edge-distill llm exports" in result.stderr
    assert "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3" in result.stderr
    assert not (tmp_path / "dist").exists()


def test_a_rotary_scaling_it_does_not_export_is_refused_before_any_work(tmp_path):
    folder = tiny_model_folder(tmp_path / "t", "llama", layers=1)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(config))
    result = invoke("llm", "--teacher", folder, "--out", tmp_path / "dist", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 4 and "rotary scaling 'dynamic' is not one edge-distill llm exports" in result.stderr
    assert not (tmp_path / "dist").exists() and not (tmp_path / "cache").exists()
