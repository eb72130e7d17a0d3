"""The int8 model and the model to ship: the profile's recipe, shipped as it is where nothing can
measure for the device (no device.host, and this host has another architecture), or else only if
measured faster than fp32 within the accuracy budget, with the fastest thread count; or
(quantize.search) the fastest candidate within the budget, which may be fp32 (or fp16 on a GPU)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.config import BenchmarkConfig, DeviceConfig, QuantizeConfig
from edge_distill.errors import QuantizeError

VARIANT_OF_KIND = {"fp32": "student_fp32", "fp16": "student_fp16"}  # every other kind is an int8 recipe


@dataclass
class Selection:
    int8_recipe: str  # the recipe of the int8 model written
    variant: str  # what ships: "student_int8", "student_fp32" or "student_fp16"
    recipe: str  # the shipped candidate's recipe name
    why: str
    search: dict[str, Any] = field(default_factory=dict)  # candidates, sensitivity, ... when searched

    def as_report(self) -> dict[str, Any]:
        return {"variant": self.variant, "recipe": self.recipe, "why": self.why, **self.search}


def measured_choice(fp32_model: Path, int8_model: Path, recipe: str, x_val: np.ndarray, y_val: np.ndarray,
                    cfg: QuantizeConfig, device: DeviceConfig, bench: BenchmarkConfig, selected_out: Path,
                    progress: Callable[[str], None]) -> Selection:
    """The profile's int8 model or the fp32 one, and the intra-op thread count, whichever runs
    fastest within the accuracy budget (quantize.max_accuracy_drop): each model at 1, 2, 4, ... up
    to the profile's threads, timed side by side in interleaved rounds on the device over SSH
    (device.host) or else here (this host has the device's architecture; counts up to its cores).
    int8 regardless with quantize.require_int8."""
    import onnx

    from edge_distill.device.remote import device_target, fastest as fastest_row, time_side_by_side
    from edge_distill.device.runner import predict_classes, thread_candidates, usable_threads
    from edge_distill.measure.harness import provider_specs

    target, providers, strict = device_target(device), provider_specs(bench), not bench.allow_cpu_fallback
    models = {"student_fp32": fp32_model, "student_int8": int8_model}
    accuracy = {name: float((predict_classes(path, x_val, providers, usable_threads(bench.threads),
                                             require_first=strict) == y_val).mean())
                for name, path in models.items()}
    counts = thread_candidates(bench.threads if target else usable_threads(bench.threads))
    where = target.destination if target else "this host"
    progress(f"timing fp32 and int8 side by side on {where} at {', '.join(map(str, counts))} thread(s) "
             f"({cfg.search_min_seconds:g} s each)")
    feed = {onnx.load(str(fp32_model), load_external_data=False).graph.input[0].name: x_val[: bench.batch_size]}
    timing = time_side_by_side(models, feed, counts, providers, cfg.search_min_seconds, target, strict, progress,
                               bench.time_limit_s)
    failed = next((row["error"] for row in timing["rows"] if row["variant"] == "student_int8" and "error" in row), None)
    if failed:
        raise QuantizeError(f"the int8 model does not run on {where}: {failed}")
    drop = 100.0 * (accuracy["student_fp32"] - accuracy["student_int8"])
    fastest = {name: fastest_row(timing["rows"], name) for name in models}
    figures = (f"int8 p50 {fastest['student_int8']['p50']:.4f} ms at {fastest['student_int8']['threads']} thread(s) "
               f"vs fp32 {fastest['student_fp32']['p50']:.4f} ms at {fastest['student_fp32']['threads']} on {where}, "
               f"val accuracy {accuracy['student_int8']:.4f} vs {accuracy['student_fp32']:.4f}")
    if cfg.require_int8:
        variant, why = "student_int8", f"int8 required (quantize.require_int8); {figures}"
    elif drop > cfg.max_accuracy_drop:
        variant, why = "student_fp32", f"int8 loses {drop:.2f} points (> quantize.max_accuracy_drop {cfg.max_accuracy_drop:g}); {figures}"
    elif fastest["student_int8"]["p50"] >= fastest["student_fp32"]["p50"]:
        variant, why = "student_fp32", f"int8 measured slower: {figures}"
    else:
        variant, why = "student_int8", f"int8 measured faster: {figures}"
    progress(f"shipping {variant} at {fastest[variant]['threads']} thread(s): {why}")
    shutil.copyfile(models[variant], selected_out)
    return Selection(recipe, variant, recipe if variant == "student_int8" else "fp32", why,
                     {"measured": {"accuracy": accuracy, "where": where, "host": timing["host"],
                                   "candidates": timing["rows"], "seconds_each": cfg.search_min_seconds},
                      "intra_op_threads": fastest[variant]["threads"]})


def quantize_and_select(fp32_model: Path, calibration: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        cfg: QuantizeConfig, device: DeviceConfig, bench: BenchmarkConfig, int8_out: Path,
                        selected_out: Path, progress: Callable[[str], None]) -> Selection:
    """Write the int8 model to `int8_out` and the model to ship to `selected_out`."""
    from edge_distill.export.quantize import QuantRecipe, quantize_model
    from edge_distill.export.search import search_quantization

    with tempfile.TemporaryDirectory() as tmp:
        if not cfg.search:
            recipe = QuantRecipe.from_config(cfg)
            progress(f"calibrating on {len(calibration)} training samples ({cfg.calibrate_method}), "
                     f"quantizing to int8 {recipe.name}")
            quantize_model(fp32_model, int8_out, calibration, recipe, Path(tmp), progress)
            if not device.is_host_arch and not device.host:
                shutil.copyfile(int8_out, selected_out)
                return Selection(recipe.name, "student_int8", recipe.name,
                                 f"the profile's recipe, not measured against fp32: this host is not the device's "
                                 f"architecture ({device.arch}) and no device.host (--remote) was named")
            return measured_choice(fp32_model, int8_out, recipe.name, x_val, y_val, cfg, device, bench, selected_out,
                                   progress)
        found = search_quantization(fp32_model, calibration, x_val, y_val, cfg, device, bench, Path(tmp), progress)
        if found["best_int8"] is None:
            raise QuantizeError("no int8 recipe could be built for this model", "see quantize.json candidates")
        winner = found["winner"]
        shutil.copyfile(found["best_int8"]["file"], int8_out)
        shutil.copyfile(winner["file"], selected_out)
        return Selection(found["best_int8"]["name"], VARIANT_OF_KIND.get(winner["kind"], "student_int8"),
                         winner["name"], found["why"], {
                             "candidates": [{k: v for k, v in row.items() if k != "file"} for row in found["rows"]],
                             "sensitivity": found["sensitivity"],
                             "reference_val_accuracy": found["reference_accuracy"],
                             "latency_measured_on": found["measured_on"],
                             "threads": found["threads"],
                         })
