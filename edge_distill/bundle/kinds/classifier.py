"""The classifier kind (`edge-distill build`): real test images or signals with their logits as
golden vectors (`verify` requires the same top-1 and logits within the tolerance), the manifest
with the preprocessing an app must reproduce, the reports, and a model card."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_distill.bundle.report import write_reports
from edge_distill.bundle.writer import (GOLDEN_ATOL_SHARE, finish_bundle, model_metadata, precision_of, profile_section,
                                        with_envelope)
from edge_distill.config import BuildConfig
from edge_distill import __version__
from edge_distill.hashing import sha256

# Hashed in manifest["files"] with README.md.
BUNDLE_FILES = ("model.onnx", "golden.npz", "golden.json", "report.json", "report.csv", "report.md", "report.html")
GOLDEN_COUNT = 16


def write_bundle(config: BuildConfig, inputs: Mapping[str, Path], out: Path) -> None:
    """The classifier bundle in `out` from the build's stage files (`inputs`)."""
    from edge_distill.data.dataset import Dataset

    reports = {name.removesuffix(".json"): json.loads(inputs[name].read_text()) for name in inputs if name.endswith(".json")}
    model = out / "model.onnx"
    model.write_bytes(inputs["shipped_model.onnx"].read_bytes())
    dataset = Dataset.load(inputs["dataset.npz"])
    golden = write_golden(model, dataset.x["test"], out, dataset.preprocessing, dataset.raw_input)
    manifest = with_envelope(build_manifest(config, model, reports, golden))  # the reports show its versions
    write_reports(manifest, out, metrics_table(manifest["metrics"], markdown=True))
    finish_bundle(manifest, out, BUNDLE_FILES, render_card)


def write_golden(model: Path, x_test, out: Path, preprocessing: dict | None = None,
                 raw_input: dict | None = None) -> dict[str, Any]:
    """Real test inputs with this machine's outputs, as .npz and as JSON, for `verify` anywhere; with
    the preprocessing, also the same samples before it (`raw_inputs`: the pixels an app reads)."""
    import numpy as np

    from edge_distill.export.onnx_io import run_onnx

    logits = next(iter(run_onnx(model, x_test).values()))  # (N, K)
    atol = GOLDEN_ATOL_SHARE * float(np.abs(logits).max())
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    # Samples whose decision no allowed deviation can flip, in test-split order.
    clear = np.flatnonzero(margin > 4 * atol)
    picked = clear[:GOLDEN_COUNT] if len(clear) >= GOLDEN_COUNT else np.argsort(-margin)[:GOLDEN_COUNT]
    arrays = {"inputs": x_test[picked], "logits": logits[picked], "top1": logits[picked].argmax(axis=1).astype(np.int64)}
    if preprocessing:
        arrays["raw_inputs"] = raw_samples(arrays["inputs"], preprocessing, raw_input or {})
    np.savez(out / "golden.npz", **arrays)
    (out / "golden.json").write_text(json.dumps({name: a.tolist() for name, a in arrays.items()}) + "\n")
    return {
        "npz": "golden.npz",
        "json": "golden.json",
        "count": len(picked),
        "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.name} for name, a in arrays.items()},
        "tolerance": {"logits_atol": atol, "top1": "exact",
                      "why": f"{GOLDEN_ATOL_SHARE:.1%} of the largest |logit|: int8 kernels differ slightly across CPUs"},
        "source": "test-split samples; outputs from ONNX Runtime's CPU provider on the build machine"
                  + ("; raw_inputs: the same samples before preprocessing" if preprocessing else ""),
    }


def raw_samples(x, preprocessing: dict, raw_input: dict):
    """Preprocessed samples back on the raw scale: (x * std[c] + mean[c]) / pixel_scale, rounded to
    whole values where the raw input is integer (pixels)."""
    import numpy as np

    per_channel = (slice(None),) + (None,) * (x.ndim - 2)
    raw = (x.astype(np.float64) * np.asarray(preprocessing["std"])[per_channel]
           + np.asarray(preprocessing["mean"])[per_channel]) / preprocessing["pixel_scale"]
    if "int" in raw_input.get("dtype", ""):  # uint8 pixels, the digits' whole values, integer arrays
        raw = np.rint(raw)
    return raw.astype(np.float32)


def build_manifest(config: BuildConfig, model: Path, reports: dict[str, Any], golden: dict[str, Any]) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(model)).graph
    resolved = config.to_dict()
    dataset, benchmark = reports["dataset"], reports["benchmark"]
    budgets = config.budget
    shipped = next(m for m in benchmark["metrics"] if m["variant"] == benchmark["shipped_variant"])
    return {
        "generator": {"name": "edge-distill", "version": __version__, "command": "build"},
        "build_id": model_metadata(model)["build_id"],
        "profile": profile_section(config),
        "model": {
            "file": "model.onnx",
            "sha256": sha256(model),
            "size_bytes": model.stat().st_size,
            "opset": reports["export"]["opset"],
            "precision": precision_of(benchmark["shipped_variant"]),
            "variant": benchmark["shipped_variant"],
            "quantization": reports["quantize"],
            "simplified": reports["simplify"],
        },
        "runtime": runtime_threads(reports["quantize"]["selected"], config),
        "inputs": [_tensor_spec(t) for t in graph.input],
        "outputs": [
            {**_tensor_spec(t), "meaning": "unnormalized class scores (logits); softmax gives probabilities"}
            for t in graph.output
        ],
        "preprocessing": dataset["preprocessing"],
        "raw_input": dataset.get("raw_input", {}),
        "labels": dataset["labels"],
        "golden": golden,
        "training": {
            "data": {k: dataset[k] for k in ("source", "split_sizes", "split") if k in dataset},
            "seed": config.seed,
            "teacher": reports["teacher"],
            "distillation": reports["distill"],
            "export": reports["export"],
        },
        "metrics": benchmark["metrics"],
        "warnings": benchmark.get("warnings", []),
        "measurement": {k: benchmark[k] for k in ("host", "measured_on", "method", "date") if k in benchmark},
        "budgets": {
            "max_latency_ms": budgets.max_latency_ms or None,
            "max_size_bytes": budgets.max_size_bytes or None,
            # Judged only from figures measured on the device's architecture: None = not judged.
            "latency_p50_within": (budgets.max_latency_ms == 0 or shipped["latency_ms"]["p50"] <= budgets.max_latency_ms)
            if benchmark["host"]["arch"] == config.device.arch else None,
            "size_within": budgets.max_size_bytes == 0 or shipped["size_bytes"] <= budgets.max_size_bytes,
        },
        "config": resolved,
    }


def runtime_threads(selected: dict[str, Any], config: BuildConfig) -> dict[str, Any]:
    """The intra-op thread count to run the model with (SessionOptions.intra_op_num_threads; `bench`
    uses it): the fastest measured when the quantize stage timed the candidates, else the profile's."""
    if "intra_op_threads" in selected:
        measured = selected["measured"]
        counts = sorted({row["threads"] for row in measured["candidates"]})
        return {"intra_op_threads": selected["intra_op_threads"],
                "why": f"fastest of {', '.join(map(str, counts))} thread(s) measured on {measured['where']}"}
    return {"intra_op_threads": config.benchmark.threads, "why": "the profile's benchmark.threads"}


def _tensor_spec(value) -> dict[str, Any]:
    import onnx

    tensor = value.type.tensor_type
    shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
    return {"name": value.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}


def render_card(manifest: dict[str, Any]) -> str:
    """A short model card in plain words, from the manifest alone."""
    device = manifest["profile"]["device"]
    training = manifest["training"]
    quant = manifest["model"]["quantization"]
    pre = manifest["preprocessing"]
    spec = manifest["inputs"][0]
    lines = [
        f"# {device['name']} classifier ({len(manifest['labels'])} classes, {manifest['model']['precision']} ONNX)",
        "",
        f"Built by edge-distill {manifest['generator']['version']} for **{device['description'] or device['name']}** "
        f"(profile `{manifest['profile']['name']}`).",
        "",
        "## What it does",
        f"Classifies a {'x'.join(str(d) for d in spec['shape'][1:])} ({pre['layout']}, {pre['color_mode']}) input "
        f"into one of: {', '.join(manifest['labels'])}.",
        "",
        "## Intended use",
        f"On-device classification of inputs like the training data ({training['data']['source']}), on "
        f"{device['description'] or device['name']} or a CPU like it. Not for inputs from another distribution "
        "without measuring its accuracy there first.",
        "",
        "## How to feed it",
        f"- Input `{spec['name']}`: {spec['dtype']}, shape {shape_text(spec['shape'])} (the first axis is the batch).",
        *raw_input_lines(manifest.get("raw_input", {}), pre),
        f"- Preprocessing: `{pre['formula']}` with pixel_scale={pre['pixel_scale']:g}, "
        f"mean=[{numbers_text(pre['mean'])}], std=[{numbers_text(pre['std'])}].",
        f"- Output `{manifest['outputs'][0]['name']}`: one logit per class in the order of `labels` in manifest.json; "
        "the highest logit is the prediction.",
        "",
        "## How it was made",
        f"- Data: {training['data']['source']} ({splits_text(training['data']['split_sizes'])}; split "
        f"{training['data'].get('split', 'random')}). License: {data_license(training['data']['source'])}.",
        f"- Teacher: {training['teacher']['source']} ({training['teacher']['format']}), "
        f"{training['export']['teacher']['params']:,} parameters, test accuracy {training['teacher']['test_accuracy']:.4f}.",
        f"- Student: {training['distillation']['student']}, {training['distillation']['params']:,} parameters, "
        f"{'; '.join(training['distillation']['methods'])} with T={training['distillation']['temperature']:g}, "
        f"alpha={training['distillation']['alpha']:g}, on {training['distillation']['samples']['labeled']:,} labeled and "
        f"{training['distillation']['samples']['transfer']:,} unlabeled transfer samples.",
        f"- Quantization: int8 recipe {quant['int8_recipe']} (format-types-per-channel-calibration), calibrated on "
        f"{quant['calibration_samples']} training samples. Shipped: {manifest['model']['variant']} "
        f"({quant['selected']['recipe']}): {quant['selected']['why']}.",
        "",
        *search_report(quant["selected"]),
        "## Measured figures",
        manifest["measurement"]["measured_on"],
        "",
        metrics_table(manifest["metrics"], markdown=True),
        "",
        "Latency: batch {batch_size}, {threads} thread(s), {warmup_runs} warm-up runs, then at least {timed_runs} "
        "timed runs and {min_seconds:g} s on {provider}; p50/p90/p99 are percentiles of those runs.".format(
            provider=manifest["measurement"]["method"]["providers"][0], **manifest["measurement"]["method"]),
        "",
        *warnings_section(manifest.get("warnings", [])),
        "## Known limits",
        "- Accuracy is measured on a held-out split of the training data's distribution; inputs unlike it "
        "(other scanners, cameras, handwriting styles) will score lower.",
        "- Latency figures from a host that is not the device are indicative only.",
        "- Teacher: " + ("trained by this build from the data above, no outside weights." if training["teacher"].get(
            "trained_here") else "brought by the user; its license is its source's."),
        "",
        f"`model.onnx` sha256: `{manifest['model']['sha256']}`",
        "",
    ]
    return "\n".join(lines)


def shape_text(shape: list) -> str:
    """["batch", 1, 8, 8] -> "batch x 1 x 8 x 8"."""
    return " x ".join(str(d) for d in shape)


def numbers_text(values: list[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def splits_text(sizes: dict[str, int]) -> str:
    """{"test": 360, "train": 1078, ...} -> "train 1,078, val 270, test 360, transfer 0"."""
    order = ("train", "val", "test", "transfer")
    return ", ".join(f"{split} {sizes[split]:,}" for split in sorted(sizes, key=lambda s: (s not in order, order.index(s)
                                                                                           if s in order else 0, s)))


def raw_input_lines(raw: dict[str, Any], pre: dict[str, Any]) -> list[str]:
    """What an app feeds before preprocessing, step by step, from the manifest's raw_input."""
    if not raw:
        return [f"- Raw input: values on the training data's own scale, channels first ({pre['layout']})."]
    low, high = (raw["range"] + [None, None])[:2] if raw.get("range") else (None, None)
    lines = [f"- Raw input: {raw['kind']}, {raw['dtype']}"
             + (f" from {low:g} to {high:g}" if low is not None else "") + f"; {raw['polarity']}."]
    steps = [(name, raw[key]) for name, key in (("colour", "color"), ("resize", "resize"),
                                                ("channel order", "channel_order")) if key in raw]
    lines += [f"  - {name}: {value}" for name, value in steps]
    lines.append("  - `golden.npz` / `golden.json` hold `raw_inputs`: test samples before this preprocessing, "
                 "with the model inputs and outputs they must give.")
    return lines


def data_license(source: str) -> str:
    if source == "digits":
        return "UCI ML hand-written digits (via scikit-learn), CC BY 4.0"
    return "not known to edge-distill: the license of your data applies"


def warnings_section(warnings: list[dict[str, str]]) -> list[str]:
    if not warnings:
        return []
    return ["## Warnings about these figures", "", *[f"- {w['message']}" for w in warnings], ""]


def search_report(selected: dict[str, Any]) -> list[str]:
    """Model-card lines for a quantization search: every candidate, and the sensitivity ranking."""
    if "candidates" not in selected:
        return []
    lines = ["## Quantization search",
             f"Validation accuracy of fp32: {selected['reference_val_accuracy']:.4f}; drop in percentage points. "
             f"Latency {selected['latency_measured_on'][0].lower()}{selected['latency_measured_on'][1:]}", "",
             "| recipe | val accuracy | drop | p50 ms | size | |", "|---|---|---|---|---|---|"]
    for row in selected["candidates"]:
        if row["error"]:
            lines.append(f"| {row['name']} | - | - | - | - | failed: {row['error'][:80]} |")
        else:
            mark = "**shipped**" if row["name"] == selected["recipe"] else ""
            lines.append(f"| {row['name']} | {row['accuracy']:.4f} | {row['accuracy_drop']:+.2f} | {row['p50_ms']:.4f} "
                         f"| {_human_size(row['size_bytes'])} | {mark} |")
    for recipe, ranked in selected["sensitivity"].items():
        lines += ["", f"Most sensitive layers of {recipe} (SNR in dB, lower is worse):", "",
                  "| node | op | activation | cumulative | weight |", "|---|---|---|---|---|"]
        lines += [f"| {r['node']} | {r['op_type']} | {r['activation_snr_db']} | {r['cumulative_snr_db']} | "
                  f"{r['weight_snr_db']} |" for r in ranked[:8]]
    return lines + [""]


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


