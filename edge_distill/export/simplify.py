"""onnxsim simplification, checked by onnxsim itself and again on real samples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxsim

from edge_distill.errors import SimplifyError, describe
from edge_distill.export.onnx_io import compare_outputs, quiet_libraries, run_onnx
from edge_distill.onnx_model import load_onnx


def simplify_onnx(src: Path, dst: Path, x: np.ndarray | dict[str, np.ndarray], atol: float, rtol: float) -> dict:
    """Simplify `src` into `dst`, checked on `x` (samples of the only input, or one feed of every
    input by name); a failed check is an error, never a silent fallback."""
    model = load_onnx(src)
    feed = x if isinstance(x, dict) else {model.graph.input[0].name: x}
    try:
        with quiet_libraries():
            # onnxsim compares original and simplified on these real inputs.
            simplified, ok = onnxsim.simplify(model, check_n=1, input_data=feed, certify=False)
    except OSError:  # a full or read-only disk: its own error, not the model's
        raise
    except Exception as e:
        raise SimplifyError(
            f"onnxsim failed on {src.name}: {describe(e)}",
            "set simplify.enabled = false to ship the unsimplified model (recorded in the manifest)",
        ) from None
    if not ok:
        raise SimplifyError(
            f"onnxsim's output check failed for {src.name}: the simplified model computes something else",
            "set simplify.enabled = false to ship the unsimplified model (recorded in the manifest)",
        )
    onnx.save(simplified, str(dst))
    diffs = compare_outputs(run_onnx(src, x), run_onnx(dst, x), atol, rtol, f"simplified {src.name}")
    return {
        "nodes_before": len(model.graph.node),
        "nodes_after": len(simplified.graph.node),
        "max_abs_diff": diffs,
    }


def simplified_or_source(model_path: Path, feed: dict[str, np.ndarray], dst: Path, notes: list[str],
                         progress: Callable[[str], None]) -> Path:
    """onnxsim's model, checked on a real sample; the model as given where onnxsim fails on it."""
    progress("simplifying with onnxsim")
    try:
        report = simplify_onnx(model_path, dst, feed, atol=1e-4, rtol=1e-3)
        notes.append(f"simplified: {report['nodes_before']} -> {report['nodes_after']} nodes")
    except SimplifyError as e:
        notes.append(f"not simplified: {e.message}")
        progress(f"kept unsimplified: {e.message}")
        dst.write_bytes(model_path.read_bytes())
    return dst
