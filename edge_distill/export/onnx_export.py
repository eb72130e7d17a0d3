"""torch.onnx.export with the torch.export-based (dynamo) exporter.

Why this exporter: it is the default and the maintained path in torch >= 2.9; the TorchScript
path (dynamo=False) is deprecated. It needs the onnxscript package, which we depend on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_distill.errors import ModelError, describe
from edge_distill.export.onnx_io import compare_outputs, load_onnx, quiet_libraries, run_onnx
from edge_distill.models.loading import eval_mode

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, sample: np.ndarray, path: Path, opset: int, input_name: str = INPUT_NAME,
                dynamic: tuple[str, ...] = ("batch",)) -> None:
    """Export with dynamic leading axes (named by `dynamic`: the batch, for a sequence also its
    length); the exporter's chatter is kept out of the user's terminal.

    A TorchScript module (a teacher saved with torch.jit.save) can only go through the deprecated
    TorchScript exporter; everything else goes through the dynamo one."""
    eval_mode(model)
    example = torch.from_numpy(sample[:2] if len(sample) >= 2 else np.repeat(sample, 2, axis=0))
    names = {"input_names": [input_name], "output_names": [OUTPUT_NAME], "opset_version": opset, "verbose": False}
    axes = dict(enumerate(dynamic))
    try:
        with quiet_libraries():
            if isinstance(model, torch.jit.ScriptModule):
                torch.onnx.export(model, (example,), str(path), dynamo=False, **names,
                                  dynamic_axes={input_name: axes, OUTPUT_NAME: axes})
            else:
                program = torch.onnx.export(model, (example,), dynamo=True, **names,
                                            dynamic_shapes=({i: torch.export.Dim(n) for i, n in axes.items()},))
                program.save(str(path))
    except Exception as e:
        raise ModelError(
            f"torch.onnx.export failed for {type(model).__name__}: {describe(e)}",
            "the model must be traceable by torch.export (no data-dependent Python control flow)",
        ) from e
    exported = load_onnx(path)
    actual = next(op.version for op in exported.opset_import if op.domain in ("", "ai.onnx"))
    if actual != opset:
        raise ModelError(
            f"export.opset = {opset} was asked, but the exporter could only produce opset {actual}",
            f"set export.opset = {actual}, or check that the device's onnxruntime supports it",
        )


@torch.no_grad()
def check_export_parity(model: nn.Module, path: Path, x: np.ndarray, atol: float, rtol: float) -> dict[str, float]:
    """ONNX Runtime vs PyTorch on real samples -> max abs diff per output."""
    eval_mode(model)
    reference = {OUTPUT_NAME: model(torch.from_numpy(x)).numpy().astype(np.float64)}
    return compare_outputs(reference, run_onnx(path, x), atol, rtol, f"export parity of {path.name}")
