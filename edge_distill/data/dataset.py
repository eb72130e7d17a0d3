"""The dataset every stage reads: a source (the embedded digits default, an image folder, or an .npz
with x/y; see readers.py) checked, split and normalized.

Every source ends as the same `Dataset`: preprocessed float32 samples (NCHW images or NCL 1-D
signals), a seeded stratified train/val/test split, an unlabeled transfer set (possibly empty),
class labels, and the preprocessing recipe an app must repeat. Small sources are held as arrays;
an image folder stays on disk as its file list, decoded a batch at a time (samples.py), so memory
does not grow with the number of images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.config import DataConfig
from edge_distill.data.readers import read_digits, read_image_folder, read_npz, read_transfer
from edge_distill.data.samples import ImageFiles, Normalization, channel_sums, concat, is_lazy, normalized, take
from edge_distill.errors import DataError, InputFileError

SPLITS = ("train", "val", "test")  # labeled; x also has "transfer": unlabeled samples
UNLABELED = -1  # the label of a transfer sample: soft targets only


@dataclass
class Dataset:
    x: dict[str, Any]  # split -> (N, C, H, W) or (N, C, L) float32, preprocessed: an array or ImageFiles
    y: dict[str, np.ndarray]  # split -> (N,) int64, for the labeled splits
    labels: list[str]
    preprocessing: dict[str, Any]  # layout, pixel_scale, mean, std, color_mode
    source: str
    split: str = "random"  # how train/val/test came about: "given by the source" or "random, stratified (seed N)"
    raw_input: dict = field(default_factory=dict)  # what an app feeds before preprocessing (readers.py)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) or (C, L) of one sample."""
        return tuple(self.x["train"].shape[1:])

    def training_set(self) -> tuple[Any, np.ndarray]:
        """Labeled training samples, then the transfer set with label -1: (x (N, ...), y (N,))."""
        x = concat([self.x["train"], self.x["transfer"]])
        y = np.concatenate([self.y["train"], np.full(len(self.x["transfer"]), UNLABELED, dtype=np.int64)])
        return x, y

    def calibration_sample(self, count: int, seed: int) -> np.ndarray:
        """Up to `count` training inputs, labeled and transfer (calibration needs no labels): a seeded
        random subset in their original order, so every class is likely represented."""
        train, _ = self.training_set()
        picked = np.random.default_rng(seed).permutation(len(train))[:count]
        return train[np.sort(picked)]

    def save(self, path: Path) -> None:
        """Arrays as they are; image files as their paths and how to decode them."""
        arrays, files = {}, {}
        for s in (*SPLITS, "transfer"):
            if isinstance(self.x[s], ImageFiles):
                arrays[f"files_{s}"], files[s] = self.x[s].files, self.x[s].describe()
            else:
                arrays[f"x_{s}"] = self.x[s]
        arrays |= {f"y_{s}": self.y[s] for s in SPLITS}
        meta = {"labels": self.labels, "preprocessing": self.preprocessing, "source": self.source, "split": self.split,
                "raw_input": self.raw_input, "image_files": files, "normalization": _exact(self.x)}
        np.savez(path, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            exact = meta.get("normalization")
            norm = Normalization(exact["pixel_scale"], tuple(exact["mean"]), tuple(exact["std"])) if exact else None

            def split_samples(s: str):
                if s in meta.get("image_files", {}):
                    d = meta["image_files"][s]
                    return ImageFiles(f[f"files_{s}"], d["color_mode"], tuple(d["size"]), tuple(d["sample_shape"]), norm)
                return f[f"x_{s}"]

            return cls(
                x={s: split_samples(s) for s in (*SPLITS, "transfer")},
                y={s: f[f"y_{s}"] for s in SPLITS},
                labels=meta["labels"],
                preprocessing=meta["preprocessing"],
                source=meta["source"],
                split=meta.get("split", "random"),
                raw_input=meta.get("raw_input", {}),
            )


def source_path(cfg: DataConfig) -> Path | None:
    """The user's file or folder behind the data config, or None for the embedded default."""
    return None if cfg.source == "digits" else Path(cfg.source)


def load_dataset(cfg: DataConfig, seed: int, progress=lambda _: None) -> Dataset:
    """Read the configured source, check it, split it (seeded, stratified) and normalize it."""
    path = source_path(cfg)
    if path is None:
        raw = read_digits()
        color_mode = "grayscale"
    elif not path.exists():
        raise InputFileError(f"data.source: {path} does not exist", "give an image folder, an .npz, or 'digits'")
    elif path.is_dir():
        raw = read_image_folder(path, cfg, progress)
        color_mode = cfg.color_mode
    elif path.suffix == ".npz":
        raw = read_npz(path, cfg.layout)
        color_mode = "grayscale" if raw.x.shape[1] == 1 else "rgb"
    else:
        raise InputFileError(
            f"data.source: {path} is neither a folder nor an .npz file",
            "give a folder with one subfolder of images per class, or an .npz with x and y arrays",
        )
    x, y, labels, pixel_scale = raw.x, raw.y, raw.labels, raw.pixel_scale
    where = cfg.source
    _check_samples(x, y, labels, where)
    if raw.split is None:
        x_split, y_split = _split(x, y, cfg, seed, where)
    else:
        x_split, y_split = _given_split(x, y, raw.split, cfg, seed, where)
    x_split["transfer"] = read_transfer(cfg, x.shape[1:], pixel_scale, progress)
    if cfg.labeled_samples:
        x_split, y_split = _drop_labels(x_split, y_split, cfg.labeled_samples, seed)

    # Per-channel statistics of the training inputs only (labeled and transfer), so val/test stay unseen.
    fit_on = [x_split["train"], x_split["transfer"]]
    if any(is_lazy(p) for p in fit_on):
        mean, std = _summed_statistics(fit_on, pixel_scale)
    else:
        mean, std = _statistics(np.concatenate(fit_on) * pixel_scale)
    norm = Normalization(pixel_scale, tuple(map(float, mean)), tuple(map(float, std)))
    x_norm = {s: normalized(part, norm) for s, part in x_split.items()}
    if not (np.isfinite(mean).all() and np.isfinite(std).all()
            and all(np.isfinite(p).all() for p in x_norm.values() if isinstance(p, np.ndarray))):
        # Finite inputs whose sums overflow float32 (|x| near 3e38) normalize to inf/NaN.
        largest = max(float(np.abs(p).max()) for p in x_split.values() if isinstance(p, np.ndarray) and p.size)
        raise DataError(f"{where}: values up to {largest:.3g} overflow when normalized",
                        "rescale the data (e.g. to 0..1 or 0..255) before building")
    preprocessing = {
        "layout": "NCHW" if x.ndim == 4 else "NCL",
        "color_mode": color_mode,
        "pixel_scale": pixel_scale,
        "mean": [round(float(m), 6) for m in mean],
        "std": [round(float(s), 6) for s in std],
        "formula": "x = (pixel * pixel_scale - mean[c]) / std[c]",
    }
    split = "given by the source" if raw.split is not None else f"random, stratified (seed {seed})"
    return Dataset(x=x_norm, y=y_split, labels=labels, preprocessing=preprocessing, source=where, split=split,
                   raw_input=raw.raw_input)


def _statistics(fit_on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 mean and std (+1e-6) of in-memory samples, scaled: numpy's own float32
    reductions, kept for arrays so that in-memory builds reproduce their figures exactly."""
    axes = (0, *range(2, fit_on.ndim))  # every axis but the channel
    return fit_on.mean(axis=axes), fit_on.std(axis=axes) + 1e-6


def _summed_statistics(fit_on: list, pixel_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The same statistics from per-sample pixel sums (float64): image files carry theirs from the
    one reading pass (ImageFiles.measured); arrays are summed here."""
    totals = []
    for part in fit_on:
        if isinstance(part, ImageFiles):
            totals.append(part.pixel_sums.sum(axis=0))
        elif len(part):
            totals.append(channel_sums(part).sum(axis=0))
    total = np.sum(totals, axis=0)  # (C, 2)
    count = sum(len(p) for p in fit_on) * int(np.prod(fit_on[0].shape[2:]))
    mean = total[:, 0] / count * pixel_scale
    std = np.sqrt(np.maximum(total[:, 1] / count * pixel_scale ** 2 - mean ** 2, 0.0)) + 1e-6
    return mean.astype(np.float32), std.astype(np.float32)


def _exact(x: dict) -> dict | None:
    """The normalization lazy splits apply, at full precision (the preprocessing record is rounded)."""
    lazy = [p for p in x.values() if isinstance(p, ImageFiles) and p.normalization]
    if not lazy:
        return None
    n = lazy[0].normalization
    return {"pixel_scale": n.pixel_scale, "mean": list(n.mean), "std": list(n.std)}


def _drop_labels(x: dict[str, np.ndarray], y: dict[str, np.ndarray], keep: int, seed: int):
    """Keep `keep` labeled training samples (stratified); the rest join the transfer set unlabeled."""
    from sklearn.model_selection import train_test_split

    n_train, n_classes = len(y["train"]), len(np.unique(y["train"]))
    if keep >= n_train:
        return x, y
    if keep < n_classes:
        raise DataError(f"data.labeled_samples = {keep} is fewer than the {n_classes} classes",
                        f"keep at least {n_classes} so every class has a labeled sample")
    if n_train - keep < n_classes:  # the stratified split needs one unlabeled sample per class too
        raise DataError(f"data.labeled_samples = {keep} of {n_train} training samples leaves fewer unlabeled "
                        f"samples than the {n_classes} classes",
                        f"keep at most {n_train - n_classes}, or 0 to keep every label")
    try:
        kept, rest, y_kept, _ = train_test_split(np.arange(n_train), y["train"], train_size=keep, random_state=seed,
                                                 stratify=y["train"])
    except ValueError as e:  # a class with a single training sample cannot be stratified
        raise DataError(f"data.labeled_samples = {keep}: cannot pick a stratified subset ({e})",
                        "add samples to the smallest class, or set data.labeled_samples = 0") from None
    return ({**x, "train": take(x["train"], kept), "transfer": concat([x["transfer"], take(x["train"], rest)])},
            {**y, "train": y_kept})


def _check_samples(x, y: np.ndarray, labels: list[str], where: str) -> None:
    if len(x) == 0:
        raise DataError(f"{where}: the dataset is empty")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} samples in x but {len(y)} labels in y")
    if isinstance(x, np.ndarray) and not np.isfinite(x).all():  # decoded images always are
        bad = int((~np.isfinite(x)).any(axis=tuple(range(1, x.ndim))).sum())
        raise DataError(f"{where}: {bad} sample(s) contain NaN or inf", "clean or drop those samples")
    if y.min() < 0 or y.max() >= len(labels):
        raise DataError(f"{where}: class ids must lie in 0..{len(labels) - 1}, found {y.min()}..{y.max()}")
    if len(np.unique(y)) < 2:
        raise DataError(f"{where}: needs at least 2 classes, found {len(np.unique(y))}")


def _split(x, y: np.ndarray, cfg: DataConfig, seed: int, where: str):
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    if counts[counts > 0].min() < 3:
        raise DataError(
            f"{where}: every class needs at least 3 samples for a train/val/test split; "
            f"class '{int(np.argmin(np.where(counts > 0, counts, np.inf)))}' has {counts[counts > 0].min()}",
            "add samples or drop that class",
        )
    try:  # split indices, not samples: image files stay unread
        rest, test, y_rest, y_test = train_test_split(
            np.arange(len(y)), y, test_size=cfg.test_fraction, random_state=seed, stratify=y
        )
        val_share = cfg.val_fraction / (1.0 - cfg.test_fraction)
        train, val, y_train, y_val = train_test_split(
            rest, y_rest, test_size=val_share, random_state=seed, stratify=y_rest
        )
    except ValueError as e:  # too few samples for the requested fractions
        raise DataError(f"{where}: cannot split {len(x)} samples ({e})", "add samples or change data.*_fraction") from None
    return ({"train": take(x, train), "val": take(x, val), "test": take(x, test)},
            {"train": y_train, "val": y_val, "test": y_test})


def _given_split(x, y: np.ndarray, split: np.ndarray, cfg: DataConfig, seed: int, where: str):
    """The source's own train/val/test, used as given; without val, a stratified share of train."""
    parts = {s: (take(x, split == s), y[split == s]) for s in ("train", "val", "test")}
    for name in ("train", "test"):
        if len(parts[name][1]) == 0:
            raise DataError(f"{where}: the given {name} split is empty", f"put samples in {name}")
    if len(parts["val"][1]) == 0:
        from sklearn.model_selection import train_test_split

        x_given, y_given = parts["train"]
        try:
            train, val, y_train, y_val = train_test_split(np.arange(len(y_given)), y_given, test_size=cfg.val_fraction,
                                                          random_state=seed, stratify=y_given)
        except ValueError as e:
            raise DataError(f"{where}: cannot carve a validation split out of the given train split ({e})",
                            "add a val split, or more training samples per class") from None
        parts["train"], parts["val"] = (take(x_given, train), y_train), (take(x_given, val), y_val)
    return {s: p[0] for s, p in parts.items()}, {s: p[1] for s, p in parts.items()}

