"""Reading raw samples: the embedded digits, an image folder (one subfolder per class), an .npz with
x/y, and unlabeled transfer data. Each returns raw arrays on their own scale; `dataset.py` splits
and normalizes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.config import DataConfig
from edge_distill.data.samples import ImageFiles, channel_sums, decode_image
from edge_distill.errors import DataError, InputFileError
from edge_distill.files import regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# A source may come split already: these names, for folders (train/, val/, test/) and .npz arrays
# (x_train, y_train, ...). Without val, the build carves it out of train.
GIVEN_SPLITS = ("train", "val", "test")


@dataclass
class RawData:
    x: Any  # (N, C, ...) on its own scale: an array, or ImageFiles (decoded when read)
    y: np.ndarray  # (N,) int64
    labels: list[str]
    pixel_scale: float
    split: np.ndarray | None = None  # (N,) "train" / "val" / "test" where the source gives the split
    raw_input: dict = field(default_factory=dict)  # what an app must feed before preprocessing (raw_input_contract)


# How PIL turns a decoded image into the model's channels, by data.color_mode.
COLOR_CONVERSION = {
    "grayscale": "PIL Image.convert('L'): L = R * 299/1000 + G * 587/1000 + B * 114/1000",
    "rgb": "PIL Image.convert('RGB'): channels in R, G, B order",
}


def image_contract(cfg: DataConfig, size: tuple[int, int]) -> dict:
    """The raw input of an image-folder build: how a camera frame or file becomes the training pixels."""
    return {
        "kind": "image file (PNG or JPEG)", "dtype": "uint8", "range": [0, 255], "polarity": "larger is brighter",
        "color": COLOR_CONVERSION[cfg.color_mode], "height_width": list(size),
        "resize": (f"PIL Image.resize((width, height), Image.Resampling.BILINEAR) to {size[0]}x{size[1]}"
                   if cfg.image_size else f"none: images must already be {size[0]}x{size[1]}"),
        "channel_order": "one channel (luma)" if cfg.color_mode == "grayscale" else "R, G, B",
    }


def read_digits() -> RawData:
    # scikit-learn ships the UCI digits inside the package (sklearn/datasets/data): no download.
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]  # (N, 1, 8, 8), pixel values 0..16
    contract = {"kind": "8x8 digit image (scikit-learn's load_digits)", "dtype": "integer values as float",
                "range": [0, 16], "polarity": "0 is background, 16 is full ink (larger is darker)",
                "color": "one channel", "height_width": [8, 8], "resize": "none", "channel_order": "one channel"}
    return RawData(x, digits.target.astype(np.int64), [str(c) for c in digits.target_names], 1.0 / 16.0,
                   raw_input=contract)


def _read_npz_arrays(path: Path, required: tuple[str, ...] = (), hint: str = "") -> dict[str, np.ndarray]:
    regular_file(path, error=DataError)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except Exception as e:  # zipfile/pickle/format errors all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz file ({e})", "save it with numpy.savez") from None
    _require(arrays, required, path, hint)
    return arrays


def _require(arrays: dict[str, np.ndarray], required: tuple[str, ...], path: Path, hint: str) -> None:
    missing = set(required) - set(arrays)
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(sorted(missing))} (found {', '.join(arrays) or 'none'})",
                        hint)


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


def read_npz(path: Path, layout: str) -> RawData:
    arrays = _read_npz_arrays(path)
    if {"x_train", "x_test"} <= set(arrays):
        given = [s for s in GIVEN_SPLITS if f"x_{s}" in arrays]
        _require(arrays, tuple(f"{a}_{s}" for s in given for a in "xy"), path,
                 "save with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
        parts = [_npz_samples(arrays[f"x_{s}"], arrays[f"y_{s}"], layout, path, f"_{s}") for s in given]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        split = np.concatenate([np.full(len(p[1]), s) for p, s in zip(parts, given)])
    else:
        _require(arrays, ("x", "y"), path, "save with np.savez(path, x=images, y=labels)")
        (x, y), split = _npz_samples(arrays["x"], arrays["y"], layout, path, ""), None
    if "labels" in arrays:
        labels = [str(v) for v in arrays["labels"]]
    else:
        labels = [str(i) for i in range(int(y.max()) + 1)] if y.size else []
    pixel_scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    contract = {"kind": f"array of shape {' x '.join(map(str, x.shape[1:]))} per sample (.npz)", "dtype": x.dtype.name,
                "range": [float(x.min()), float(x.max())] if x.size else [], "polarity": "as in your data",
                "channel_order": "as in your data (channels first)"}
    return RawData(x.astype(np.float32), y, labels, pixel_scale, split, contract)


def _npz_samples(x: np.ndarray, y: np.ndarray, layout: str, path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    x = _as_channels_first(_numeric(x, path), layout, path)
    if y.ndim != 1:
        raise DataError(f"{path}: y{suffix} must be 1-D (one class id per sample), got shape {y.shape}",
                        "pass class ids, not one-hot rows: y = onehot.argmax(axis=1)")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y{suffix} must hold integer class ids, got dtype {y.dtype}")
    return x, y.astype(np.int64)


def read_image_folder(path: Path, cfg: DataConfig, progress=lambda _: None) -> RawData:
    """One subfolder per class; or train/, test/ (and val/) subfolders, each with one subfolder per class."""
    folders = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    given = [s for s in GIVEN_SPLITS if s in folders] if {"train", "test"} <= folders <= set(GIVEN_SPLITS) else []
    roots = [path / s for s in given] or [path]
    classes = sorted({p.name for root in roots for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")})
    if not classes:
        raise DataError(f"{path}: no class subfolders", "put the images of each class in their own subfolder")
    files, targets, split = [], [], []
    for root, split_name in zip(roots, given or [None]):
        for class_id, name in enumerate(classes):
            found = _image_files(root / name) if (root / name).is_dir() else []
            files += found
            targets += [class_id] * len(found)
            split += [split_name] * len(found)
    if not files:
        raise DataError(f"{path}: no PNG or JPEG images in the class folders")
    x = measured(_lazy_images(files, cfg), progress)
    return RawData(x, np.asarray(targets, dtype=np.int64), classes, 1.0 / 255.0,
                   np.asarray(split) if given else None, image_contract(cfg, tuple(x.sample_shape[1:])))


def _image_files(folder: Path) -> list[Path]:
    """The image files of a folder, each a regular file (a FIFO named x.png would block its read forever)."""
    return [regular_file(f, error=DataError) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]


def measured(images: ImageFiles, progress=lambda _: None) -> ImageFiles:
    """Every file decoded once (through the data loader's workers): a broken or odd-sized file
    stops the build here, and each file's pixel sums are kept."""
    from edge_distill.data.loader import in_order
    from edge_distill.progress import progress_bar

    sums = []
    with progress_bar(progress, len(images), "reading images") as bar:
        for batch in in_order(images):
            sums.append(channel_sums(batch.numpy()))
            bar.update(len(batch))
    return ImageFiles(images.files, images.color_mode, images.size, images.sample_shape, images.normalization,
                      np.concatenate(sums))


def _lazy_images(files: list[Path], cfg: DataConfig) -> ImageFiles:
    """The files as samples read on demand; the first is decoded now for the sample shape (the data
    stage decodes every other one once, checking each against it)."""
    size = tuple(cfg.image_size)
    first = decode_image(files[0], cfg.color_mode, size)
    shape = (1, *first.shape) if first.ndim == 2 else (first.shape[2], *first.shape[:2])
    return ImageFiles([str(f.resolve()) for f in files], cfg.color_mode, size, shape)


def read_transfer(cfg: DataConfig, sample_shape: tuple[int, ...], pixel_scale: float, progress=lambda _: None):
    """The unlabeled transfer set in the labeled data's raw scale: (N, *sample_shape), maybe N = 0;
    a folder of images stays on disk (ImageFiles) when the labeled data are images too."""
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
        x, scale = measured(_lazy_images(files, cfg), progress), 1.0 / 255.0
        if scale != pixel_scale:  # labeled arrays on another scale: decode now and rescale below
            x = np.asarray(x)
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
    if isinstance(x, ImageFiles):  # on the labeled images' scale already; decoded when read
        return x
    if not np.isfinite(x).all():
        raise DataError(f"data.transfer: {path} contains NaN or inf", "clean or drop those samples")
    # Bring uint8 transfer images into the labeled data's raw scale, so one normalization serves both.
    return (x.astype(np.float32) * (scale / pixel_scale)).astype(np.float32)
