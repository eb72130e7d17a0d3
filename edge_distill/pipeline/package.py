"""The bundle an app team receives: model.onnx, manifest.json (schema in docs/manifest.md), README.md."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_distill import __version__
from edge_distill.config import PROFILE_SECTIONS, BuildConfig

SCHEMA_VERSION = 1
VERSIONED_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "numpy")


def write_bundle(config: BuildConfig, inputs: Mapping[str, Path], out: Path) -> None:
    model = out / "model.onnx"
    shutil.copyfile(inputs["student_int8.onnx"], model)
    reports = {name.removesuffix(".json"): json.loads(inputs[name].read_text()) for name in inputs if name.endswith(".json")}
    manifest = build_manifest(config, model, reports)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(render_model_card(manifest))


def build_manifest(config: BuildConfig, model: Path, reports: dict[str, Any]) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(model)).graph
    resolved = config.to_dict()
    dataset, benchmark = reports["dataset"], reports["benchmark"]
    budgets = config.budget
    int8 = next(m for m in benchmark["metrics"] if m["variant"] == "student_int8")
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "edge-distill", "version": __version__},
        "profile": {"name": config.profile, **{section: resolved[section] for section in PROFILE_SECTIONS}},
        "model": {
            "file": "model.onnx",
            "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "size_bytes": model.stat().st_size,
            "opset": reports["export"]["opset"],
            "precision": "int8",
            "quantization": reports["quantize"],
            "simplified": reports["simplify"],
        },
        "inputs": [_tensor_spec(t) for t in graph.input],
        "outputs": [
            {**_tensor_spec(t), "meaning": "unnormalized class scores (logits); softmax gives probabilities"}
            for t in graph.output
        ],
        "preprocessing": dataset["preprocessing"],
        "labels": dataset["labels"],
        "training": {
            "data": {k: dataset[k] for k in ("source", "split_sizes")},
            "seed": config.seed,
            "teacher": reports["teacher"],
            "distillation": reports["distill"],
            "export": reports["export"],
        },
        "versions": {name: metadata.version(name) for name in VERSIONED_LIBRARIES} | {"python": platform.python_version()},
        "metrics": benchmark["metrics"],
        "measurement": {k: benchmark[k] for k in ("host", "measured_on", "method")},
        "budgets": {
            "max_latency_ms": budgets.max_latency_ms or None,
            "max_size_bytes": budgets.max_size_bytes or None,
            "latency_p50_within": budgets.max_latency_ms == 0 or int8["latency_ms"]["p50"] <= budgets.max_latency_ms,
            "size_within": budgets.max_size_bytes == 0 or int8["size_bytes"] <= budgets.max_size_bytes,
        },
        "config": resolved,
    }


def _tensor_spec(value) -> dict[str, Any]:
    import onnx

    tensor = value.type.tensor_type
    shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
    return {"name": value.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}


def render_model_card(manifest: dict[str, Any]) -> str:
    """A short model card in plain words, from the manifest alone."""
    device = manifest["profile"]["device"]
    training = manifest["training"]
    quant = manifest["model"]["quantization"]
    pre = manifest["preprocessing"]
    spec = manifest["inputs"][0]
    lines = [
        f"# {device['name']} classifier ({len(manifest['labels'])} classes, int8 ONNX)",
        "",
        f"Built by edge-distill {manifest['generator']['version']} for **{device['description'] or device['name']}** "
        f"(profile `{manifest['profile']['name']}`).",
        "",
        "## What it does",
        f"Classifies a {'x'.join(str(d) for d in spec['shape'][1:])} ({pre['layout']}, {pre['color_mode']}) input "
        f"into one of: {', '.join(manifest['labels'])}.",
        "",
        "## How to feed it",
        f"- Input `{spec['name']}`: {spec['dtype']}, shape {spec['shape']} (the first axis is the batch).",
        f"- Preprocessing: `{pre['formula']}` with pixel_scale={pre['pixel_scale']:g}, "
        f"mean={pre['mean']}, std={pre['std']}.",
        f"- Output `{manifest['outputs'][0]['name']}`: one logit per class in the order of `labels` in manifest.json; "
        "the highest logit is the prediction.",
        "",
        "## How it was made",
        f"- Data: {training['data']['source']} (split sizes {training['data']['split_sizes']}, seed {training['seed']}).",
        f"- Teacher: {training['teacher']['source']}, {training['teacher']['params']:,} parameters, "
        f"test accuracy {training['teacher']['test_accuracy']:.4f}.",
        f"- Student: {training['distillation']['student']}, {training['distillation']['params']:,} parameters, "
        f"{training['distillation']['method']} with T={training['distillation']['temperature']:g}, "
        f"alpha={training['distillation']['alpha']:g}.",
        f"- Quantization: static int8 {quant['format']}, activations {quant['activation_type']}, weights "
        f"{quant['weight_type']}, per-channel {quant['per_channel']}, {quant['calibrate_method']} calibration on "
        f"{quant['calibration_samples']} training samples.",
        "",
        "## Measured figures",
        manifest["measurement"]["measured_on"],
        "",
        metrics_table(manifest["metrics"], markdown=True),
        "",
        f"Latency: batch {manifest['measurement']['method']['batch_size']}, "
        f"{manifest['measurement']['method']['threads']} thread(s), {manifest['measurement']['method']['warmup_runs']} "
        f"warm-up and {manifest['measurement']['method']['timed_runs']} timed runs on "
        f"{manifest['measurement']['method']['providers'][0]}.",
        "",
        "## Known limits",
        "- Accuracy is measured on a held-out split of the training data's distribution; inputs unlike it "
        "(other scanners, cameras, handwriting styles) will score lower.",
        "- Latency figures from a host that is not the device are indicative only.",
        "",
        f"`model.onnx` sha256: `{manifest['model']['sha256']}`",
        "",
    ]
    return "\n".join(lines)


def metrics_table(metrics: list[dict[str, Any]], markdown: bool = False) -> str:
    """The build's summary table, as plain text for a terminal or as Markdown."""
    header = ["variant", "params", "size", "accuracy", "agree", "cold ms", "p50 ms", "p90 ms", "p99 ms"]
    rows = [
        [
            m["variant"],
            f"{m['params']:,}",
            _human_size(m["size_bytes"]),
            f"{m['accuracy']:.4f}",
            f"{m['teacher_agreement']:.4f}",
            *(f"{m['latency_ms'][k]:.3f}" for k in ("cold_start", "p50", "p90", "p99")),
        ]
        for m in metrics
    ]
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                     for r in [header, *rows])


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024**2:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024**2:.1f} MB"
