"""The bundle on aarch64 onnxruntime under qemu user-mode emulation (the project's ARM evidence)."""

import shutil

import numpy as np
import pytest

from edge_distill.targets import emulate
from edge_distill.errors import EmulationError

ready = shutil.which(emulate.QEMU) and (emulate.default_root() / "edge-distill-userland.json").is_file()
needs_emulator = pytest.mark.skipif(not ready, reason="run: apt-get install qemu-user-static && edge-distill emulator setup")


@pytest.mark.arm
@needs_emulator
def test_int8_bundle_agrees_on_aarch64(tiny_bundle):
    report = emulate.verify_emulated(tiny_bundle)
    assert report["passed"] and report["top1_agree"] == report["samples"] == 16
    assert report["emulated_cpu"] == "Cortex-A72"  # the rpi4 profile's core
    assert report["max_abs_diff"]["logits"] <= report["tolerance"]["logits"]


@pytest.mark.arm
@needs_emulator
def test_guest_really_is_aarch64(tiny_artifacts):
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    outputs, guest = emulate.run_emulated(tiny_artifacts["student_fp32.onnx"], {"input:input": x[None]}, "Cortex-A76")
    logits = outputs["output:logits"][0]
    assert logits.shape == (3, 10) and guest["onnxruntime"]
    # qemu runs the core named, not its "max" model: onnxruntime sees the Cortex-A76's features only.
    assert guest["dotprod"] and not guest["i8mm"] and not guest["sme"]
    _, guest = emulate.run_emulated(tiny_artifacts["student_fp32.onnx"], {"input:input": x[None]}, "Cortex-A72")
    assert not guest["dotprod"] and not guest["i8mm"]
    from edge_distill.export.onnx_io import run_onnx

    np.testing.assert_allclose(logits, run_onnx(tiny_artifacts["student_fp32.onnx"], x)["logits"], atol=1e-4)


def test_missing_pieces_are_clear_errors(tiny_artifacts, tmp_path, monkeypatch):
    x = np.zeros((1, 1, 8, 8), np.float32)
    monkeypatch.setattr(emulate, "QEMU", "qemu-aarch64-static-not-installed")
    with pytest.raises(EmulationError, match="qemu-aarch64-static-not-installed not found") as e:
        emulate.run_emulated(tiny_artifacts["student_fp32.onnx"], {"input:input": x[None]}, "Cortex-A72", tmp_path)
    assert "apt-get install qemu-user-static" in e.value.hint
    monkeypatch.undo()
    if shutil.which(emulate.QEMU):
        with pytest.raises(EmulationError, match="no aarch64 userland") as e:
            emulate.run_emulated(tiny_artifacts["student_fp32.onnx"], {"input:input": x[None]}, "Cortex-A72", tmp_path)
        assert "edge-distill emulator setup" in e.value.hint
