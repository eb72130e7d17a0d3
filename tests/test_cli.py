"""The CLI: every user mistake gives one `Error:` line, a hint, its exit code and no traceback."""

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edge_distill.cli import main
from tests.conftest import TINY


def invoke(*args, cwd=None):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tiny_args(*extra):
    return [arg for item in TINY for arg in ("--set", item)] + list(extra)


def assert_user_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    # Progress lines may come first; the error is one line, then at most a hint.
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert len(errors) == 1 and len(lines) - errors[0] <= 2 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_profiles_lists_and_shows():
    listed = invoke("profiles", "--json")
    assert listed.exit_code == 0 and "rpi4" in json.loads(listed.stdout)
    shown = invoke("profiles", "show", "rpi5", "--json")
    assert json.loads(shown.stdout)["device"]["cpu"] == "Cortex-A76"
    assert "[quantize]" in invoke("profiles", "show", "rpi4").stdout


def test_unknown_profile_suggests_the_closest():
    assert_user_error(invoke("profiles", "show", "rpi44"), 2, "unknown profile 'rpi44'", "did you mean 'rpi4'")


def test_unknown_config_key_names_the_file(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text("[distill]\nepoch = 3\n")
    result = invoke("build", "--profile", "rpi4", "--config", str(config), "--out", str(tmp_path / "out"))
    assert_user_error(result, 2, f"{config}: unknown key 'distill.epoch'", "did you mean 'epochs'")
    assert not (tmp_path / "out").exists()


def test_missing_data_file(tmp_path):
    result = invoke("data", "--profile", "rpi4", "--data", str(tmp_path / "none.npz"), "--cache-dir", str(tmp_path))
    assert_user_error(result, 3, "none.npz does not exist")


def test_nan_and_empty_data(tmp_path):
    np.savez(tmp_path / "nan.npz", x=np.full((30, 8, 8), np.nan, dtype=np.float32), y=np.arange(30) % 3)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), dtype=np.float32), y=np.zeros(0, dtype=np.int64))
    result = invoke("data", "--profile", "rpi4", "--data", str(tmp_path / "nan.npz"), "--cache-dir", str(tmp_path / "c"))
    assert_user_error(result, 3, "nan.npz: 30 sample(s) contain NaN or inf")
    result = invoke("data", "--profile", "rpi4", "--data", str(tmp_path / "empty.npz"), "--cache-dir", str(tmp_path / "c"))
    assert_user_error(result, 3, "empty.npz: the dataset is empty")


def test_missing_and_corrupt_checkpoint(tmp_path):
    args = ["teacher", "--profile", "rpi4", "--cache-dir", str(tmp_path / "c"), *tiny_args()]
    assert_user_error(invoke(*args, "--teacher-checkpoint", str(tmp_path / "gone.pt")), 3, "teacher.checkpoint", "gone.pt: file not found")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert_user_error(invoke(*args, "--teacher-checkpoint", str(tmp_path / "junk.pt")), 3, "junk.pt: not a loadable PyTorch checkpoint")


def test_teacher_with_wrong_output_size(tmp_path, monkeypatch):
    (tmp_path / "five.py").write_text(
        "import torch\ndef teacher():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("teacher", "--profile", "rpi4", "--teacher", "five:teacher", "--cache-dir", str(tmp_path / "c"), *tiny_args())
    sys.modules.pop("five", None)
    assert_user_error(result, 4, "teacher outputs (1, 5) but the data has 10 classes")


def test_onnx_that_is_not_a_model(tmp_path):
    (tmp_path / "fake.onnx").write_text("hello")
    result = invoke("quantize", "--profile", "rpi4", "--input", f"student_fp32.onnx={tmp_path / 'fake.onnx'}",
                    "--cache-dir", str(tmp_path / "c"), *tiny_args())
    assert_user_error(result, 3, "fake.onnx: not a valid ONNX model")


def test_unknown_input_artifact(tmp_path):
    result = invoke("quantize", "--profile", "rpi4", "--input", "student.onnx=x.onnx", "--cache-dir", str(tmp_path))
    assert_user_error(result, 2, "--input student.onnx", "did you mean")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA present")
def test_cuda_profile_without_cuda_fails_before_any_work(tmp_path):
    result = invoke("build", "--profile", "cuda", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "out"))
    assert_user_error(result, 6, "CUDAExecutionProvider not available", "onnxruntime-gpu")
    assert not (tmp_path / "c").exists() and not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_DISTILL_DEBUG", "")  # main sets it for --debug; monkeypatch restores it after
    with pytest.raises(Exception, match="unknown profile"):
        invoke("--debug", "profiles", "show", "nope")


def test_debug_shows_the_library_exception_behind_a_one_line_error(tmp_path, monkeypatch):
    from edge_distill.errors import InputFileError

    monkeypatch.setenv("EDGE_DISTILL_DEBUG", "")  # main sets it for --debug; monkeypatch restores it after
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 1, 4), np.float32))
    args = ["optimize", str(tmp_path / "model.onnx"), "-p", "x86-avx512", "--calibration", str(tmp_path / "x.npz"),
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert_user_error(invoke(*args), 3, "model.onnx: not a valid ONNX model")
    with pytest.raises(InputFileError) as raised:
        invoke("--debug", *args)
    # Raised `from None` for its one line; with --debug the traceback shows onnx's own exception under it.
    assert raised.value.__cause__ is None and not raised.value.__suppress_context__
    assert raised.value.__context__ is not None and not isinstance(raised.value.__context__, InputFileError)


@pytest.mark.slow
def test_build_prints_the_table_and_json(tmp_path, tiny_cache):
    out = tmp_path / "bundle"
    result = invoke("build", "--profile", "rpi4", "--out", str(out), "--cache-dir", str(tiny_cache), "--json", *tiny_args())
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [m["variant"] for m in payload["metrics"]] == ["teacher_fp32", "student_fp32", "student_int8"]
    assert all(step["cached"] for step in payload["steps"])
    assert "[9/9] package: cached" in result.stderr
    table = invoke("build", "--profile", "rpi4", "--out", str(out), "--cache-dir", str(tiny_cache), *tiny_args())
    assert "student_int8" in table.stdout and "p99 ms" in table.stdout


def test_bad_accuracy_budgets(tmp_path):
    args = ["build", "--profile", "rpi4", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "out")]
    assert_user_error(invoke(*args, "--max-accuracy-drop", "-1"), 2, "'quantize.max_accuracy_drop' = -1.0 is below the minimum 0")
    result = invoke(*args, "--max-accuracy-drop", "half")
    assert result.exit_code == 2 and "'half' is not a valid float" in result.stderr
    assert_user_error(invoke(*args, "--set", "quantize.calibrate_method=KL"), 2, "'quantize.calibrate_method' = 'KL' is not valid")


def test_node_to_exclude_that_is_not_in_the_graph(tiny_cache):
    result = invoke("quantize", "--profile", "rpi4", "--cache-dir", str(tiny_cache), *tiny_args(),
                    "--set", "quantize.exclude_nodes=['node_Conv_999']")
    assert_user_error(result, 2, "quantize.exclude_nodes: node_Conv_999 not in the graph", "node names after ORT")


def test_latency_budget_no_size_can_meet(tmp_path):
    result = invoke("build", "--profile", "rpi4", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "out"),
                    "--max-latency-ms", "0.0001", *tiny_args("--set", "budget.sweep_widths=[4, 8]",
                                                             "--set", "budget.sweep_depths=[1]"))
    assert_user_error(result, 7, "every student size is estimated over the latency budget")
    assert not (tmp_path / "out").exists()


def test_hint_layer_that_does_not_exist_lists_the_valid_ones(tiny_cache):
    result = invoke("distill", "--profile", "rpi4", "--cache-dir", str(tiny_cache),
                    *tiny_args("--set", 'distill.hint_layers={"features.2" = "features.9"}'))
    assert_user_error(result, 2, "distill.hint_layers: the teacher has no layer 'features.9'; valid layers: features,")


def _onnx_teacher(path, classes, shape=(1, 8, 8)):
    import torch

    from edge_distill.export.onnx_export import export_onnx
    from edge_distill.models.families import ConvNet

    torch.manual_seed(0)
    export_onnx(ConvNet(shape, classes, 4, 1), np.zeros((2, *shape), np.float32), path, 18)
    return path


def test_teachers_with_mismatched_class_counts(tmp_path, tiny_cache):
    other = _onnx_teacher(tmp_path / "five.onnx", 5)
    result = invoke("teacher", "--profile", "rpi4", "--cache-dir", str(tiny_cache),
                    *tiny_args("--set", f"teacher.ensemble=['{other}']"))
    assert_user_error(result, 4, f"teacher.ensemble[0] ({other}) outputs (3, 5) but the data has 10 classes")


def test_onnx_teacher_whose_input_does_not_match_the_data(tmp_path, tiny_cache):
    teacher = _onnx_teacher(tmp_path / "rgb.onnx", 10, shape=(3, 8, 8))
    result = invoke("teacher", "--profile", "rpi4", "--cache-dir", str(tiny_cache), "--teacher-file", str(teacher),
                    *tiny_args())
    assert_user_error(result, 4, "takes input 'input' of shape (?, 3, 8, 8), the data gives (batch, 1, 8, 8)")


def test_teacher_file_and_checkpoint_together(tmp_path, tiny_cache):
    teacher = _onnx_teacher(tmp_path / "t.onnx", 10)
    (tmp_path / "w.pt").write_bytes(b"weights")
    result = invoke("teacher", "--profile", "rpi4", "--cache-dir", str(tiny_cache), "--teacher-file", str(teacher),
                    "--teacher-checkpoint", str(tmp_path / "w.pt"), *tiny_args())
    assert_user_error(result, 2, "teacher.file and teacher.checkpoint both name a teacher")


def test_the_cli_runs_as_a_module_too():
    """`python -m edge_distill.cli` is how the two-node test starts a node; a module without its
    __main__ line runs nothing and exits 0."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "edge_distill.cli", "profiles", "--json"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "rpi4" in done.stdout, done.stderr
