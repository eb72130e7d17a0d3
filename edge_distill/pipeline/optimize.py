"""`edge-distill optimize MODEL.onnx`: a model trained elsewhere, made int8, measured and shipped
as a verified bundle, without a teacher or training. Its stages (pipeline/stages/optimize.py) run on
the one runner, so an unchanged rerun reads every step from the cache:

  optimize-simplify  fp32.onnx, simplify.json              export/simplify.simplified_or_source
  optimize-quantize  quantize.json (+ int8.onnx)           export/budget.quantize_within_budget
  optimize-select    selection.json                        export/selection.time_candidates, choose
  optimize-package   model.onnx, golden, manifest.json     bundle/writer (label_model, write_io_golden, io_manifest)

Inputs are read from the model (any number, float or integer; symbolic sizes fixed by --shape).
Calibration samples come from the user (one array per input name, data/feeds.py); the last fifth is
held out: int8 is judged on it (export/budget.Budget) by its fidelity to the float model (no labels
needed) or, given labels, by its accuracy against float's, and the golden vectors come from it.
Float and int8 are then timed side by side at each candidate thread count on the device over SSH
(--remote) or on this host where it has the device's architecture; the fastest within the budget
ships with its thread count. Where neither can measure for the device, the profile's recipe ships
as it is. The manifest says why either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.config import BuildConfig
from edge_distill.errors import DataError


@dataclass(frozen=True)
class OptimizeSettings:
    config: BuildConfig
    model: Path
    calibration: Path  # an .npz of samples, or a folder of them
    shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)  # --shape: symbolic sizes fixed
    min_snr_db: float = 20.0
    labels: str | None = None  # the array of class indices in the calibration file(s)

    def sample_params(self) -> dict[str, Any]:
        """What decides the samples and the budget, beside the files: part of every stage's key."""
        return {"shapes": {name: list(dims) for name, dims in sorted(self.shapes.items())},
                "min_snr_db": self.min_snr_db, "labels": self.labels,
                "max_accuracy_drop": self.config.quantize.max_accuracy_drop,
                "calibration_samples": self.config.quantize.calibration_samples}


@dataclass(frozen=True)
class Samples:
    """The model's declared tensors and the user's samples, split: calibration and held out."""
    inputs: list  # onnx_model.TensorSpec
    outputs: list
    fixed: dict[str, tuple[int, ...]]  # every input's concrete shape
    calibrate_on: Sequence[dict]
    held_out: Sequence[dict]
    budget: Any  # export.budget.Budget


def load_samples(settings: OptimizeSettings) -> Samples:
    """The model's inputs and outputs, the samples checked against them and split (the last fifth
    held out), and the budget int8 is judged by (held-out labels included where given)."""
    from edge_distill.data.feeds import load_feeds, load_labels, split_feeds
    from edge_distill.export.budget import MAX_HELD_OUT, Budget, class_scores_output
    from edge_distill.onnx_model import fix_shapes, model_tensors
    from edge_distill.onnx_model import load_onnx

    inputs, outputs = model_tensors(load_onnx(settings.model), str(settings.model))
    fixed = fix_shapes(inputs, settings.shapes, str(settings.model))
    feeds = load_feeds(settings.calibration, inputs, fixed)
    limits = {"most_calibration": settings.config.quantize.calibration_samples, "most_held_out": MAX_HELD_OUT}
    calibrate_on, held_out = split_feeds(feeds, **limits)
    budget = Budget(settings.min_snr_db, None, settings.config.quantize.max_accuracy_drop)
    if settings.labels is not None:
        classes = class_scores_output(outputs).dims[-1]
        per_sample = load_labels(settings.calibration, settings.labels, len(feeds))
        if per_sample.min() < 0 or per_sample.max() >= classes:
            raise DataError(f"--labels {settings.labels}: class indices {per_sample.min()}..{per_sample.max()}, the "
                            f"model scores {classes} classes (0..{classes - 1})",
                            "give class indices as the model numbers them")
        _, held_rows = split_feeds(np.arange(len(feeds)), **limits)  # the same rows as the held-out feeds
        budget = dataclasses.replace(budget, labels=per_sample[held_rows].reshape(-1))
    return Samples(inputs, outputs, fixed, calibrate_on, held_out, budget)


def render_summary(manifest: dict[str, Any], out: Path) -> str:
    """The table `edge-distill optimize` prints."""
    measurement = manifest["measurement"]
    lines = [f"{'variant':8s} {'threads':>7s} {'size':>10s} {'p50 ms':>9s} {'p90 ms':>9s}"]
    sizes = {row["variant"]: row["size_bytes"] for row in manifest["metrics"]}
    for row in measurement["candidates"]:
        timing = f"{row['p50']:9.4f} {row['p90']:9.4f}" if "p50" in row else f"  {row.get('error', '')}"
        lines.append(f"{row['variant']:8s} {row['threads']:7d} {sizes[row['variant']] / 1024:8.1f} KB {timing}")
    fidelity = next((r["fidelity"] for r in manifest["metrics"] if r["variant"] == "int8"), {})
    for name, f in fidelity.items():
        cosine = f", cosine {f['cosine']:.5f}" if "cosine" in f else ""
        agreement = f", top-1 agreement {f['top1_agreement']:.4f}" if "top1_agreement" in f else ""
        snr = "identical" if f["snr_db"] is None else f"{f['snr_db']:.1f} dB"
        lines.append(f"int8 vs float, {name}: SNR {snr}, max abs error {f['max_abs_error']:.3g}{cosine}{agreement}")
    lines += [f"Shipped: {manifest['model']['precision']} at {manifest['runtime']['intra_op_threads']} thread(s) "
              f"({manifest['model']['why']})", measurement["measured_on"], f"Bundle: {out}"]
    return "\n".join(lines)
