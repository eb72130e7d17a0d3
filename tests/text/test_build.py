"""`edge-distill text` end to end on the tiny teacher and a small text file: a bundle verify passes
(model, golden vectors, tokenization), a no-op rebuild from the cache, and one-line errors."""

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_distill.bundle.verify import verify_bundle
from tests.bundle.test_verify import NODE_DIR
from tests.test_cli import invoke
from tests.test_current_folder import run_in
from tests.text.conftest import SENTENCES


def passages(folder):
    """Forty two-sentence passages, one per line: the summary retrieves the rest."""
    rng = np.random.default_rng(0)
    lines = [f"{SENTENCES[i % 12]} {' '.join(rng.choice(SENTENCES, 2))}" for i in range(40)]
    (folder / "text.txt").write_text("\n".join(lines), encoding="utf-8")
    return folder / "text.txt"


@pytest.fixture(scope="module")
def built(tiny_bert, tmp_path_factory):
    """(the command's arguments, its JSON manifest, the bundle): one build for the module."""
    folder = tmp_path_factory.mktemp("text-build")
    args = ["text", "--teacher-folder", str(tiny_bert), "--text", str(passages(folder)), "--layers", "2",
            "--epochs", "1", "--max-length", "32", "--profile", "rpi4", "--benchmark-seconds", "0.2",
            "--cache-dir", str(folder / "cache"),
            "--out", str(folder / "b")]
    here = folder / "here"  # the user's current folder: left as it was
    here.mkdir()
    previous = Path.cwd()
    os.chdir(here)
    try:
        result = invoke(*args, "--json")
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.output
    assert not list(here.iterdir())
    return args, json.loads(result.stdout), folder / "b"


def test_a_text_bundle_verifies_and_a_rebuild_reads_the_cache(built):
    args, manifest, bundle = built
    assert manifest["text"]["pooling"] == "mean" and manifest["text"]["normalized"]
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["model"]["layers_from_teacher"] == [0, 3]
    assert {"teacher_fp32", "student_fp32", "student_int8"} == set(manifest["metrics"]["quality"])
    # The rpi4 profile's sequence lengths, 16, 64 and 128, timed at 16 and at --max-length 32; its
    # 4 threads at most this host's cores.
    assert list(manifest["metrics"]["p50_ms"]) == ["16", "32"]
    assert manifest["profile"]["name"] == "rpi4" and manifest["profile"]["device"]["arch"] == "aarch64"
    assert "NOT on the target device" in manifest["measurement"]["measured_on"]
    assert all(manifest["metrics"]["p50_ms"][n][m] > 0 for n in ("16", "32") for m in ("teacher_fp32", "student_int8"))
    checks = {c.name: c for c in verify_bundle(bundle)}
    assert all(c.passed for c in checks.values()) and "golden tokenization" in checks
    card = (bundle / "README.md").read_text()  # the text kind's model card, hashed with the rest
    assert "README.md" in manifest["files"] and manifest["model"]["sha256"] in card
    assert f"Shipped: {manifest['model']['variant']}" in card and "| `input_ids` | int64 |" in card
    assert args[2] not in card and str(bundle.parent) not in card  # this machine's paths stay here
    written = (bundle / "manifest.json").read_text()  # names and hashes travel, this machine's paths do not
    assert str(bundle.parent) not in written and manifest["teacher"]["folder"] == Path(args[2]).name
    # rpi4 is aarch64: this host cannot measure for it, so the int8 student ships where the quality
    # budget allows, timed here at the profile's threads (at most this host's cores) for the record.
    judged = manifest["metrics"]["int8_judgement"]
    assert manifest["model"]["variant"] == ("student_int8" if "within" in judged else "student_fp32"), judged
    assert not manifest["metrics"]["choice"]["for_device"] and manifest["runtime"]["intra_op_threads"] == 2
    again = run_in(bundle.parent / "again", *args)  # a new process, as a user reruns it
    assert "plan: all 6 stage(s) cached" in again.stderr and "torch not imported" in again.stderr
    from edge_distill.targets.remote import bench_bundle

    report = bench_bundle(bundle, None, overrides={"min_seconds": 0.05, "timed_runs": 5})
    assert report["golden_within_tolerance"] and report["threads"] == 2 and report["latency_ms"]["p50"] > 0


def test_predict_on_strings_gives_the_golden_ids_and_embeddings(built):
    from edge_distill.bundle.reader import Bundle

    bundle = built[2]
    golden_text = json.loads((bundle / "golden_text.json").read_text())
    result = invoke("predict", str(bundle), *golden_text["texts"], "", "--json")
    count = len(golden_text["texts"]) + 1
    assert result.exit_code == 3 and f"1 of {count} input(s) could not be predicted; the first: an empty text" in result.stderr
    *predictions, empty = json.loads(result.stdout)["predictions"]
    assert "error" in empty and [p["input_ids"] for p in predictions] == golden_text["input_ids"]
    opened = Bundle.open_checked(bundle)
    expected, atol = opened.golden()["output:sentence_embedding"][:, 0], opened.manifest["golden"]["tolerance"]["atol"]
    # Unpadded here, padded with a mask of zeros in the golden vectors: the same embedding.
    np.testing.assert_allclose([p["embedding"] for p in predictions], expected, atol=atol["sentence_embedding"])


# The JavaScript tokenizer and runtime, as a web or Node app has them.
needs_node_tokenizers = pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "@huggingface" / "tokenizers").is_dir() or shutil.which("node") is None,
    reason="cd tests/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci (.ci/run does)")


@pytest.mark.node
@needs_node_tokenizers
def test_a_javascript_app_tokenizes_the_golden_strings_and_gets_the_golden_embeddings(built):
    """@huggingface/tokenizers reads the bundle's tokenizer.json, onnxruntime-node runs the ids."""
    done = subprocess.run(["node", str(NODE_DIR / "check_text_golden.mjs"), str(built[2])], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["idsMatch"] == report["strings"] > 0 and report["maxAbsDiff"] <= report["tolerance"]


def test_verify_fails_a_tokenizer_that_no_longer_gives_the_golden_ids(built, tmp_path):
    from edge_distill.hashing import sha256

    bundle = tmp_path / "b"
    shutil.copytree(built[2], bundle)
    golden = json.loads((bundle / "golden_text.json").read_text())
    golden["texts"][0] = "a different text altogether"
    (bundle / "golden_text.json").write_text(json.dumps(golden))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["golden_text.json"]["sha256"] = sha256(bundle / "golden_text.json")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    checks = {c.name: c for c in verify_bundle(bundle)}
    detail = checks["golden tokenization"].detail
    assert not checks["golden tokenization"].passed and detail.startswith(f"{len(golden['texts']) - 1}/{len(golden['texts'])} ")


def test_bad_text_input_is_one_line_and_writes_nothing(tiny_bert, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    result = invoke("text", "--teacher-folder", str(tiny_bert), "--text", str(tmp_path / "empty.txt"),
                    "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code != 0 and "0 non-empty passage(s)" in result.output and "Traceback" not in result.output
    result = invoke("text", "--teacher-folder", str(tmp_path / "nope"), "--out", str(tmp_path / "b"),
                    "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code != 0 and "not found" in result.output
    result = invoke("text", "--teacher-folder", str(tiny_bert), "--text", str(passages(tmp_path)), "--max-length", "65",
                    "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code != 0 and "--max-length 65: the teacher has 64 position embeddings" in result.output
    assert not (tmp_path / "b").exists()


@pytest.mark.slow  # two student builds
def test_a_budget_sweeps_student_layers_and_ships_the_smallest_that_fits(tiny_bert, tmp_path):
    base = ["text", "--teacher-folder", str(tiny_bert), "--text", str(passages(tmp_path)), "--epochs", "1",
            "--max-length", "32", "--sweep-layers", "2,1", "--cache-dir", str(tmp_path / "cache")]
    result = invoke(*base, "--max-latency-ms", "1000", "--out", str(tmp_path / "b"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["sweep"]
    assert [r["layers"] for r in report["rows"]] == [1, 2] and report["chosen"] == "1-layer"
    assert report["quality"] == "held-out recall@10" and report["rows"][0]["params"] < report["rows"][1]["params"]
    assert json.loads((tmp_path / "b" / "sweep.json").read_text())["chosen"] == "1-layer"
    assert all(c.passed for c in verify_bundle(tmp_path / "b"))
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["model"]["layers_from_teacher"] == [3]
    # Nothing fits: one line saying by how much, nothing written; both students come from the cache.
    result = invoke(*base, "--max-latency-ms", "0.000001", "--out", str(tmp_path / "none"))
    assert result.exit_code != 0 and "latency: the fastest, 1-layer, has p50" in result.output
    assert result.stderr.count("text-student: cached") == 2 and not (tmp_path / "none").exists()


def test_a_killed_text_runs_staging_goes_with_the_next_run(built):
    from tests.pipeline.test_optimize import dead_pid

    args, _, bundle = built
    cache = Path(args[args.index("--cache-dir") + 1])
    killed = cache / "text-student" / f".tmp-{dead_pid()}-abc"
    killed.mkdir(parents=True)
    scratch = bundle.parent / f".{bundle.name}.tmp-{dead_pid()}-abc"  # a killed packaging's folder beside --out
    scratch.mkdir()
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert not killed.exists() and not scratch.exists()


@pytest.mark.arm
@pytest.mark.skipif(not shutil.which("qemu-aarch64-static"), reason="needs qemu-aarch64-static (.ci/run installs it)")
def test_a_text_bundle_for_rpi4_gives_its_golden_outputs_on_aarch64(built):
    result = invoke("verify", str(built[2]), "--emulate", "aarch64", "--json")
    assert result.exit_code == 0, result.output
    (emulated,) = [c for c in json.loads(result.stdout)["checks"] if c["name"].startswith("aarch64")]
    assert emulated["passed"] and "Cortex-A72" in emulated["name"], emulated


@pytest.mark.ssh
def test_a_text_bundle_is_benchmarked_on_the_device_named(built, server, tmp_path):
    """`text --profile rpi4 --remote HOST`: the stages come from the cache, and the bundle is timed
    on the device (a real sshd on loopback) with every golden output checked there."""
    import sys

    args, manifest, _ = built
    args = [*args[: args.index("--out")], "--out", str(tmp_path / "b"), "--remote", "device",
            "--ssh-config", str(server.root / "ssh_config"), "--remote-python", sys.executable, "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    device = json.loads(result.stdout)["device_benchmark"]
    assert device["where"] == "device" and device["golden_within_tolerance"] and device["latency_ms"]["p50"] > 0
    assert json.loads((tmp_path / "b" / "device_benchmark.json").read_text())["where"] == "device"
    assert "plan: all 6 stage(s) cached" in result.stderr


def cli_settings(args: list[str], **changes):
    """The TextBuildSettings the `built` command's flags make, through the API's own defaults."""
    from edge_distill.config import load_config
    from edge_distill.text.settings import DEFAULT_TRAINING, TextBuildSettings

    flag = {name: args[args.index(name) + 1] for name in ("--teacher-folder", "--text", "--layers", "--max-length",
                                                          "--benchmark-seconds")}
    settings = {"teacher_folder": Path(flag["--teacher-folder"]), "text": Path(flag["--text"]),
                "layers": int(flag["--layers"]), "max_length": int(flag["--max-length"]),
                "benchmark_seconds": float(flag["--benchmark-seconds"]),
                "distill": dataclasses.replace(DEFAULT_TRAINING["embedding"], epochs=1), "profile": load_config("rpi4")}
    return TextBuildSettings(**(settings | changes))


def test_the_api_makes_the_clis_bundle_from_the_same_profile(built, tmp_path):
    """Defaults (threads from the profile, clamped here; the quality budget) are resolved in the
    settings, so the API, given what the flags say, makes the CLI's bundle: every stage a cache hit."""
    from edge_distill.api import text_bundle

    args, manifest, _ = built
    lines = []
    made = text_bundle(cli_settings(args), tmp_path / "b", cache_dir=Path(args[args.index("--cache-dir") + 1]),
                       progress=lines.append)
    assert "plan: all 6 stage(s) cached" in lines and made["model"] == manifest["model"]
    assert made["runtime"] == manifest["runtime"]


def test_a_timing_change_times_again_without_retraining(built, tmp_path):
    """Another device (x86-avx512: this host's architecture, so float and int8 are timed at 1 and 2
    threads and the quicker within budget ships) reruns the timing and the package, not the student."""
    from edge_distill.api import text_bundle
    from edge_distill.config import load_config

    args, _, _ = built
    lines = []
    made = text_bundle(cli_settings(args, profile=load_config("x86-avx512"), benchmark_seconds=0.05),
                       tmp_path / "b", cache_dir=Path(args[args.index("--cache-dir") + 1]), progress=lines.append)
    ran = [line.split("] ")[1] for line in lines if line.startswith("[") and "cached" not in line]
    assert ran == ["text-benchmark: running", "text-package: running"], lines
    choice = made["metrics"]["choice"]
    assert choice["for_device"] and {row["threads"] for row in choice["candidates"]} == {1, 2}
    assert all(len(row["round_p50s"]) == 5 for row in choice["candidates"])
    shipped = made["model"]["variant"]
    assert made["runtime"]["intra_op_threads"] in (1, 2) and made["model"]["why"] == made["runtime"]["why"]
    assert (shipped == "student_int8") == ("x faster than float's best" in made["model"]["why"]), made["model"]["why"]
    assert all(c.passed for c in verify_bundle(tmp_path / "b"))


def test_a_sweeps_budget_is_not_part_of_a_students_cache_key(tmp_path):
    """Each student of a sweep is the text-student stage with its own layers: the budget and the
    layer list that chose it must not change its key, or every new budget would retrain every size."""
    from edge_distill.config import BudgetConfig
    from edge_distill.pipeline.stages.text import TextStudent
    from edge_distill.text.settings import TextBuildSettings, TextData

    data = TextData("texts", ["a b", "c d"], ["e f"], ["e f"])
    plain = TextStudent(TextBuildSettings(layers=2), tmp_path, data, None).params()
    swept = TextStudent(TextBuildSettings(layers=2, budget=BudgetConfig(max_latency_ms=1.0), sweep_layers=(1, 2)),
                        tmp_path, data, None).params()
    assert plain == swept
    assert TextStudent(TextBuildSettings(layers=1), tmp_path, data, None).params() != plain


def test_a_tokenizer_past_the_bound_is_refused_before_it_is_read(built, tmp_path):
    """A text bundle's tokenizer.json is read by the tokenizers library at several times its size:
    past 64 MB (the generator kind's bound too) verify fails it and predict stops in one line."""
    from edge_distill.hashing import sha256

    bundle = tmp_path / "b"
    shutil.copytree(built[2], bundle)
    (bundle / "tokenizer.json").write_text(" " * (65 * 1024**2))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["tokenizer.json"] = {"sha256": sha256(bundle / "tokenizer.json"),
                                           "size_bytes": (bundle / "tokenizer.json").stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    checks = {c.name: c for c in verify_bundle(bundle)}
    assert not checks["golden tokenization"].passed and "a tokenizer may hold" in checks["golden tokenization"].detail
    predicted = invoke("predict", str(bundle), "how do I read a file")
    assert predicted.exit_code != 0 and "a tokenizer may hold" in predicted.output and "Traceback" not in predicted.output
