"""Reference outputs for raw files, through the bundle's documented preprocessing: what
`edge-distill predict` prints, and what an app's own pipeline must reproduce for the same files.
Needs numpy, onnxruntime and (for image files) Pillow; no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.bundle.reader import Bundle, normalize
from edge_distill.config import BenchmarkConfig
from edge_distill.data.readers import IMAGE_SUFFIXES, decode_image
from edge_distill.errors import DataError, InputFileError
from edge_distill.files import regular_file
from edge_distill.sessions import open_session, run_session

def predict_files(bundle_path: Path, files: list[Path], top: int = 3) -> list[dict[str, Any]]:
    """For each file: the top classes with probabilities and the raw logits."""
    bundle = Bundle.open_checked(bundle_path)
    bundle.require_classifier("predict")
    manifest = bundle.manifest
    pre, raw_input = bundle.section("preprocessing"), manifest.get("raw_input", {})
    sample_shape = [int(d) for d in manifest["inputs"][0]["shape"][1:]]
    session = open_session(bundle.model_path, what=f"{bundle_path}: the model")
    results = []
    for file in files:
        raw = read_raw(file, raw_input, pre, sample_shape)  # (C, ...) on the raw scale
        with np.errstate(over="ignore", invalid="ignore"):
            x = normalize(raw[None], pre)  # (1, C, ...)
        if not np.isfinite(x).all():
            raise InputFileError(f"{file}: holds NaN or inf, or values that overflow float32 once preprocessed",
                                 "give finite values on the raw scale the bundle documents")
        logits = run_session(session, {manifest["inputs"][0]["name"]: x}, f"{bundle_path}: the model on {file}",
                             BenchmarkConfig.time_limit_s)[0][0]
        if not np.isfinite(logits).all():  # (K,)
            raise InputFileError(f"{file}: the model's outputs are not finite (NaN or inf) for this input",
                                 "check that the input is on the raw scale the bundle documents")
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = np.argsort(-probabilities)[:top]
        results.append({"file": str(file), "top": [{"label": manifest["labels"][k], "probability": float(probabilities[k])}
                                                   for k in best],
                        "logits": [float(v) for v in logits]})
    return results


def read_raw(file: Path, raw_input: dict[str, Any], pre: dict[str, Any], sample_shape: list[int]) -> np.ndarray:
    """A raw sample (C, ...) from an image file decoded as the bundle's raw_input says, or from a .npy."""
    regular_file(file)
    if file.suffix.lower() == ".npy":
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # values float32 cannot hold: refused below as inf
                raw = np.load(file, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise InputFileError(f"{file}: not a readable .npy ({e})") from None
        if list(raw.shape) != sample_shape:
            raise InputFileError(f"{file}: shape {' x '.join(map(str, raw.shape))}, the model takes "
                                 f"{' x '.join(map(str, sample_shape))} per sample", "save one raw sample, channels first")
        return raw
    takes_images = str(raw_input.get("kind", "")).startswith("image file")
    if file.suffix.lower() not in IMAGE_SUFFIXES or not takes_images:
        raise InputFileError(f"{file}: this bundle's raw input is {raw_input.get('kind', 'not stated')}",
                             ("give a PNG or JPEG file, or " if takes_images else "give ")
                             + f"a .npy of shape {' x '.join(map(str, sample_shape))} on the raw scale")
    height, width = sample_shape[1:]
    resizes = str(raw_input.get("resize", "")).startswith("PIL")
    try:
        array = decode_image(file, pre["color_mode"], (height, width) if resizes else ())
    except DataError as e:
        raise InputFileError(e.message, "give a PNG or JPEG file") from None
    if array.shape[:2] != (height, width):
        raise InputFileError(f"{file}: {array.shape[1]}x{array.shape[0]} pixels, the model takes {width}x{height} "
                             "and this bundle does not resize", f"resize the image to {width}x{height} first")
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)


def render_predictions(results: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['file']}: " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"])
                     for r in results)
