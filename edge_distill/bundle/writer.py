"""The envelope every bundle kind is written in (bundle/kinds/: classifier, io, text, generation):
model.onnx labelled with edge-distill's metadata, the profile section, and `finish_bundle` (the
kind's README.md, the library versions, every file's hash, the manifest checked against the schema
every reader holds it to: docs/manifest.md). `bundle/reader` reads it and `bundle/verify` checks it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_distill import __version__
from edge_distill.bundle.reader import METADATA_PREFIX, SCHEMA_VERSION
from edge_distill.config import PROFILE_SECTIONS, BuildConfig
from edge_distill.hashing import library_versions, sha256

# Every kind's golden tolerance: this share of each float output's largest |value| (a classifier's
# logits, an io output, a generator's first-step logits). int8 and int4 kernels differ across CPUs
# (VNNI, NEON dot product, reduce_range, accuracy level 4): a couple of output quantization steps.
# A classifier's golden samples are chosen with a top-1 margin well above it.
GOLDEN_ATOL_SHARE = 0.025


def finish_bundle(manifest: dict[str, Any], out: Path, files: tuple[str, ...],
                  card: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """The end of every bundle kind's writer: the envelope's fields (`with_envelope`), README.md
    from the kind's `card`, `files` (each of `files` and README.md with its hash and size, all the
    bundle holds), and the manifest written. Returns it."""
    manifest = with_envelope(manifest)
    (out / "README.md").write_text(card(without_local_paths(manifest)))  # the card travels with the bundle too
    manifest["files"] = {name: {"sha256": sha256(out / name), "size_bytes": (out / name).stat().st_size}
                         for name in (*files, "README.md")}
    return write_manifest(manifest, out / "manifest.json")


def with_envelope(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` with what every kind's has: the schema version first, and the library versions
    (hashing.LIBRARIES, the cache key's list) last."""
    return {"schema_version": SCHEMA_VERSION, **manifest, "versions": library_versions()}


def write_manifest(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    """The one way a manifest is written, by every command: local paths reduced to their last part
    (a bundle sent to another team does not carry /home/<user>/...; files are known by name and
    hash), and the result checked against the schema every reader holds it to. Returns it."""
    from edge_distill.bundle.reader import check_manifest_shape

    public = without_local_paths(manifest)
    check_manifest_shape(public, path)
    path.write_text(json.dumps(public, indent=2) + "\n")
    return public


def without_local_paths(value: Any) -> Any:
    """`value` with every string that is an absolute path, or one starting at the home folder,
    replaced by its last part."""
    if isinstance(value, dict):
        return {key: without_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_local_paths(item) for item in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or value[1:3] in (":\\", ":/")) and "\n" not in value:
        return Path(value).name or value
    return value


def embed_metadata(src: Path, dst: Path, config: BuildConfig, dataset: dict[str, Any], variant: str) -> None:
    """Put the facts an app needs into the .onnx itself (metadata_props and doc strings).

    The build id names the model, not its measurements: the same weights and labels for the same
    device give the same id, however often the benchmark reruns.
    """
    import onnx

    model = onnx.load(str(src))
    pre = dataset["preprocessing"]
    build_id = hashlib.sha256(
        src.read_bytes() + json.dumps([dataset, config.profile, __version__], sort_keys=True).encode()
    ).hexdigest()[:16]
    props = {
        "labels": json.dumps(dataset["labels"]),
        "preprocessing": json.dumps(pre, sort_keys=True),
        "input_layout": pre["layout"],
        "profile": config.profile,
        "device": config.device.description or config.device.name,
        "generator_version": __version__,
        "build_id": build_id,
        "schema_version": str(SCHEMA_VERSION),
        "precision": precision_of(variant),
    }
    onnx.helper.set_model_props(model, {METADATA_PREFIX + key: value for key, value in props.items()})
    model.doc_string = f"{props['precision']} classifier built by edge-distill {__version__} for {props['device']} (build {build_id})"
    model.graph.input[0].doc_string = (
        f"{pre['layout']} float32, {pre['color_mode']}; x = (pixel * {pre['pixel_scale']:g} - mean[c]) / std[c], "
        f"mean={pre['mean']}, std={pre['std']}"
    )
    model.graph.output[0].doc_string = f"logits, one per class in this order: {', '.join(dataset['labels'])}"
    onnx.save(model, str(dst))


def precision_of(variant: str) -> str:
    """"student_int8" -> "int8"."""
    return variant.rsplit("_", 1)[-1]


def model_metadata(model: Path) -> dict[str, str]:
    """The edge_distill.* metadata_props of a model, without the prefix."""
    import onnx

    props = onnx.load(str(model), load_external_data=False).metadata_props
    return {p.key.removeprefix(METADATA_PREFIX): p.value for p in props if p.key.startswith(METADATA_PREFIX)}


def profile_section(config: BuildConfig) -> dict[str, Any]:
    """The manifest's `profile`, one form for every bundle: the name and the device, export,
    quantize, benchmark and budget sections as used (`bench` times with its benchmark settings;
    `verify --emulate` runs on its device's core)."""
    resolved = config.to_dict()
    return {"name": config.profile, **{section: resolved[section] for section in PROFILE_SECTIONS}}


def label_model(src: Path, dst: Path, **facts: str) -> None:
    """The shipped model with edge-distill's metadata (no labels unless `facts` names them as
    JSON, the generator's version and `facts`) added to the model's own (kept)."""
    import onnx

    from edge_distill.bundle.reader import METADATA_PREFIX

    model = onnx.load(str(src))
    ours = {"labels": "[]", **facts, "generator_version": __version__}
    kept = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in ours.items():
        model.metadata_props.add(key=METADATA_PREFIX + key, value=value)
    onnx.save(model, str(dst))


