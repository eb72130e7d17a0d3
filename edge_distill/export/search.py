"""Quantization chosen by measurement: build every recipe the device can run, measure validation
accuracy, repair over-budget recipes by keeping their most sensitive nodes in float, time all of
them in interleaved rounds on the profile's provider and threads, and pick the fastest within the
accuracy budget."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_distill.measure.harness import measurement_note, provider_specs
from edge_distill.device.runner import compare_latency, describe_host, predict_classes, usable_threads
from edge_distill.config import BenchmarkConfig, DeviceConfig, QuantizeConfig
from edge_distill.errors import EdgeDistillError, QuantizeError, describe
from edge_distill.export.quantize import (
    QuantRecipe,
    StreamedCalibration,
    apply_recipe,
    check_node_names,
    prepare,
)
from edge_distill.export.sensitivity import layer_sensitivity, sensitivity_table

INT8_KINDS = ("static", "dynamic")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
REPAIRED_PER_SEARCH = 3  # over-budget recipes, most accurate first, that get the per-node fallback


def candidate_recipes(cfg: QuantizeConfig, device: DeviceConfig, providers: list[str]) -> list[QuantRecipe]:
    """fp32, static int8 in both formats x per-channel x (U8S8, S8S8) x calibration methods, with
    reduce_range where an x86 CPU lacks VNNI, dynamic int8, and fp16 on GPU providers."""
    vnni = {"avx512_vnni", "avx_vnni", "amx"} & set(device.isa)
    reduce_ranges = (False, True) if device.arch == "x86_64" and not vnni else (False,)
    excluded = tuple(cfg.exclude_nodes)
    recipes = [QuantRecipe("fp32")]
    for fmt in ("QDQ", "QOperator"):
        for per_channel in (True, False):
            for activation_type in ("QUInt8", "QInt8"):
                for method in ("MinMax", "Entropy", "Percentile"):
                    for reduce_range in reduce_ranges:
                        recipes.append(QuantRecipe("static", fmt, per_channel, activation_type, "QInt8", method,
                                                   reduce_range, excluded))
    # ORT's dynamic Conv (ConvInteger) takes uint8 weights only; MatMulInteger takes both.
    recipes.append(QuantRecipe("dynamic", weight_type="QUInt8", per_channel=False, exclude_nodes=excluded))
    if any(p in GPU_PROVIDERS for p in providers):
        recipes.append(QuantRecipe("fp16"))
    return recipes


def select_recipe(rows: list[dict], max_drop: float, require_int8: bool) -> tuple[dict, dict | None, str]:
    """(winner, best int8 row, why). The winner is the quickest beyond noise among rows within the
    accuracy budget (fp32 always is): measure/speed.quickest_beyond_noise on their interleaved
    rounds, a tie to fp32, then to the lower p50. The best int8 row is the fastest int8 one within
    budget, else the most accurate int8 one, for the report."""
    from edge_distill.measure.speed import quickest_beyond_noise

    measured = [r for r in rows if r.get("error") is None]
    within = [r for r in measured if r["accuracy_drop"] <= max_drop + 1e-9]
    int8 = [r for r in measured if r["kind"] in INT8_KINDS]
    int8_within = [r for r in within if r["kind"] in INT8_KINDS]
    if not within:
        raise QuantizeError("no candidate could be measured", "see the errors in quantize.json")
    if not int8_within and require_int8:
        closest = min(int8, key=lambda r: r["accuracy_drop"], default=None)
        detail = f"; the closest, {closest['name']}, drops {closest['accuracy_drop']:.2f} points" if closest else ""
        raise QuantizeError(
            f"no int8 recipe stays within quantize.max_accuracy_drop = {max_drop:g} points{detail}",
            "raise --max-accuracy-drop, fine-tune with quantization-aware distillation (--set distill.qat_epochs=5), "
            "or set quantize.require_int8 = false to ship fp32",
        )
    timed = [{"variant": "fp32" if r["kind"] == "fp32" else r["name"], "threads": 0, "p50": r["p50_ms"],
              "round_p50s": r.get("round_p50s"), "row": r} for r in within]
    best, quickest = quickest_beyond_noise(timed, prefer=lambda t: (t["variant"] != "fp32", t["p50"]))
    winner = best["row"]
    tie = "" if best is quickest else (f" (tied with {quickest['variant']} at {quickest['p50']:.4f} ms, which was "
                                       "not quicker in every interleaved round)")
    best_int8 = min(int8_within, key=lambda r: r["p50_ms"]) if int8_within else \
        max(int8, key=lambda r: r["accuracy"], default=None)
    fp32 = next(r for r in rows if r["kind"] == "fp32")
    if winner["kind"] == "fp32":
        why = (f"fp32 ships: no recipe within the {max_drop:g}-point budget beat its p50 of {fp32['p50_ms']:.4f} ms"
               + (f" (fastest int8 within budget: {best_int8['name']} at {best_int8['p50_ms']:.4f} ms)"
                  if int8_within else " (no int8 recipe stayed within budget)") + tie)
    else:
        why = (f"{winner['name']} is the fastest within the {max_drop:g}-point budget: p50 {winner['p50_ms']:.4f} ms "
               f"vs fp32 {fp32['p50_ms']:.4f} ms, accuracy drop {winner['accuracy_drop']:.2f} points{tie}")
    return winner, best_int8, why


def search_quantization(
    fp32_model: Path,
    calibration_x: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: QuantizeConfig,
    device: DeviceConfig,
    bench: BenchmarkConfig,
    workdir: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """Measure every candidate; returns the report with `rows`, `sensitivity`, `winner`,
    `best_int8` (rows whose `file` lies in `workdir`) and `why`."""
    prepared = workdir / "prepared.onnx"
    prepare(fp32_model, prepared, progress=progress)
    check_node_names(prepared, tuple(cfg.exclude_nodes))  # a typo is the user's error, not a failed recipe
    calibration = StreamedCalibration(prepared, calibration_x, workdir, progress=progress)
    threads = usable_threads(bench.threads)
    providers, strict = provider_specs(bench), not bench.allow_cpu_fallback
    reference: dict = {}

    def evaluate(recipe: QuantRecipe) -> dict:
        path = workdir / f"{recipe.name}.onnx"
        row = {"name": recipe.name, "kind": recipe.kind, "recipe": dataclasses.asdict(recipe), "file": str(path),
               "error": None}
        try:
            report = apply_recipe(recipe, prepared, path, calibration)
            accuracy = float((predict_classes(path, x_val, providers, threads, require_first=strict) == y_val).mean())
        except EdgeDistillError as e:
            return {**row, "error": e.message}
        except Exception as e:  # an ORT kernel missing for this recipe on this provider: record, go on
            return {**row, "error": describe(e)}
        reference.setdefault("accuracy", accuracy)  # fp32 is evaluated first
        return row | {
            "accuracy": accuracy,
            "accuracy_drop": round(100.0 * (reference["accuracy"] - accuracy), 4),
            "size_bytes": path.stat().st_size,
            "quantized_nodes": report["quantized_nodes"],
        }

    recipes = candidate_recipes(cfg, device, bench.providers)
    progress(f"searching {len(recipes)} quantization recipes: val accuracy on {len(y_val)} samples")
    rows = [evaluate(recipe) for recipe in recipes]
    sensitivity = repair_over_budget(rows, prepared, calibration_x, cfg, workdir, evaluate, progress)
    measured = [r for r in rows if r["error"] is None]
    progress(f"timing {len(measured)} models in interleaved rounds, {cfg.search_min_seconds:g} s each")
    latency = compare_latency({r["name"]: Path(r["file"]) for r in measured}, x_val[: bench.batch_size],
                              providers, threads, cfg.search_min_seconds, require_first=strict)
    for row in measured:
        if "error" in latency[row["name"]]:
            row["error"] = latency[row["name"]]["error"]
        else:
            row |= {"p50_ms": latency[row["name"]]["p50"], "p90_ms": latency[row["name"]]["p90"],
                    "round_p50s": latency[row["name"]]["round_p50s"]}
            progress(f"  {row['name']:<34} acc {row['accuracy']:.4f} (drop {row['accuracy_drop']:+.2f} pt)  "
                     f"p50 {row['p50_ms']:.4f} ms  {row['size_bytes']:,} B")
        if row["error"]:
            progress(f"  {row['name']:<34} failed: {row['error']}")
    winner, best_int8, why = select_recipe(rows, cfg.max_accuracy_drop, cfg.require_int8)
    progress(why)
    host = describe_host()
    return {"rows": rows, "measured_on": measurement_note(host, device), "sensitivity": sensitivity,
            "winner": winner, "best_int8": best_int8, "why": why, "max_accuracy_drop": cfg.max_accuracy_drop,
            "reference_accuracy": reference.get("accuracy"), "threads": threads}


def repair_over_budget(rows, prepared, calibration_x, cfg, workdir, evaluate, progress) -> dict[str, list[dict]]:
    """Per-node fallback: for the most accurate over-budget QDQ recipes, keep their most sensitive
    nodes in float (1, 2, 4, ... up to fallback_max_nodes) until one fits; adds those rows."""
    over = [r for r in rows if r.get("error") is None and r["kind"] == "static" and r["recipe"]["format"] == "QDQ"
            and r["accuracy_drop"] > cfg.max_accuracy_drop]
    sensitivity = {}
    for row in sorted(over, key=lambda r: -r["accuracy"])[:REPAIRED_PER_SEARCH if cfg.fallback_max_nodes else 0]:
        ranked = layer_sensitivity(prepared, Path(row["file"]), calibration_x[:64], workdir)
        sensitivity[row["name"]] = ranked
        progress(f"per-layer sensitivity of {row['name']} (lowest SNR first):\n{sensitivity_table(ranked)}")
        recipe = QuantRecipe(**{**row["recipe"], "exclude_nodes": tuple(row["recipe"]["exclude_nodes"])})
        count = 1
        while count <= min(cfg.fallback_max_nodes, len(ranked)):
            nodes = tuple(r["node"] for r in ranked[:count])
            progress(f"repairing {row['name']}: keeping {', '.join(nodes)} in float")
            repaired = evaluate(recipe.keep_in_float(nodes))
            repaired["repaired_from"] = row["name"]
            rows.append(repaired)
            if repaired.get("error") is None and repaired["accuracy_drop"] <= cfg.max_accuracy_drop:
                break
            count *= 2
    return sensitivity
