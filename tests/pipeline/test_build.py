"""End to end: a tiny build publishes a complete, consistent bundle, atomically."""

import hashlib
import json
from pathlib import Path

import onnx
import pytest

from edge_distill.pipeline.stages.benchmark import BenchmarkStage
from edge_distill.api import build_bundle
from edge_distill.pipeline.build import run_pipeline
from tests.conftest import tiny_config


@pytest.mark.slow
def test_tiny_build_publishes_a_complete_bundle(tmp_path):
    lines = []
    run = build_bundle(tiny_config(), tmp_path / "dist", tmp_path / "cache", progress=lines.append).run
    bundle = tmp_path / "dist"
    assert sorted(p.name for p in bundle.iterdir()) == [
        "README.md", "golden.json", "golden.npz", "manifest.json", "model.onnx",
        "report.csv", "report.html", "report.json", "report.md"]
    manifest = json.loads((bundle / "manifest.json").read_text())

    assert manifest["schema_version"] == 1
    assert manifest["model"]["sha256"] == hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    assert manifest["profile"]["name"] == "rpi4" and manifest["profile"]["device"]["arch"] == "aarch64"
    assert manifest["inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert manifest["outputs"][0]["shape"] == ["batch", 10]
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert {"layout", "pixel_scale", "mean", "std"} <= set(manifest["preprocessing"])
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "onnxsim"}

    variants = {m["variant"]: m for m in manifest["metrics"]}
    assert list(variants) == ["teacher_fp32", "student_fp32", "student_int8"]
    for m in variants.values():
        assert set(m) >= {"provider", "accuracy", "teacher_agreement", "params", "size_bytes", "latency_ms"}
        assert set(m["latency_ms"]) >= {"cold_start", "p50", "p90", "p99"}
        assert m["estimate_ms"] > 0 and "measured_over_estimate" not in m  # rpi4 figures are not from a Pi
    assert variants["teacher_fp32"]["teacher_agreement"] == 1.0
    # The shipped model's accuracy is its top-1 on the test split, recomputed here from the files.
    from edge_distill.data.dataset import Dataset
    from edge_distill.export.onnx_io import run_onnx

    dataset = Dataset.load(run.artifacts["dataset.npz"])
    top1 = run_onnx(bundle / "model.onnx", dataset.x["test"])["logits"].argmax(1)
    assert variants["student_int8"]["accuracy"] == pytest.approx(float((top1 == dataset.y["test"]).mean()))
    assert variants["student_int8"]["size_bytes"] == (bundle / "model.onnx").stat().st_size
    assert variants["student_int8"]["params"] < variants["teacher_fp32"]["params"]
    # The ARM profile's figures come from this x86 host, and the bundle says so.
    assert "NOT on the target device" in manifest["measurement"]["measured_on"]
    assert manifest["measurement"]["method"]["threads_requested"] == 4

    ops = {n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    card = (bundle / "README.md").read_text()
    assert "student_int8" in card and manifest["model"]["sha256"] in card
    assert any("[9/9] package" in line for line in lines)


def test_simplify_opt_out_is_recorded(tiny_cache, tmp_path):
    config = tiny_config("simplify.enabled=false")
    build_bundle(config, tmp_path / "dist", tiny_cache)
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert manifest["model"]["simplified"] == {"enabled": False, "reason": "opted out: simplify.enabled = false"}


def test_failed_build_leaves_previous_bundle_untouched(tiny_cache, tmp_path, monkeypatch):
    out = tmp_path / "dist"
    build_bundle(tiny_config(), out, tiny_cache)
    before = (out / "manifest.json").read_bytes()

    def explode(self, inputs, out_dir, progress):
        raise RuntimeError("benchmark crashed")

    monkeypatch.setattr(BenchmarkStage, "run", explode)
    with pytest.raises(RuntimeError):
        build_bundle(tiny_config("benchmark.timed_runs=6"), out, tiny_cache)
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]  # no temp folders left behind


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_model_bytes(tiny_bundle, tmp_path):
    """Reproducible: a build from an empty cache yields a byte-identical model.onnx and the same accuracy."""
    build_bundle(tiny_config(), tmp_path / "dist", tmp_path / "fresh-cache")
    first = json.loads((tiny_bundle / "manifest.json").read_text())
    again = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert again["model"]["sha256"] == first["model"]["sha256"]
    assert again["build_id"] == first["build_id"]
    assert [m["accuracy"] for m in again["metrics"]] == [m["accuracy"] for m in first["metrics"]]


@pytest.mark.slow  # 4 s: a build with QAT fine-tuning (distill/test_qat.py covers the QAT module fast)
def test_quantization_aware_distillation_flows_into_the_bundle(tiny_cache, tmp_path):
    qat_run = build_bundle(tiny_config("distill.qat_epochs=1"), tmp_path / "dist", tiny_cache).run
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    distillation = manifest["training"]["distillation"]
    qat = distillation["qat"]
    assert qat["epochs"] == 1 and qat["scheme"]["per_channel"] is True
    assert qat["val_accuracy_before"] == distillation["chain"][-1]["val_accuracy"]  # it started from the KD student
    plain_run = build_bundle(tiny_config(), tmp_path / "plain", tiny_cache).run
    # QAT fine-tuned the weights that ship: other student weights, another model file.
    assert qat_run.artifacts["student.pt"].read_bytes() != plain_run.artifacts["student.pt"].read_bytes()
    assert (tmp_path / "dist" / "model.onnx").read_bytes() != (tmp_path / "plain" / "model.onnx").read_bytes()
    assert manifest["model"]["precision"] == "int8"


def test_quantization_search_ships_the_selected_recipe(tiny_cache, tmp_path):
    config = tiny_config("quantize.search=true", "quantize.max_accuracy_drop=100.0", "quantize.search_min_seconds=0")
    build_bundle(config, tmp_path / "dist", tiny_cache)
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    selected = manifest["model"]["quantization"]["selected"]
    candidates = {row["name"]: row for row in selected["candidates"]}
    assert selected["recipe"] in candidates and len(candidates) >= 20
    winner = candidates[selected["recipe"]]
    fastest = min((r for r in candidates.values() if r["error"] is None), key=lambda r: r["p50_ms"])
    # A 100-point budget admits everything: the fastest wins, unless it was not quicker in every
    # interleaved round, which is a tie the rule gives to fp32 (measure/speed.quickest_beyond_noise).
    assert winner is fastest or (winner["kind"] == "fp32" and f"tied with {fastest['name']}" in selected["why"])
    assert manifest["model"]["variant"] == {"fp32": "student_fp32"}.get(winner["kind"], "student_int8")
    shipped = next(m for m in manifest["metrics"] if m["variant"] == manifest["model"]["variant"])
    assert shipped["size_bytes"] == (tmp_path / "dist" / "model.onnx").stat().st_size
    assert "## Quantization search" in (tmp_path / "dist" / "README.md").read_text()


def test_gpu_profile_falls_back_to_cpu_only_when_allowed_and_says_so(tiny_cache, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA present: no fallback to observe")
    config = tiny_config("benchmark.allow_cpu_fallback=true", profile="cuda")
    build_bundle(config, tmp_path / "dist", tiny_cache)
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    for metric in manifest["metrics"]:
        assert metric["provider_requested"] == "CUDAExecutionProvider"
        assert metric["provider"] == "CPUExecutionProvider" and metric["fell_back_to_cpu"] is True


@pytest.mark.gpu
def test_cuda_profile_runs_on_the_gpu(tiny_cache, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDAExecutionProvider in this onnxruntime (needs onnxruntime-gpu and a GPU)")
    build_bundle(tiny_config(profile="cuda"), tmp_path / "dist", tiny_cache)
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert all(m["provider"] == "CUDAExecutionProvider" and not m["fell_back_to_cpu"] for m in manifest["metrics"])


@pytest.mark.slow  # 3 s: a build with a transfer set
def test_calibration_draws_on_the_unlabeled_transfer_set_too(tiny_cache):
    from edge_distill.pipeline.build import run_pipeline

    run = run_pipeline(tiny_config("data.labeled_samples=20"), tiny_cache, "quantize")
    assert json.loads(run.artifacts["quantize.json"].read_text())["calibration_samples"] == 32  # > 20 labeled


def test_a_no_op_rebuild_never_imports_torch(tiny_cache):
    """Planning, hashing and cache lookups stay light: a fully cached build imports neither torch
    nor onnx (seconds on a small machine), only what the stage protocol promises."""
    import subprocess
    import sys

    script = ("import sys\nfrom pathlib import Path\nfrom edge_distill.pipeline.build import run_pipeline\n"
              "from tests.conftest import tiny_config\n"
              f"run = run_pipeline(tiny_config(), Path({str(tiny_cache)!r}))\n"
              "print(all(s.cached for s in run.steps), sorted(m for m in ('torch', 'onnx', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[0] == "True []", done.stdout + done.stderr


def test_on_a_host_of_the_devices_architecture_the_faster_of_int8_and_fp32_ships(tiny_cache):
    """x86-avx512 on this x86-64 host: the profile's int8 model and fp32 are timed side by side, and
    the faster one within the accuracy budget ships; quantize.json holds the figures it chose by."""
    import platform

    from edge_distill.pipeline.build import run_pipeline

    if platform.machine() != "x86_64":
        pytest.skip("needs an x86-64 host for the x86-avx512 profile")
    run = run_pipeline(tiny_config("quantize.search_min_seconds=0.1", profile="x86-avx512"), tiny_cache, "quantize")
    selected = json.loads(run.artifacts["quantize.json"].read_text())["selected"]
    from edge_distill.measure.speed import quickest_beyond_noise

    candidates, accuracy = selected["measured"]["candidates"], selected["measured"]["accuracy"]
    assert {(row["variant"], row["threads"]) for row in candidates} == \
        {(variant, threads) for variant in ("fp32", "int8") for threads in (1, 2)}
    within = 100 * (accuracy["student_fp32"] - accuracy["student_int8"]) <= 1.0
    # optimize's rule: the quickest beyond noise within the budget, a tie to float and fewer threads
    shipped, _ = quickest_beyond_noise([row for row in candidates if within or row["variant"] == "fp32"])
    assert (selected["variant"], selected["intra_op_threads"]) == (f"student_{shipped['variant']}", shipped["threads"])
    assert "this host" in selected["why"] and "val accuracy" in selected["why"]
    # rpi4 on this host: the profile's recipe ships unmeasured, and the report says why.
    run = run_pipeline(tiny_config(), tiny_cache, "quantize")
    selected = json.loads(run.artifacts["quantize.json"].read_text())["selected"]
    assert selected["variant"] == "student_int8" and "not the device's architecture (aarch64)" in selected["why"]


def test_a_build_with_a_relative_cache_folder_quantizes_from_it(tmp_path, monkeypatch):
    """The README's quick start names its cache relatively; ONNX Runtime's tools run in a scratch
    folder of their own, and must still find every input."""
    monkeypatch.chdir(tmp_path)
    run = run_pipeline(tiny_config(), Path(".edge-distill/cache"), target="quantize")
    assert run.artifacts["student_int8.onnx"].is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".edge-distill"]
