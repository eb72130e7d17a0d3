"""Samples read on demand, so that memory does not grow with the number of images.

An image folder becomes `ImageFiles`: the file paths, decoded, resized and normalized a batch at a
time. Small sources (the embedded digits, an .npz) stay plain in-memory arrays. Every consumer
reads either kind the same way (`len(x)`, `x.shape`, `x[i:j]`, `x[indices]` give float32 arrays),
and the helpers here split and join them without decoding anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_distill.errors import DataError


@dataclass(frozen=True)
class Normalization:
    """x = (pixel * pixel_scale - mean[c]) / std[c]"""

    pixel_scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, raw: np.ndarray) -> np.ndarray:  # (N, C, ...) raw pixels
        per_channel = (slice(None),) + (None,) * (raw.ndim - 2)
        # float32 statistics, as they were measured: the same arithmetic for arrays and decoded files.
        mean = np.asarray(self.mean, np.float32)[per_channel]
        std = np.asarray(self.std, np.float32)[per_channel]
        return ((raw * self.pixel_scale - mean) / std).astype(np.float32)


class ImageFiles:
    """Image files read as (N, C, H, W) float32: raw pixels (0..255), or normalized when
    `normalization` is set. Indexing decodes only the selected files."""

    dtype = np.dtype(np.float32)

    def __init__(self, files: Sequence[str], color_mode: str, size: tuple[int, ...], sample_shape: tuple[int, ...],
                 normalization: Normalization | None = None, pixel_sums: np.ndarray | None = None):
        self.files = np.asarray(files, dtype=str)
        self.color_mode, self.size, self.sample_shape = color_mode, tuple(size), tuple(sample_shape)
        self.normalization = normalization
        # (N, C, 2) float64 per-file sum and sum of squares of the raw pixels (`measured`), so that
        # the statistics of any split need no second pass over the files.
        self.pixel_sums = pixel_sums

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        files = self.files[key]
        raw = np.stack([self._decode(f) for f in files]) if len(files) else np.zeros((0, *self.sample_shape), np.float32)
        return self.normalization.apply(raw) if self.normalization else raw

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every sample at once: for tests and small folders; the pipeline reads in batches."""
        x = self[:]
        return x if dtype is None else x.astype(dtype)

    def _decode(self, file: str) -> np.ndarray:
        image = decode_image(str(file), self.color_mode, self.size)
        pixels = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)  # -> (C, H, W)
        if pixels.shape != self.sample_shape:
            raise DataError(f"{file}: size {list(pixels.shape[1:])} differs from {list(self.sample_shape[1:])} of "
                            f"the first image", "set data.image_size = [height, width] to resize every image")
        return pixels

    def subset(self, indices) -> "ImageFiles":
        sums = None if self.pixel_sums is None else self.pixel_sums[indices]
        return ImageFiles(self.files[indices], self.color_mode, self.size, self.sample_shape, self.normalization, sums)

    def normalized(self, normalization: Normalization) -> "ImageFiles":
        return ImageFiles(self.files, self.color_mode, self.size, self.sample_shape, normalization)

    def describe(self) -> dict:
        """How to decode the files again (`Dataset.save`); the normalization is the dataset's."""
        return {"color_mode": self.color_mode, "size": list(self.size), "sample_shape": list(self.sample_shape)}


class Concat:
    """Several sample sets read as one (the training split and a transfer set of another kind)."""

    dtype = np.dtype(np.float32)

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.parts[0].shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        indices = np.arange(len(self))[key]
        part_of = np.searchsorted(self.starts, indices, side="right") - 1
        out = np.empty((len(indices), *self.shape[1:]), np.float32)
        for p in np.unique(part_of):
            chosen = part_of == p
            out[chosen] = self.parts[p][indices[chosen] - self.starts[p]]
        return out


def channel_sums(pixels: np.ndarray) -> np.ndarray:
    """(N, C, 2) float64: each sample's per-channel sum and sum of squares of (N, C, ...) pixels."""
    flat = pixels.astype(np.float64).reshape(len(pixels), pixels.shape[1], -1)
    return np.stack([flat.sum(axis=2), (flat ** 2).sum(axis=2)], axis=2)


def is_lazy(x) -> bool:
    """Whether reading `x` decodes files (worth worker processes), rather than slicing memory."""
    return isinstance(x, ImageFiles) or (isinstance(x, Concat) and any(is_lazy(p) for p in x.parts))


def take(x, indices):
    """The samples at `indices`, without decoding files."""
    return x.subset(indices) if isinstance(x, ImageFiles) else x[indices]


def concat(parts: Sequence):
    """The parts as one sample set: an array, one ImageFiles, or a Concat of mixed kinds."""
    parts = [p for p in parts if len(p)] or list(parts[:1])
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    if all(isinstance(p, ImageFiles) for p in parts) and len({(p.color_mode, p.size, p.normalization) for p in parts}) == 1:
        first = parts[0]
        sums = None if any(p.pixel_sums is None for p in parts) else np.concatenate([p.pixel_sums for p in parts])
        return ImageFiles(np.concatenate([p.files for p in parts]), first.color_mode, first.size, first.sample_shape,
                          first.normalization, sums)
    return parts[0] if len(parts) == 1 else Concat(parts)


def normalized(x, normalization: Normalization):
    """`x` (raw pixels) under `normalization`: an ImageFiles stays lazy, an array is converted now."""
    if isinstance(x, ImageFiles):
        return x.normalized(normalization)
    return normalization.apply(x)


def decode_image(file: Path, color_mode: str, size: tuple[int, ...] = ()) -> np.ndarray:
    """One image file as training (and `edge-distill predict`) reads it: decoded by PIL, converted
    (readers.COLOR_CONVERSION), resized bilinearly to `size` = (H, W) when given: (H, W) or (H, W, 3) float32."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            img = _eight_bit(img).convert("L" if color_mode == "grayscale" else "RGB")
            if size:
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.float32)
    except Image.DecompressionBombError as e:
        raise DataError(f"{file}: refused: {e}", "remove the file, or downscale it if it is a real image") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{file}: cannot read image ({e})", "remove or replace the file") from None


def _eight_bit(img):
    """A 16- or 32-bit integer image scaled to 8 bits as PIL's 8-bit modes hold it: PIL's own
    convert("L") clips such pixels at 255, which turns a 16-bit PNG white."""
    from PIL import Image

    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return img
    pixels = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or pixels.max() <= 65535 else float(np.iinfo(np.int32).max)
    return Image.fromarray(np.round(np.clip(pixels, 0, top) * (255.0 / top)).astype(np.uint8), mode="L")
