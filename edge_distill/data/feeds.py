"""Samples for a model with any inputs: an .npz holding one array per input name, each with one
sample per row along a new first axis (N, *shape), or, when the input has a batch axis, stacked
along it (N * batch, *shape[1:]). Integer inputs are fed as they are; floats are cast to the model's
float type. Each sample becomes one feed: {input name: array of the fixed shape}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_distill.errors import DataError
from edge_distill.export.model_io import TensorSpec


def load_feeds(path: Path, inputs: list[TensorSpec], shapes: dict[str, tuple[int, ...]]) -> list[dict[str, np.ndarray]]:
    """The file's samples as feeds, checked against every input's name, dtype and shape."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except FileNotFoundError:
        raise DataError(f"--calibration {path}: file not found", "give an .npz with one array per model input") from None
    except Exception as e:
        raise DataError(f"--calibration {path}: not a readable .npz ({e})", "save it with numpy.savez") from None
    names = [t.name for t in inputs]
    example = ", ".join(f"{t.name}=<{t.dtype} (N, {', '.join(map(str, shapes[t.name]))})>" for t in inputs)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(f"{path}: no array for input(s) {', '.join(missing)} (found {', '.join(arrays) or 'none'})",
                        f"np.savez(path, {example})")
    per_input, counts = {}, set()
    for tensor in inputs:
        samples = _samples(arrays[tensor.name], tensor, shapes[tensor.name], path)
        per_input[tensor.name] = samples
        counts.add(len(samples))
    if len(counts) != 1:
        shown = ", ".join(f"{n}: {len(s)}" for n, s in per_input.items())
        raise DataError(f"{path}: the inputs have different sample counts ({shown})", "give every input N samples")
    count = counts.pop()
    if count < 2:
        raise DataError(f"{path}: {count} sample(s); at least 2 are needed (calibration, and one held out)",
                        "add samples: a few hundred calibrate well")
    # np.array: a scalar input stays a 0-d array (indexing gives a numpy scalar, which ORT refuses).
    return [{name: np.array(samples[i]) for name, samples in per_input.items()} for i in range(count)]


def _samples(array: np.ndarray, tensor: TensorSpec, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """(N, *shape) from one input's array."""
    wanted = np.dtype(tensor.dtype)
    numeric = np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    if not numeric or (np.issubdtype(wanted, np.integer) and not np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{path}: '{tensor.name}' is {array.dtype}, the model's input is {wanted}",
                        f"save '{tensor.name}' as {wanted}")
    if array.shape[1:] == shape:
        samples = array
    elif shape and array.shape[1:] == shape[1:] and len(array) % shape[0] == 0:  # stacked along the batch axis
        samples = array.reshape(-1, *shape)
    else:
        raise DataError(f"{path}: '{tensor.name}' has shape {array.shape}, expected (N, {', '.join(map(str, shape))})"
                        + (f" or (N x {shape[0]}, {', '.join(map(str, shape[1:]))})" if shape else ""),
                        "fix the array, or the shape with --shape NAME:DIMS")
    if np.issubdtype(wanted, np.floating) and not np.isfinite(samples).all():
        raise DataError(f"{path}: '{tensor.name}' holds NaN or inf", "clean those samples")
    return samples.astype(wanted, copy=False)


def split_feeds(feeds: list[dict], held_out_share: float = 0.2) -> tuple[list[dict], list[dict]]:
    """(calibration, held out): the last share (at least one sample) is kept for fidelity and
    golden vectors, never seen by calibration."""
    held = max(1, int(round(len(feeds) * held_out_share)))
    return feeds[:-held], feeds[-held:]
