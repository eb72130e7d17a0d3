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
from edge_distill.export.onnx_io import compare_outputs, quiet_libraries, run_onnx
from edge_distill.onnx_model import load_onnx
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
    except OSError:  # a full or read-only disk: its own error, not the model's
        raise
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


def prepend_onnx(prepare: nn.Module, sample: np.ndarray, model: Path, out: Path, opset: int) -> None:
    """`out` = `model` fed through `prepare` (exported from PyTorch), as one ONNX graph: a black-box
    ONNX teacher behind its own input conversion, so that it takes the build's inputs."""
    import tempfile

    import onnx
    from onnx import compose, version_converter

    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(prepare, sample, Path(tmp) / "prepare.onnx", opset)
        first = onnx.load(str(Path(tmp) / "prepare.onnx"))
    second = onnx.load(str(model))
    try:
        second_opset = next(o.version for o in second.opset_import if o.domain in ("", "ai.onnx"))
        if second_opset != opset:  # one opset for the merged graph: the teacher's is converted
            second = version_converter.convert_version(second, opset)
        first.ir_version = second.ir_version = max(first.ir_version, second.ir_version)
        merged = compose.merge_models(first, second, io_map=[(OUTPUT_NAME, second.graph.input[0].name)],
                                      prefix1="prepare/")
        prefixed = merged.graph.input[0].name  # the input keeps its name: "input", as every variant's
        merged.graph.input[0].name = INPUT_NAME
        for node in merged.graph.node:
            node.input[:] = [INPUT_NAME if name == prefixed else name for name in node.input]
        onnx.checker.check_model(merged)
    except OSError:  # a full or read-only disk: its own error, not the model's
        raise
    except Exception as e:
        raise ModelError(f"{model.name}: cannot put teacher.input's conversion in front of it ({describe(e)})",
                         "export the teacher with an input that takes this build's preprocessing") from None
    onnx.save(merged, str(out))
