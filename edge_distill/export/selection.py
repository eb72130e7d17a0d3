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
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_distill.config import BenchmarkConfig, DeviceConfig, QuantizeConfig
from edge_distill.errors import QuantizeError
from edge_distill.measure.speed import quickest_beyond_noise

if TYPE_CHECKING:
    from edge_distill.export.budget import Judgement

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
    """The build's profile int8 model or the fp32 one, and the intra-op thread count, by the same
    rule `optimize` ships by (time_candidates, then choose): the quickest beyond noise within the
    accuracy budget (quantize.max_accuracy_drop on the validation split), each model at 1, 2, 4, ...
    up to the profile's threads, timed side by side in interleaved rounds on the device over SSH
    (device.host) or else here (this host has the device's architecture; counts up to its cores).
    int8 regardless with quantize.require_int8."""
    import onnx

    from edge_distill.targets.remote import fastest as fastest_row
    from edge_distill.device.runner import predict_classes, usable_threads
    from edge_distill.export.budget import Judgement
    from edge_distill.measure.harness import provider_specs

    models = {"fp32": fp32_model, "int8": int8_model}
    accuracy = {f"student_{name}": float((predict_classes(path, x_val, provider_specs(bench), usable_threads(bench.threads),
                                                          require_first=not bench.allow_cpu_fallback) == y_val).mean())
                for name, path in models.items()}
    drop = 100.0 * (accuracy["student_fp32"] - accuracy["student_int8"])
    judgement = Judgement(drop <= cfg.max_accuracy_drop, -drop,
                          f"val accuracy {accuracy['student_int8']:.4f} vs float {accuracy['student_fp32']:.4f}, "
                          f"{drop:+.2f} points lost ({'within' if drop <= cfg.max_accuracy_drop else 'over'} "
                          f"quantize.max_accuracy_drop {cfg.max_accuracy_drop:g})", {}, None)
    feed = {onnx.load(str(fp32_model), load_external_data=False).graph.input[0].name: x_val[: bench.batch_size]}
    timing = time_candidates(models, feed, bench, device, cfg.search_min_seconds, progress)
    failed = next((row["error"] for row in timing["rows"] if row["variant"] == "int8" and "error" in row), None)
    if failed:
        raise QuantizeError(f"the int8 model does not run on {timing['where']}: {failed}")
    if cfg.require_int8:
        best = fastest_row(timing["rows"], "int8")
        precision, threads = "int8", best["threads"]
        why = f"int8 required (quantize.require_int8): p50 {best['p50']:.4f} ms at {threads} thread(s); {judgement.summary}"
    else:
        precision, threads, why = choose(judgement, timing, device.arch)
    variant = f"student_{precision}"
    progress(f"shipping {variant} at {threads} thread(s): {why}")
    shutil.copyfile(models[precision], selected_out)
    return Selection(recipe, variant, recipe if precision == "int8" else "fp32", why,
                     {"measured": {"accuracy": accuracy, "where": timing["where"], "host": timing["host"],
                                   "candidates": timing["rows"], "seconds_each": cfg.search_min_seconds},
                      "intra_op_threads": threads})


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


def time_candidates(models: dict[str, Path], feed: dict[str, np.ndarray], bench: BenchmarkConfig, device: DeviceConfig,
                    seconds: float, progress: Callable[[str], None]) -> dict[str, Any]:
    """Float and int8 timed side by side (targets.remote.time_side_by_side), `seconds` each: on the
    device over SSH, each at 1, 2, 4, ... up to the profile's threads; else here, at those counts
    that fit this host's cores where it has the device's architecture, or at the profile's count
    only, for the record, where it has not. {"where", "for_device": whether the figures stand for
    the device, "host", "threads", "rows"}."""
    from edge_distill.targets.remote import device_target, time_side_by_side
    from edge_distill.device.runner import thread_candidates, usable_threads
    from edge_distill.measure.harness import provider_specs
    from edge_distill.sessions import onnxruntime_errors

    remote = device_target(device)
    for_device = remote is not None or device.is_host_arch
    most = bench.threads if remote is not None else usable_threads(bench.threads)
    counts = thread_candidates(most) if for_device else [most]
    where = remote.destination if remote is not None else "this host"
    progress(f"timing {' and '.join(models)} side by side on {where} at {', '.join(map(str, counts))} thread(s) "
             f"({bench.providers[0]}, {seconds:g} s each)")
    with onnxruntime_errors(f"timing {' and '.join(models)}"):
        timing = time_side_by_side(models, feed, counts, provider_specs(bench), seconds, remote,
                                   not bench.allow_cpu_fallback, progress, bench.time_limit_s)
    return timing | {"for_device": for_device, "threads": counts}


def choose(judgement: Judgement, timing: dict, device_arch: str) -> tuple[str, int, str]:
    """(precision "int8" | "fp32", intra-op threads, why): the fastest candidate the budget allows
    where the timing stands for the device; else the profile's int8 recipe when within budget."""
    from edge_distill.targets.remote import fastest

    rows = [row for row in timing["rows"] if "p50" in row]
    int8_error = next((row["error"] for row in timing["rows"] if row["variant"] == "int8" and "error" in row), None)
    allowed = [row for row in rows if row["variant"] == "fp32" or (judgement.ok and int8_error is None)]

    def shown(row: dict) -> str:
        return f"p50 {row['p50']:.4f} ms at {row['threads']} thread(s)"

    if not judgement.ok:
        over = judgement.summary if judgement.summary.startswith("no int8 model") else \
            f"int8 over budget: {judgement.summary}"
    if not timing["for_device"]:
        threads = timing["threads"][-1]
        if not judgement.ok:
            return "fp32", threads, over
        if int8_error:
            return "int8", threads, (f"the profile's int8 recipe ({judgement.summary}); it does not run on this host "
                                     f"({int8_error}) and was not measured on the device ({device_arch})")
        return "int8", threads, (f"the profile's int8 recipe ({judgement.summary}); its speed was not measured on the "
                                 f"device ({device_arch}): on this host int8 {shown(fastest(rows, 'int8'))} vs float "
                                 f"{shown(fastest(rows, 'fp32'))}")
    if not allowed:
        raise QuantizeError(f"neither float nor int8 ran on {timing['where']}: "
                            + "; ".join(f"{row['variant']}: {row['error']}" for row in timing["rows"] if "error" in row))
    best, quickest = quickest_beyond_noise(allowed)
    where = timing["where"]
    tie = "" if best is quickest else (
        f" (tied with {quickest['variant']} {shown(quickest)}, which was not quicker in every interleaved round: "
        "the simpler variant and fewer threads win a tie)")
    if best["variant"] == "int8":
        float_best = fastest(rows, "fp32")
        versus = f"{float_best['p50'] / best['p50']:.2f}x faster than float's best ({shown(float_best)})" \
            if float_best else "float did not run"
        return "int8", best["threads"], f"int8 {shown(best)} on {where}, {versus}{tie}; {judgement.summary}"
    if not judgement.ok:
        return "fp32", best["threads"], f"{over}; float {shown(best)} on {where}{tie}"
    if int8_error:
        return "fp32", best["threads"], f"int8 does not run on {where}: {int8_error}"
    int8_best = fastest(rows, "int8")
    if quickest["variant"] == "int8":
        return "fp32", best["threads"], (f"int8 not measurably faster than float on {where}: its best "
                                         f"{shown(int8_best)} vs float {shown(best)}{tie}; {judgement.summary}")
    return "fp32", best["threads"], (f"int8 measured slower than float on {where}: its best {shown(int8_best)} "
                                     f"vs float {shown(best)}{tie}; {judgement.summary}")
