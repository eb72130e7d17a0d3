"""Reference outputs for a bundle's raw inputs, through its documented preprocessing: what
`edge-distill predict` prints, and what an app's own pipeline must reproduce for the same inputs.
One entry per kind of bundle: image files or raw .npy samples for a classifier (`build`), strings for
a text bundle (`text`: class scores or the embedding), .npz feeds for a bundle of any inputs
(`optimize`). Each input gets its result or its error, and the rest go on. Needs numpy,
onnxruntime, Pillow for image files and tokenizers for text; no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.bundle.reader import Bundle, normalize, rebuild_hint
from edge_distill.config import BenchmarkConfig
from edge_distill.data.readers import IMAGE_SUFFIXES
from edge_distill.data.samples import decode_image
from edge_distill.errors import BundleError, DataError, EdgeDistillError, InputFileError
from edge_distill.files import regular_file
from edge_distill.sessions import open_session, run_session


def predict_inputs(bundle_path: Path, inputs: list[str], top: int = 3) -> list[dict[str, Any]]:
    """For each input, {"input": it, ...its prediction} or {"input": it, "error": one line}: a
    bad input never stops the others. The bundle itself is vouched for first (an error for all)."""
    bundle = Bundle.open_checked(bundle_path)
    if bundle.kind == "generation":
        from edge_distill.bundle.kinds.generation import open_generator

        open_generator(bundle_path)  # a damaged generator is named as such first
        raise BundleError(f"{bundle_path}: a text generator bundle: it continues a prompt rather than predicting",
                          f'edge-distill generate {bundle_path} "your prompt"')
    session = open_session(bundle.model_path, what=f"{bundle_path}: the model")
    predict_one = PREDICTORS[bundle.kind](bundle, session, top)
    results = []
    for item in inputs:
        try:
            results.append({"input": item, **predict_one(item)})
        except EdgeDistillError as e:
            results.append({"input": item, "error": e.message})
    return results


def _run(bundle: Bundle, session, feed: dict[str, np.ndarray], what: str) -> list[np.ndarray]:
    outputs = run_session(session, feed, f"{bundle.path}: the model on {what}", BenchmarkConfig.time_limit_s)
    if not all(np.isfinite(o).all() for o in outputs if np.issubdtype(o.dtype, np.floating)):
        raise InputFileError(f"{what}: the model's outputs are not finite (NaN or inf) for this input",
                             "check that the input is what the bundle documents")
    return outputs


def _top_classes(logits: np.ndarray, labels: list[str], top: int) -> list[dict[str, Any]]:
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    return [{"label": labels[k], "probability": float(probabilities[k])} for k in np.argsort(-probabilities)[:top]]


def _classifier_predictor(bundle: Bundle, session, top: int):
    """An image file or raw .npy sample -> the top classes and the logits."""
    manifest = bundle.manifest
    pre, raw_input = bundle.section("preprocessing"), manifest.get("raw_input", {})
    where, hint = bundle.path / "manifest.json", rebuild_hint(manifest)
    sample_shape = manifest["inputs"][0]["shape"][1:]
    if not all(isinstance(d, int) for d in sample_shape):
        raise BundleError(f"{where}: 'inputs[0].shape' is {manifest['inputs'][0]['shape']}: a classifier's sample "
                          "shape must be fixed, only its batch size may be a name", hint)
    classes = session.get_outputs()[0].shape[-1]
    if not isinstance(classes, int) or len(manifest["labels"]) != classes:
        raise BundleError(f"{where}: 'labels' holds {len(manifest['labels'])} name(s), the model scores "
                          f"{classes if isinstance(classes, int) else 'an unstated number of'} classes", hint)
    if str(raw_input.get("kind", "")).startswith("image file"):
        bundle.section("preprocessing", "color_mode")  # how an image file becomes the raw sample

    def predict(item: str) -> dict[str, Any]:
        file = Path(item)
        raw = read_raw(file, raw_input, pre, sample_shape)  # (C, ...) on the raw scale
        with np.errstate(over="ignore", invalid="ignore"):
            x = normalize(raw[None], pre)  # (1, C, ...)
        if not np.isfinite(x).all():
            raise InputFileError(f"{file}: holds NaN or inf, or values that overflow float32 once preprocessed",
                                 "give finite values on the raw scale the bundle documents")
        logits = _run(bundle, session, {manifest["inputs"][0]["name"]: x}, str(file))[0][0]  # (K,)
        return {"top": _top_classes(logits, manifest["labels"], top), "logits": [float(v) for v in logits]}

    return predict


def _text_predictor(bundle: Bundle, session, top: int):
    """A string -> its token ids and the class scores (a classifier) or the embedding, as an app
    computes them: tokenizer.json (bundle.reader.read_tokenizer), ids and a mask of ones, batch 1."""
    from importlib.util import find_spec

    from edge_distill.bundle.reader import read_tokenizer
    from edge_distill.bundle.reader import tokenizer_errors

    if find_spec("tokenizers") is None:
        raise InputFileError("predict on a text bundle needs the tokenizers package",
                             'pip install tokenizers (or pip install -e ".[text]")')
    text = bundle.section("text")
    with tokenizer_errors(f"{bundle.path / text['tokenizer']}"):
        tokenizer = read_tokenizer(bundle.path / text["tokenizer"], int(text["max_length"]))
    names = [spec["name"] for spec in bundle.manifest["inputs"]]

    def predict(item: str) -> dict[str, Any]:
        if not item.strip():
            raise InputFileError("an empty text", "give the text to classify or embed")
        with tokenizer_errors(repr(item[:40])):
            ids = np.array([tokenizer.encode(item).ids], np.int64)
        (output, *_) = _run(bundle, session, {names[0]: ids, names[1]: np.ones_like(ids)}, repr(item[:40]))
        result: dict[str, Any] = {"input_ids": ids[0].tolist()}
        if bundle.manifest["labels"]:
            return result | {"top": _top_classes(output[0], bundle.manifest["labels"], top),
                             "logits": [float(v) for v in output[0]]}
        return result | {"embedding": [float(v) for v in output[0]]}

    return predict


def _feeds_predictor(bundle: Bundle, session):
    """Samples in the form `optimize --calibration` takes (data/feeds.read_feeds: an .npz, or a
    folder of them, one array per model input of N samples at the manifest's fixed shapes) ->
    every output of every sample."""
    from edge_distill.data.feeds import read_feeds
    from edge_distill.onnx_model import load_onnx, model_tensors

    inputs, _ = model_tensors(load_onnx(bundle.model_path), str(bundle.model_path))
    fixed = {spec["name"]: tuple(spec.get("fixed_shape", spec["shape"])) for spec in bundle.manifest["inputs"]}
    names = [o.name for o in session.get_outputs()]

    def predict(item: str) -> dict[str, Any]:
        runs = [_run(bundle, session, feed, item) for feed in read_feeds(Path(item), inputs, fixed, what="")]
        return {"samples": len(runs), "outputs": {name: np.stack([run[k] for run in runs]).tolist()
                                                  for k, name in enumerate(names)}}

    return predict


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
    """One line per input: its top classes, its embedding's size, its outputs' shapes, or its error."""
    def line(r: dict[str, Any]) -> str:
        if "error" in r:
            return f"error: {r['error']}"
        if "top" in r:
            return ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"])
        if "embedding" in r:
            norm = float(np.linalg.norm(r["embedding"]))
            return f"embedding of {len(r['embedding'])} values, norm {norm:.4f}, {len(r['input_ids'])} tokens"
        return f"{r['samples']} sample(s): " + ", ".join(f"{name} {list(np.shape(value))}"
                                                          for name, value in r["outputs"].items())

    return "\n".join(f"{r['input']}: {line(r)}" for r in results)


# Each kind's predictor (but a generator's, which `generate` runs): (bundle, session, top) -> one input's prediction.
PREDICTORS = {"text": _text_predictor, "io": lambda bundle, session, top: _feeds_predictor(bundle, session),
              "classifier": _classifier_predictor}
