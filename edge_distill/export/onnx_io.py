"""Loading, running and comparing ONNX models with ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
import os
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_distill.errors import ExportParityError


@contextlib.contextmanager
def quiet_libraries(scratch_in: Path | None = None) -> Iterator[io.StringIO]:
    """Keep the exporters' and quantizer's chatter (prints, warnings, INFO/WARNING logs) out of the
    user's terminal; the captured text is yielded for error messages. With `scratch_in`, the block
    runs in a private folder made there and removed after: ONNX Runtime's quantization tools write
    into the current folder (sym_shape_infer_temp.onnx and UUID-named .data files when its shape
    inference is incomplete), which is the user's. Every path used inside the block must therefore be
    absolute: a relative one would name a file in the scratch folder."""
    chatter = io.StringIO()
    quiet = not os.environ.get("EDGE_DISTILL_DEBUG")  # --debug: the libraries speak for themselves
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx"), logging.getLogger("onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR if quiet else logger.level)
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=scratch_in)) if scratch_in is not None else None
    try:
        with contextlib.ExitStack() as stack:
            if quiet:
                stack.enter_context(contextlib.redirect_stdout(chatter))
                stack.enter_context(contextlib.redirect_stderr(chatter))
                stack.enter_context(warnings.catch_warnings())
                warnings.simplefilter("ignore")
            if scratch is not None:
                stack.enter_context(contextlib.chdir(scratch))
            yield chatter
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def run_onnx(path: Path, x, batch_size: int = 256) -> dict[str, np.ndarray]:
    """All outputs on the CPU provider: of a single-input model on samples `x`, batched; or of any
    model on one feed `x` ({input name: array})."""
    from edge_distill.device.runner import create_session, run_batched

    session = create_session(path)
    if isinstance(x, dict):
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, x)))
    return run_batched(session, x, batch_size)


def compare_outputs(
    reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], atol: float, rtol: float, what: str
) -> dict[str, float]:
    """Max abs diff per output; raise naming every output outside atol + rtol * |reference|."""
    diffs, failing = {}, []
    for name, ref in reference.items():
        if name not in actual or actual[name].shape != ref.shape:
            got = actual[name].shape if name in actual else "missing"
            raise ExportParityError(f"{what}: output '{name}' has shape {got}, expected {ref.shape}")
        diff = np.abs(actual[name].astype(np.float64) - ref)
        diffs[name] = float(diff.max())
        if (diff > atol + rtol * np.abs(ref)).any():
            failing.append(f"'{name}' max abs diff {diffs[name]:.3g}")
    if failing:
        raise ExportParityError(
            f"{what}: outputs differ beyond atol={atol:g}, rtol={rtol:g}: {'; '.join(failing)}",
            "check the model for train-only behaviour (dropout, batch-norm in train mode) or raise export.parity_atol",
        )
    return diffs
