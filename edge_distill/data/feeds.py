"""Samples for a model with any inputs: an .npz holding one array per input name, each with one
sample per row along a new first axis (N, *shape), or, when the input has a batch axis, stacked
along it (N * batch, *shape[1:]); or a folder of such files, read one file at a time when a sample
is needed, so a large set never sits in memory. Integer inputs are fed as they are; floats are
cast to the model's float type. Each sample becomes one feed: {input name: array of the fixed shape}.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_distill.errors import DataError
from edge_distill.onnx_model import TensorSpec
from edge_distill.files import regular_file

MAX_FILE_ARRAY_BYTES = 4 * 1024**3  # what one .npz may unpack to; a folder of files streams past it
# Beyond this, a float calibration value leaves int8 no usable scale (ORT's own error is "scale issue").
MAX_CALIBRATION_MAGNITUDE = 1e30


def load_feeds(path: Path, inputs: list[TensorSpec], shapes: dict[str, tuple[int, ...]]) -> Sequence[dict]:
    """`--calibration`'s samples (read_feeds): at least two, one to calibrate on and one held out."""
    feeds = read_feeds(path, inputs, shapes)
    if len(feeds) < 2:
        raise DataError(f"{path}: {len(feeds)} sample(s); at least 2 are needed (calibration, and one held out)",
                        "add samples: a few hundred calibrate well")
    return feeds


def read_feeds(path: Path, inputs: list[TensorSpec], shapes: dict[str, tuple[int, ...]],
               what: str = "--calibration") -> Sequence[dict]:
    """The samples of an .npz, or of every .npz in a folder, as feeds; each file is checked once
    against every input's name, dtype and shape. `what` names the file in errors (the flag)."""
    if path.is_dir():
        files = [regular_file(file, what, DataError) for file in sorted(path.glob("*.npz"))]
        if not files:
            raise DataError(f"{_named(what, path)}: no .npz files in the folder", "put .npz files of samples there")
    else:
        files = [path]
    # Absolute: samples are read while ONNX Runtime's calibration runs in a scratch folder.
    return FolderFeeds([file.absolute() for file in files], inputs, shapes, what=what)  # a sample is made when asked for


def _named(what: str, path: Path) -> str:
    return f"{what} {path}" if what else str(path)


class FolderFeeds(Sequence):
    """The samples of several .npz files, in file order; a sample is read from its file when asked
    for (slices are views), and the last file read is kept, so passes in order read each file once
    and memory holds one file's arrays at a time."""

    def __init__(self, files: list[Path], inputs: list[TensorSpec], shapes: dict[str, tuple[int, ...]],
                 index: list[tuple[int, int]] | None = None, what: str = "--calibration"):
        self.files, self.inputs, self.shapes, self.what = files, inputs, shapes, what
        if index is None:  # one checking pass: each file's sample count
            index = [(f, row) for f, file in enumerate(files) for row in range(_count(_read(file, inputs, shapes, what)))]
        self.index = index
        self._open: tuple[int, dict[str, np.ndarray]] | None = None  # (file number, its samples)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return FolderFeeds(self.files, self.inputs, self.shapes, self.index[key], self.what)
        f, row = self.index[key]
        if self._open is None or self._open[0] != f:
            self._open = f, _read(self.files[f], self.inputs, self.shapes, self.what)
        return _feeds(self._open[1], self.inputs, [row])[0]


def _read(path: Path, inputs: list[TensorSpec], shapes: dict[str, tuple[int, ...]], what: str
          ) -> dict[str, np.ndarray]:
    """One file's samples per input, (N, *shape) each, checked; its declared size before any is read."""
    regular_file(path, what, DataError)
    declared = npz_declared_bytes(path)
    if declared > MAX_FILE_ARRAY_BYTES:
        raise DataError(f"{_named(what, path)}: its arrays unpack to {declared / 1024**3:.1f} GiB, more than "
                        f"{MAX_FILE_ARRAY_BYTES / 1024**3:.0f} GiB in one file",
                        "split the samples over several .npz files in a folder (read one at a time)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except Exception as e:
        raise DataError(f"{_named(what, path)}: not a readable .npz ({e})", "save it with numpy.savez") from None
    example = ", ".join(f"{t.name}=<{t.dtype} (N, {', '.join(map(str, shapes[t.name]))})>" for t in inputs)
    missing = [t.name for t in inputs if t.name not in arrays]
    if missing:
        raise DataError(f"{path}: no array for input(s) {', '.join(missing)} (found {', '.join(arrays) or 'none'})",
                        f"np.savez(path, {example})")
    per_input = {t.name: _samples(arrays[t.name], t, shapes[t.name], path) for t in inputs}
    if len({len(samples) for samples in per_input.values()}) != 1:
        shown = ", ".join(f"{n}: {len(s)}" for n, s in per_input.items())
        raise DataError(f"{path}: the inputs have different sample counts ({shown})", "give every input N samples")
    return per_input


def _count(per_input: dict[str, np.ndarray]) -> int:
    return len(next(iter(per_input.values())))


def _feeds(per_input: dict[str, np.ndarray], inputs: list[TensorSpec], rows=None) -> list[dict[str, np.ndarray]]:
    # np.array: a scalar input stays a 0-d array (indexing gives a numpy scalar, which ORT refuses).
    return [{t.name: np.array(per_input[t.name][i]) for t in inputs}
            for i in (range(_count(per_input)) if rows is None else rows)]


def _samples(array: np.ndarray, tensor: TensorSpec, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """(N, *shape) from one input's array."""
    wanted = np.dtype(tensor.dtype)
    real = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_
    # Only the same kind of number: an integer array for a float input is most often pixels or counts
    # not yet preprocessed as the model was trained (README, "Optimize a model you already have").
    if not real or np.issubdtype(wanted, np.integer) != np.issubdtype(array.dtype, np.integer) \
            or (wanted == np.bool_) != (array.dtype == np.bool_):
        raise DataError(f"{path}: '{tensor.name}' is {array.dtype}, the model's input is {wanted}",
                        f"save '{tensor.name}' as {wanted}")  # complex values would lose their imaginary part
    if np.issubdtype(wanted, np.integer) and array.size:
        low, high, limits = array.min(), array.max(), np.iinfo(wanted)
        if int(low) < limits.min or int(high) > limits.max:  # uint64 16000 is fine; 2**63 would wrap negative
            raise DataError(f"{path}: '{tensor.name}' holds {int(low)}..{int(high)}, outside the model's "
                            f"{wanted} range", f"save '{tensor.name}' as {wanted} values")
    if array.shape[1:] == shape:
        samples = array
    elif shape and array.shape[1:] == shape[1:] and len(array) % shape[0] == 0:  # stacked along the batch axis
        samples = array.reshape(-1, *shape)
    else:
        raise DataError(f"{path}: '{tensor.name}' has shape {array.shape}, expected (N, {', '.join(map(str, shape))})"
                        + (f" or (N x {shape[0]}, {', '.join(map(str, shape[1:]))})" if shape else ""),
                        "fix the array, or the shape with --shape NAME:DIMS")
    if np.issubdtype(wanted, np.floating) and samples.size:
        if not np.isfinite(samples).all():
            raise DataError(f"{path}: '{tensor.name}' holds NaN or inf", "clean those samples")
        largest = float(np.abs(samples).max())
        if largest > MAX_CALIBRATION_MAGNITUDE:
            raise DataError(f"{path}: '{tensor.name}' holds values up to {largest:.3g}: beyond "
                            f"{MAX_CALIBRATION_MAGNITUDE:g} no int8 scale can cover the range",
                            "give samples on the scale the model takes (normalized as in training)")
    return samples.astype(wanted, copy=False)


def npz_declared_bytes(path: Path) -> int:
    """What the arrays of an .npz unpack to, from each member's .npy header (nothing decompressed):
    a 100 KB file of zeros may declare gigabytes."""
    import zipfile

    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                with archive.open(member) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if major == 1 else
                                   np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                    total += int(np.prod(shape, dtype=object)) * dtype.itemsize
    except Exception:
        return 0  # not an .npz numpy reads: np.load below says so
    return total


def load_labels(path: Path, key: str, samples: int) -> np.ndarray:
    """The integer array `key` of the .npz (or of each .npz of a folder, joined in file order): the
    class of each sample, or of each row of its class scores, as (samples, rows per sample)."""
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    parts = []
    for file in map(lambda f: regular_file(f, "--calibration", DataError), files):
        with np.load(file, allow_pickle=False) as f:
            if key not in f.files:
                raise DataError(f"--labels {key}: {file} has no array '{key}' (found {', '.join(f.files)})",
                                f"save the class indices with the samples: np.savez(path, ..., {key}=labels)")
            parts.append(f[key])
    labels = np.concatenate([part.reshape(-1) for part in parts])
    if not np.issubdtype(labels.dtype, np.integer) or not len(labels) or len(labels) % samples:
        raise DataError(f"--labels {key}: {len(labels)} {labels.dtype} value(s) for {samples} samples; expected "
                        "integer class indices, one per sample (or the same number per sample)",
                        f"save '{key}' as an integer array of length {samples}")
    return labels.reshape(samples, -1)


def split_feeds(feeds: Sequence[dict], held_out_share: float = 0.2, most_calibration: int | None = None,
                most_held_out: int | None = None) -> tuple[Sequence[dict], Sequence[dict]]:
    """(calibration, held out): the last share (at least one sample) is kept for fidelity and
    golden vectors, never seen by calibration; each thinned to at most `most_*` samples spread
    evenly over it (a million samples calibrate no better than a few hundred, and would not fit)."""
    held = max(1, int(round(len(feeds) * held_out_share)))
    return _at_most(feeds[:-held], most_calibration), _at_most(feeds[-held:], most_held_out)


def _at_most(feeds: Sequence[dict], count: int | None) -> Sequence[dict]:
    return feeds if count is None or len(feeds) <= count else feeds[:: -(-len(feeds) // count)]
