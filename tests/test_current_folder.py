"""Every command leaves the current folder as it was (each runs in an empty folder, which is listed
afterwards), and an unchanged rerun of build, optimize or text reads every stage from the cache
without importing torch (run as a user runs it: a new process)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import handmade
from tests.test_cli import invoke, tiny_args

# The command in a new process; on stderr, whether torch was imported.
NEW_PROCESS = """
import sys
from edge_distill.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("torch imported" if "torch" in sys.modules else "torch not imported", file=sys.stderr)
sys.exit(code)
"""


def run_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a new process whose current folder is `folder`, which must be empty before and after."""
    folder.mkdir(exist_ok=True)
    assert not list(folder.iterdir())
    done = subprocess.run([sys.executable, "-c", NEW_PROCESS, *args], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list(folder.iterdir()), f"{args[0]} wrote into the current folder"
    return done


def test_a_no_op_build_reads_every_stage_from_the_cache_without_torch(tiny_cache, tmp_path):
    done = run_in(tmp_path / "here", "build", "--profile", "rpi4", *tiny_args(), "--out", str(tmp_path / "dist"),
                  "--cache-dir", str(tiny_cache))
    assert "plan: all 9 stage(s) cached" in done.stderr and "torch not imported" in done.stderr


def test_a_no_op_optimize_reads_every_stage_from_the_cache_without_torch(tmp_path):
    model = handmade.three_input_model(tmp_path / "vad.onnx")
    samples = handmade.three_input_samples(tmp_path / "samples.npz")
    args = ["optimize", str(model), "-p", "x86-avx512", "--calibration", str(samples), "--out", str(tmp_path / "b"),
            "--cache-dir", str(tmp_path / "cache"), "--set", "quantize.search_min_seconds=0.05", "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    done = run_in(tmp_path / "here", *args)
    assert "plan: all 4 stage(s) cached" in done.stderr and "torch not imported" in done.stderr
    again = json.loads(done.stdout)
    assert again["model"] == json.loads(result.stdout)["model"] and all(step["cached"] for step in again["steps"])


@pytest.mark.slow
def test_onnx_runtimes_own_warnings_stay_off_the_terminal(tmp_path):
    """silero-vad's layout (its compute in If branches), where ONNX Runtime logs warnings of its own
    on fd 2, so only a new process shows them: none without --debug."""
    model = handmade.branch_model(tmp_path / "branches.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "samples.npz", audio=rng.standard_normal((20, 1, 16)).astype(np.float32),
             sr=np.full(20, 16000, np.int64))
    args = ["optimize", str(model), "-p", "x86-avx512", "--calibration", str(tmp_path / "samples.npz"), "--min-snr",
            "0", "--set", "quantize.search_min_seconds=0.05"]
    done = run_in(tmp_path / "here", *args, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache"))
    assert "onnxruntime" not in done.stderr, done.stderr
    debug = run_in(tmp_path / "debug", "--debug", *args, "--out", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "c"))
    assert "[W:onnxruntime" in debug.stderr  # the same run with --debug shows them


def test_reading_a_bundle_writes_nothing_into_the_current_folder(tiny_bundle, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    monkeypatch.chdir(here)
    for args in (["verify", str(tiny_bundle)], ["predict", str(tiny_bundle), str(tmp_path / "x.npy")],
                 ["bench", str(tiny_bundle), "--min-seconds", "0", "--runs", "2", "--warmup", "0"],
                 ["estimate", str(tiny_bundle / "model.onnx"), "-p", "rpi4"],
                 ["cache", "info", "--cache-dir", str(tmp_path / "no-cache")], ["profiles"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        assert not list(here.iterdir()), f"{args[0]} wrote into the current folder"


@pytest.mark.slow
def test_training_commands_write_nothing_into_the_current_folder(tmp_path):
    """build and sequence from scratch (every stage runs, ONNX Runtime's quantizer included)."""
    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    run_in(tmp_path / "build", "build", "--profile", "rpi4", *tiny_args(), "--out", str(tmp_path / "dist"),
           "--cache-dir", str(tmp_path / "cache"))
    sequence = ["sequence", "--text", str(tmp_path / "text.txt"), "--steps", "2", "--teacher-hidden", "8",
                "--student-hidden", "4", "--out", str(tmp_path / "seq"), "--cache-dir", str(tmp_path / "cache"), "--json"]
    report = json.loads(run_in(tmp_path / "sequence", *sequence).stdout)
    assert (tmp_path / "dist" / "manifest.json").is_file() and (tmp_path / "seq" / "student.onnx").is_file()
    # --json carries the stage's record, as every pipeline's does; 1,800 characters: a split shorter
    # than one 256-character window is measured as one window, not as NaN.
    assert [step["stage"] for step in report["steps"]] == ["sequence"] and not report["steps"][0]["cached"]
    assert all(math.isfinite(figures["held_out_bits_per_char"]) for figures in report["models"].values())
    again = run_in(tmp_path / "sequence-again", *sequence)  # a no-op rerun reads the cache, without torch
    assert json.loads(again.stdout)["steps"][0]["cached"] and "torch not imported" in again.stderr
