"""Dataset sources: the embedded digits default, an image folder, or an .npz with x/y.

Every source ends as the same `Dataset`: float32 arrays already preprocessed (NCHW images or NCL
1-D signals), a seeded stratified train/val/test split, an unlabeled transfer set (possibly empty),
class labels, and the preprocessing recipe an app must repeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.config import DataConfig
from edge_distill.errors import DataError, InputFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "val", "test")  # labeled; x also has "transfer": unlabeled samples


@dataclass
class Dataset:
    x: dict[str, np.ndarray]  # split -> (N, C, H, W) or (N, C, L) float32, preprocessed
    y: dict[str, np.ndarray]  # split -> (N,) int64, for the labeled splits
    labels: list[str]
    preprocessing: dict[str, Any]  # layout, pixel_scale, mean, std, color_mode
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) or (C, L) of one sample."""
        return tuple(self.x["train"].shape[1:])

    def save(self, path: Path) -> None:
        arrays = {f"x_{s}": self.x[s] for s in (*SPLITS, "transfer")} | {f"y_{s}": self.y[s] for s in SPLITS}
        meta = {"labels": self.labels, "preprocessing": self.preprocessing, "source": self.source}
        np.savez(path, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            return cls(
                x={s: f[f"x_{s}"] for s in (*SPLITS, "transfer")},
                y={s: f[f"y_{s}"] for s in SPLITS},
                labels=meta["labels"],
                preprocessing=meta["preprocessing"],
                source=meta["source"],
            )


def source_path(cfg: DataConfig) -> Path | None:
    """The user's file or folder behind the data config, or None for the embedded default."""
    return None if cfg.source == "digits" else Path(cfg.source)


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Read the configured source, check it, split it (seeded, stratified) and normalize it."""
    path = source_path(cfg)
    if path is None:
        raw, labels, pixel_scale = _read_digits()
        color_mode = "grayscale"
    elif not path.exists():
        raise InputFileError(f"data.source: {path} does not exist", "give an image folder, an .npz, or 'digits'")
    elif path.is_dir():
        raw, labels, pixel_scale = _read_image_folder(path, cfg)
        color_mode = cfg.color_mode
    elif path.suffix == ".npz":
        raw, labels, pixel_scale = _read_npz(path, cfg.layout)
        color_mode = "grayscale" if raw[0].shape[1] == 1 else "rgb"
    else:
        raise InputFileError(
            f"data.source: {path} is neither a folder nor an .npz file",
            "give a folder with one subfolder of images per class, or an .npz with x and y arrays",
        )
    x, y = raw
    where = cfg.source
    _check_samples(x, y, labels, where)
    x_split, y_split = _split(x, y, cfg, seed, where)
    x_split["transfer"] = _read_transfer(cfg, x.shape[1:], pixel_scale)
    if cfg.labeled_samples:
        x_split, y_split = _drop_labels(x_split, y_split, cfg.labeled_samples, seed)

    # Per-channel statistics of the training inputs only (labeled and transfer), so val/test stay unseen.
    fit_on = np.concatenate([x_split["train"], x_split["transfer"]]) * pixel_scale
    axes = (0, *range(2, fit_on.ndim))  # every axis but the channel
    mean = fit_on.mean(axis=axes)
    std = fit_on.std(axis=axes) + 1e-6
    per_channel = (slice(None),) + (None,) * (fit_on.ndim - 2)
    x_norm = {s: ((part * pixel_scale - mean[per_channel]) / std[per_channel]).astype(np.float32)
              for s, part in x_split.items()}
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and all(np.isfinite(p).all() for p in x_norm.values())):
        # Finite inputs whose sums overflow float32 (|x| near 3e38) normalize to inf/NaN.
        largest = max(float(np.abs(p).max()) for p in x_split.values() if p.size)
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
    return Dataset(x=x_norm, y=y_split, labels=labels, preprocessing=preprocessing, source=where)


def _read_digits() -> tuple[tuple[np.ndarray, np.ndarray], list[str], float]:
    # scikit-learn ships the UCI digits inside the package (sklearn/datasets/data): no download.
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]  # (N, 1, 8, 8), pixel values 0..16
    return (x, digits.target.astype(np.int64)), [str(c) for c in digits.target_names], 1.0 / 16.0


def _read_npz_arrays(path: Path, required: tuple[str, ...], hint: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = set(required) - set(f.files)
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(sorted(missing))} (found {', '.join(f.files) or 'none'})", hint
                )
            return {name: f[name] for name in f.files}
    except DataError:
        raise
    except Exception as e:  # zipfile/pickle/format errors all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz file ({e})", "save it with numpy.savez") from None


def _numeric(x: np.ndarray, path: Path) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: x must hold numbers (uint8 or float), got dtype {x.dtype}",
                        "save the samples as a numeric array")
    return x


def _as_channels_first(x: np.ndarray, layout: str, path: Path) -> np.ndarray:
    """(N, L) -> (N, 1, L); (N, H, W) -> (N, 1, H, W), or with layout NCL (N, C, L) as is."""
    if x.ndim == 2:
        return x[:, None]
    if x.ndim == 3:
        return x if layout == "NCL" else x[:, None]
    if x.ndim == 4 and layout != "NCL":
        return x
    expected = "(N, L) or (N, C, L)" if layout == "NCL" else "(N, L) signals, (N, H, W) or (N, C, H, W) images"
    raise DataError(f"{path}: x must be {expected}, got shape {x.shape}", "check data.layout")


def _read_npz(path: Path, layout: str) -> tuple[tuple[np.ndarray, np.ndarray], list[str], float]:
    arrays = _read_npz_arrays(path, ("x", "y"), "save with np.savez(path, x=images, y=labels)")
    x, y = _as_channels_first(_numeric(arrays["x"], path), layout, path), arrays["y"]
    if y.ndim != 1:
        raise DataError(f"{path}: y must be 1-D (one class id per sample), got shape {y.shape}",
                        "pass class ids, not one-hot rows: y = onehot.argmax(axis=1)")
    labels = [str(v) for v in arrays["labels"]] if "labels" in arrays else None
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must hold integer class ids, got dtype {y.dtype}")
    pixel_scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    y = y.astype(np.int64)
    if labels is None:
        labels = [str(i) for i in range(int(y.max()) + 1 if y.size else 0)]
    return (x.astype(np.float32), y), labels, pixel_scale


def _read_image_folder(path: Path, cfg: DataConfig) -> tuple[tuple[np.ndarray, np.ndarray], list[str], float]:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{path}: no class subfolders", "put the images of each class in their own subfolder")
    images, targets = [], []
    for class_id, name in enumerate(classes):
        files = _image_files(path / name)
        images += _read_images(files, cfg)
        targets += [class_id] * len(files)
    if not images:
        raise DataError(f"{path}: no PNG or JPEG images in the class folders")
    return (_stack_images(images), np.asarray(targets, dtype=np.int64)), classes, 1.0 / 255.0


def _image_files(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]


def _read_images(files: list[Path], cfg: DataConfig) -> list[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    mode = "L" if cfg.color_mode == "grayscale" else "RGB"
    size = tuple(cfg.image_size)
    if size and len(size) != 2:
        raise DataError(f"data.image_size must be [height, width], got {list(size)}")
    images: list[np.ndarray] = []
    for file in files:
        try:
            with Image.open(file) as img:
                img = img.convert(mode)
                if size:
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.float32)
        except Image.DecompressionBombError as e:
            raise DataError(f"{file}: refused: {e}", "remove the file, or downscale it if it is a real image") from None
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{file}: cannot read image ({e})", "remove or replace the file") from None
        if images and array.shape != images[0].shape:
            raise DataError(
                f"{file}: size {array.shape[:2]} differs from {images[0].shape[:2]} of the first image",
                "set data.image_size = [height, width] to resize every image",
            )
        images.append(array)
    return images


def _stack_images(images: list[np.ndarray]) -> np.ndarray:
    x = np.stack(images)
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # -> (N, C, H, W)


def _read_transfer(cfg: DataConfig, sample_shape: tuple[int, ...], pixel_scale: float) -> np.ndarray:
    """The unlabeled transfer set in the labeled data's raw scale: (N, *sample_shape), maybe N = 0."""
    if not cfg.transfer:
        return np.zeros((0, *sample_shape), np.float32)
    path = Path(cfg.transfer)
    if not path.exists():
        raise InputFileError(f"data.transfer: {path} does not exist", "give a folder of unlabeled images or an .npz")
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise DataError(f"data.transfer: {path} holds no PNG or JPEG images",
                            "put the unlabeled images directly in that folder (no class subfolders)")
        x, scale = _stack_images(_read_images(files, cfg)), 1.0 / 255.0
    elif path.suffix == ".npz":
        arrays = _read_npz_arrays(path, ("x",), "save with np.savez(path, x=samples)")
        x = _as_channels_first(_numeric(arrays["x"], path), cfg.layout, path)
        scale = 1.0 / 255.0 if x.dtype == np.uint8 else pixel_scale  # floats: the labeled data's raw scale
    else:
        raise InputFileError(f"data.transfer: {path} is neither a folder nor an .npz file",
                             "give a folder of unlabeled images or an .npz with an x array")
    if tuple(x.shape[1:]) != tuple(sample_shape):
        raise DataError(f"data.transfer: {path} samples have shape {tuple(x.shape[1:])}, "
                        f"the labeled data {tuple(sample_shape)}", "resize the transfer data to match")
    if not np.isfinite(x).all():
        raise DataError(f"data.transfer: {path} contains NaN or inf", "clean or drop those samples")
    # Bring uint8 transfer images into the labeled data's raw scale, so one normalization serves both.
    return (x.astype(np.float32) * (scale / pixel_scale)).astype(np.float32)


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
        x_kept, x_rest, y_kept, _ = train_test_split(x["train"], y["train"], train_size=keep, random_state=seed,
                                                     stratify=y["train"])
    except ValueError as e:  # a class with a single training sample cannot be stratified
        raise DataError(f"data.labeled_samples = {keep}: cannot pick a stratified subset ({e})",
                        "add samples to the smallest class, or set data.labeled_samples = 0") from None
    return ({**x, "train": x_kept, "transfer": np.concatenate([x["transfer"], x_rest])},
            {**y, "train": y_kept})


def _check_samples(x: np.ndarray, y: np.ndarray, labels: list[str], where: str) -> None:
    if len(x) == 0:
        raise DataError(f"{where}: the dataset is empty")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} samples in x but {len(y)} labels in y")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=tuple(range(1, x.ndim))).sum())
        raise DataError(f"{where}: {bad} sample(s) contain NaN or inf", "clean or drop those samples")
    if y.min() < 0 or y.max() >= len(labels):
        raise DataError(f"{where}: class ids must lie in 0..{len(labels) - 1}, found {y.min()}..{y.max()}")
    if len(np.unique(y)) < 2:
        raise DataError(f"{where}: needs at least 2 classes, found {len(np.unique(y))}")


def _split(x: np.ndarray, y: np.ndarray, cfg: DataConfig, seed: int, where: str):
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    if counts[counts > 0].min() < 3:
        raise DataError(
            f"{where}: every class needs at least 3 samples for a train/val/test split; "
            f"class '{int(np.argmin(np.where(counts > 0, counts, np.inf)))}' has {counts[counts > 0].min()}",
            "add samples or drop that class",
        )
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=cfg.test_fraction, random_state=seed, stratify=y
        )
        val_share = cfg.val_fraction / (1.0 - cfg.test_fraction)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=val_share, random_state=seed, stratify=y_rest
        )
    except ValueError as e:  # too few samples for the requested fractions
        raise DataError(f"{where}: cannot split {len(x)} samples ({e})", "add samples or change data.*_fraction") from None
    return {"train": x_train, "val": x_val, "test": x_test}, {"train": y_train, "val": y_val, "test": y_test}
