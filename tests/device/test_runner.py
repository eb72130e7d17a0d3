import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_distill.measure.harness import check_providers
from edge_distill.device.runner import describe_host, measure_latency, predict_classes
from edge_distill.errors import ProviderUnavailableError
from tests import handmade


def test_latency_statistics_are_consistent(tiny_artifacts):
    sample = np.zeros((2, 1, 8, 8), dtype=np.float32)
    stats = measure_latency(tiny_artifacts["student_int8.onnx"], sample, ["CPUExecutionProvider"], 1, 2, 20, 2)
    assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert stats["throughput_per_s"] == pytest.approx(2e3 / stats["mean"])


def test_predict_classes_in_batches_matches_one_direct_run(tmp_path):
    model = handmade.linear_classifier(tmp_path / "linear.onnx")
    x = np.random.default_rng(0).standard_normal((7, 1, 8, 8)).astype(np.float32)
    classes = predict_classes(model, x, ["CPUExecutionProvider"], 1, batch_size=3)  # batches of 3, 3 and 1
    direct = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    np.testing.assert_array_equal(classes, direct)
    assert len(set(direct)) > 1  # the samples do not all fall in one class: a shifted batch would show


def test_runner_imports_nothing_heavier_than_numpy_and_onnxruntime():
    code = ("import sys, edge_distill.device.runner; "
            "print(sorted(m for m in ('torch', 'onnx', 'click', 'sklearn', 'edge_distill.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA present")
def test_missing_cuda_provider_is_a_clear_error():
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider not available"):
        check_providers(["CUDAExecutionProvider"])


def test_host_description_names_the_machine():
    host = describe_host()
    assert host["arch"] and host["cpu"] and host["cores"] >= 1 and host["onnxruntime"] == ort.__version__


def test_min_seconds_extends_the_timed_runs(tiny_artifacts):
    sample = np.zeros((1, 1, 8, 8), dtype=np.float32)
    stats = measure_latency(tiny_artifacts["student_int8.onnx"], sample, ["CPUExecutionProvider"], 1, 0, 3, 1, 0.2)
    assert stats["runs"] > 3 and stats["runs"] * stats["mean"] >= 150  # ms spent in timed runs


def test_compare_latency_times_every_model_and_reports_failures(tiny_artifacts, tmp_path):
    from edge_distill.device.runner import compare_latency

    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    models = {"fp32": tiny_artifacts["student_fp32.onnx"], "int8": tiny_artifacts["student_int8.onnx"],
              "broken": tmp_path / "broken.onnx"}
    results = compare_latency(models, np.zeros((1, 1, 8, 8), np.float32), ["CPUExecutionProvider"], 1, 0.05, rounds=3)
    assert "error" in results["broken"]
    for name in ("fp32", "int8"):
        assert results[name]["runs"] >= 15 and 0 < results[name]["p50"] <= results[name]["p90"]


def test_bench_takes_the_runners_settings_from_the_command_line(tmp_path):
    import json

    from tests.test_cli import invoke

    bundle = handmade.bundle(tmp_path / "dist")
    result = invoke("bench", str(bundle), "--runs", "7", "--min-seconds", "0", "--warmup", "0", "--cold-starts", "1",
                    "--threads", "1", "--json")
    report = json.loads(result.stdout)
    assert report["settings"] | {"threads": 1, "timed_runs": 7, "min_seconds": 0.0, "warmup_runs": 0,
                                 "cold_start_runs": 1} == report["settings"]  # what was used is recorded
    assert report["latency_ms"]["runs"] == 7 and report["threads"] == 1
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert report["golden_top1_agreement"] == 1.0


def run_runner(*args: str) -> subprocess.CompletedProcess:
    from edge_distill.targets.remote import RUNNER

    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True)


def test_runner_times_zeros_only_once_every_symbolic_size_is_given(tmp_path):
    """A model with symbolic height and width: no silent 1x1 guess; --shape fixes it, and the
    shape used is recorded."""
    import json

    model = handmade.linear_classifier(tmp_path / "hw.onnx", input_dims=("batch", 1, "height", "width"))
    refused = run_runner(str(model), "--json")
    assert refused.returncode == 2 and not refused.stdout
    assert refused.stderr.strip() == (f"runner: {model}: input 'x' has the symbolic size 'height' (shape ['batch', 1, "
                                      "'height', 'width']): give its shape, e.g. --shape x:1x1xNxN")
    done = run_runner(str(model), "--shape", "x:2x1x8x8", "-r", "5", "-t", "0", "--cold-starts", "1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["inputs"] == {"x": {"shape": [2, 1, 8, 8], "dtype": "float32", "source": "zeros"}}
    assert result["batch"] == 2 and result["latency_ms"]["runs"] >= 5
    assert run_runner(str(model), "--shape", "x:2xax8").returncode == 2  # argparse's usage error, one line


def test_runner_compares_models_at_each_thread_count_on_every_input(tmp_path):
    """Several models and --threads 1,2: one row per (model, threads), zeros of every input (an
    int64 scalar among them)."""
    import json

    model = handmade.three_input_model(tmp_path / "vad.onnx")
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(model.read_bytes())
    done = run_runner(str(model), str(copy), "--threads", "1,2", "-t", "0.05", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["inputs"]["sr"] == {"shape": [], "dtype": "int64", "source": "zeros"}
    assert [(Path(r["model"]).name, r["threads"]) for r in result["candidates"]] == \
        [("vad.onnx", 1), ("vad.onnx", 2), ("copy.onnx", 1), ("copy.onnx", 2)]
    assert all(row["p50"] > 0 and row["runs"] >= 5 for row in result["candidates"])


def test_thread_candidates_are_powers_of_two_up_to_the_most():
    from edge_distill.device.runner import thread_candidates

    assert thread_candidates(1) == [1] and thread_candidates(4) == [1, 2, 4] and thread_candidates(6) == [1, 2, 4, 6]


def test_peak_memory_of_a_process_started_from_a_big_one_is_its_own():
    """ru_maxrss survives execve on Linux: a decoder timed from a build holding a teacher reported
    the build's 2.4 GB. The runner's peak is the process's own."""
    import subprocess
    import sys

    big = bytearray(400 * 2**20)
    big[:: 4096] = b"\1" * len(big[:: 4096])  # resident, not just reserved
    done = subprocess.run([sys.executable, "-c", "from edge_distill.device.runner import peak_rss_mb; "
                           "print(peak_rss_mb())"], capture_output=True, text=True, check=True)
    assert float(done.stdout) < 300
    del big
