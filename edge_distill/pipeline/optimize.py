"""`edge-distill optimize MODEL.onnx`: a model trained elsewhere, made int8, measured and shipped
as a verified bundle, without a teacher or training.

Inputs are read from the model (any number, float or integer; symbolic sizes fixed by --shape).
Calibration samples come from the user (one array per input name, data/feeds.py); the last fifth is
held out: int8 is judged on it (Budget) by its fidelity to the float model (no labels needed) or,
given labels, by its accuracy against float's, and the golden vectors come from it. Float and int8
are then timed side by side at each candidate thread count on the device over SSH (--remote) or
on this host where it has the device's architecture; the fastest within the budget ships with its
thread count. Where neither can measure for the device, the profile's recipe ships as it is. The
manifest says why either way.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill import __version__
from edge_distill.config import BuildConfig
from edge_distill.errors import DataError, QuantizeError, SimplifyError, describe

GOLDEN_COUNT = 8
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # what int8 kernels speed up
MAX_HELD_OUT = 1000  # held-out samples int8 is judged on


@dataclass(frozen=True)
class Judgement:
    ok: bool  # within the budget
    score: float  # higher is better: worst SNR in dB, or minus the accuracy drop in points
    summary: str  # the figure and the rule, for the report
    fidelity: dict  # per output, measure.fidelity.output_fidelity
    accuracy: dict | None  # {"fp32", "int8", "drop_points", "output"} with labels


@dataclass(frozen=True)
class Budget:
    """What int8 must keep to ship: every output's SNR against float of at least `min_snr_db`;
    or, given held-out `labels` (class indices, one per row of a class-score output), accuracy
    within `max_accuracy_drop` points of float's."""
    min_snr_db: float
    labels: np.ndarray | None = None
    max_accuracy_drop: float = 1.0

    def judge(self, reference: dict[str, np.ndarray], produced: dict[str, np.ndarray], outputs, inputs=()
              ) -> Judgement:
        from edge_distill.measure.fidelity import output_fidelity, worst_snr

        fidelity = output_fidelity(reference, produced, outputs, inputs)
        snr = worst_snr(fidelity)
        if self.labels is None:
            shown = "identical outputs" if snr == float("inf") else f"worst output SNR {snr:.1f} dB"
            ok = snr >= self.min_snr_db
            return Judgement(ok, snr, f"{shown} ({'at least' if ok else 'below'} --min-snr {self.min_snr_db:g} dB)",
                             fidelity, None)
        scores = class_scores_output(outputs)
        rows = reference[scores.name].argmax(axis=-1).size
        if rows != len(self.labels):
            raise DataError(f"--labels: {len(self.labels)} held-out label(s) for {rows} rows of class scores "
                            f"('{scores.name}')", "give one class index per row of the model's class scores")
        accuracy = {name: float((values[scores.name].argmax(axis=-1).reshape(-1) == self.labels).mean())
                    for name, values in (("fp32", reference), ("int8", produced))}
        drop = 100 * (accuracy["fp32"] - accuracy["int8"])
        ok = drop <= self.max_accuracy_drop
        return Judgement(ok, -drop, f"held-out accuracy {accuracy['int8']:.4f} vs float {accuracy['fp32']:.4f}, "
                                    f"{drop:+.2f} points lost ({'within' if ok else 'over'} "
                                    f"quantize.max_accuracy_drop {self.max_accuracy_drop:g})",
                         fidelity, accuracy | {"drop_points": drop, "output": scores.name, "samples": len(self.labels)})


def class_scores_output(outputs):
    """The first output that is a class-score vector, which labels are compared with."""
    from edge_distill.measure.fidelity import is_class_scores

    found = next((spec for spec in outputs if is_class_scores(spec)), None)
    if found is None:
        raise DataError(f"--labels: none of the model's outputs ({', '.join(s.name for s in outputs)}) is a vector "
                        "of class scores (batch, classes)", "leave --labels out: int8 is then judged by its SNR")
    return found


def optimize_model(config: BuildConfig, model_path: Path, calibration: Path, shapes: dict[str, tuple[int, ...]],
                   out: Path, min_snr_db: float, progress: Callable[[str], None] = lambda _: None,
                   labels: str | None = None, *, cache_dir: Path) -> dict[str, Any]:
    """Simplify, quantize, judge, measure and package `model_path` into `out`; returns the manifest.
    `labels`: the array of class indices in the calibration file(s). The work is staged in
    `cache_dir`'s staging area (a killed run's leftovers go with the next run). Float and int8 are timed on
    config.device.host where it names one."""
    from edge_distill.data.feeds import load_feeds, load_labels, split_feeds
    from edge_distill.export.model_io import fix_shapes, model_tensors
    from edge_distill.export.onnx_io import load_onnx
    from edge_distill.hashing import sha256
    from edge_distill.bundle.writer import write_manifest
    from edge_distill.pipeline.cache import StageCache
    from edge_distill.pipeline.publish import check_out, publish
    from edge_distill.sessions import open_session, run_session

    check_out(out)
    source = load_onnx(model_path)
    inputs, outputs = model_tensors(source, str(model_path))
    session = open_session(model_path, str(model_path))
    fixed = fix_shapes(inputs, shapes, str(model_path))
    feeds = load_feeds(calibration, inputs, fixed)
    # One sample through the model as given, so its failures name it, not a work copy later.
    run_session(session, feeds[0], f"{model_path} on the first sample of {calibration}", config.benchmark.time_limit_s)
    limits = {"most_calibration": config.quantize.calibration_samples, "most_held_out": MAX_HELD_OUT}
    calibrate_on, held_out = split_feeds(feeds, **limits)
    budget = Budget(min_snr_db, None, config.quantize.max_accuracy_drop)
    if labels is not None:
        classes = class_scores_output(outputs).dims[-1]
        per_sample = load_labels(calibration, labels, len(feeds))
        if per_sample.min() < 0 or per_sample.max() >= classes:
            raise DataError(f"--labels {labels}: class indices {per_sample.min()}..{per_sample.max()}, the model "
                            f"scores {classes} classes (0..{classes - 1})", "give class indices as the model numbers them")
        _, held_rows = split_feeds(np.arange(len(feeds)), **limits)  # the same rows as the held-out feeds
        budget = dataclasses.replace(budget, labels=per_sample[held_rows].reshape(-1))
    progress(f"{model_path.name}: {len(inputs)} input(s) "
             + ", ".join(f"{t.name} {t.dtype} {'x'.join(map(str, fixed[t.name])) or 'scalar'}" for t in inputs)
             + f"; {len(calibrate_on)} calibration and {len(held_out)} held-out samples")
    notes: list[str] = []
    cache = StageCache(cache_dir)
    with cache.staging_folder("optimize") as work:
        fp32 = simplified_or_source(model_path, held_out[0], work / "fp32.onnx", notes, progress)
        int8, recipe, judgement = quantize_within_budget(fp32, calibrate_on, held_out, (inputs, outputs), config,
                                                         budget, work, notes, progress, cache)
        variants = {"fp32": fp32} | ({"int8": int8} if int8 is not None else {})
        timing = time_candidates(variants, held_out[0], config, progress)
        shipped, threads, why = choose(judgement, timing, config.device.arch)
        progress(f"shipping {shipped} at {threads} thread(s): {why}")
        model = work / "model.onnx"
        label_model(variants[shipped], model, precision=shipped, profile=config.profile)
        golden = write_io_golden(model, held_out[:GOLDEN_COUNT], outputs, work)
        manifest = io_manifest(config, model_path, model, fixed, golden, variants, timing, budget, judgement, threads,
                               {"precision": shipped, "why": why, "quantization": recipe, "notes": notes})
        files = {"model.onnx": model, "golden.npz": work / "golden.npz", "golden.json": work / "golden.json"}
        manifest["files"] = {name: {"sha256": sha256(path), "size_bytes": path.stat().st_size}
                             for name, path in files.items()}
        manifest = write_manifest(manifest, work / "manifest.json")
        publish(files | {"manifest.json": work / "manifest.json"}, out)
    progress(f"int8: {judgement.summary}; bundle written to {out}")
    return manifest


def time_candidates(models: dict[str, Path], feed: dict[str, np.ndarray], config: BuildConfig,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    """Float and int8 timed side by side (device.remote.time_side_by_side): on the device over SSH,
    each at 1, 2, 4, ... up to the profile's threads; else here, at those counts that fit this
    host's cores where it has the device's architecture, or at the profile's count only, for the
    record, where it has not. {"where", "for_device": whether the figures stand for the device,
    "host", "threads", "rows"}."""
    from edge_distill.device.remote import device_target, time_side_by_side
    from edge_distill.device.runner import thread_candidates, usable_threads
    from edge_distill.measure.harness import provider_specs
    from edge_distill.sessions import onnxruntime_errors

    bench, remote = config.benchmark, device_target(config.device)
    for_device = remote is not None or config.device.is_host_arch
    most = bench.threads if remote is not None else usable_threads(bench.threads)
    counts = thread_candidates(most) if for_device else [most]
    where = remote.destination if remote is not None else "this host"
    progress(f"timing {' and '.join(models)} side by side on {where} at {', '.join(map(str, counts))} thread(s) "
             f"({bench.providers[0]}, {config.quantize.search_min_seconds:g} s each)")
    with onnxruntime_errors(f"timing {' and '.join(models)}"):
        timing = time_side_by_side(models, feed, counts, provider_specs(bench), config.quantize.search_min_seconds,
                                   remote, not bench.allow_cpu_fallback, progress, bench.time_limit_s)
    return timing | {"for_device": for_device, "threads": counts}


def io_manifest(config: BuildConfig, source: Path, model: Path, fixed: dict[str, tuple[int, ...]], golden: dict,
                variants: dict[str, Path], timing: dict, budget: Budget, judgement: Judgement, threads: int,
                decision: dict) -> dict[str, Any]:
    """The manifest of an optimize bundle (docs/manifest.md), but for its file hashes: the shipped
    `model`'s inputs and outputs with the `fixed` shapes used, both variants' figures (latency at
    the shipped thread count), the thread count to run it with, and the `decision` (precision, why,
    quantization, notes)."""
    from edge_distill.bundle.reader import SCHEMA_VERSION
    from edge_distill.export.model_io import model_tensors
    from edge_distill.export.onnx_io import load_onnx
    from edge_distill.hashing import sha256
    from edge_distill.measure.harness import measurement_note

    inputs, outputs = model_tensors(load_onnx(model), "the shipped model")
    at_threads = {row["variant"]: row for row in timing["rows"] if row["threads"] == threads}
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "edge-distill", "version": __version__, "command": "optimize"},
        # The benchmark settings `edge-distill bench` times the bundle with, here or on the device.
        "profile": {"name": config.profile, "device": config.device.name, "arch": config.device.arch,
                    "benchmark": dataclasses.asdict(config.benchmark)},
        "model": {"file": "model.onnx", "sha256": sha256(model), "size_bytes": model.stat().st_size, **decision,
                  "source": {"file": source.name, "sha256": sha256(source), "opset": default_opset(source)}},
        "inputs": [t.as_manifest(fixed[t.name]) for t in inputs],
        "outputs": [t.as_manifest() for t in outputs],
        "labels": [],
        "golden": golden,
        # What the app sets (SessionOptions.intra_op_num_threads), and `bench` times with.
        "runtime": {"intra_op_threads": threads,
                    "why": (f"fastest of {', '.join(map(str, timing['threads']))} thread(s) measured on "
                            f"{timing['where']}" if timing["for_device"] else
                            "the profile's benchmark.threads: not measured on the device")},
        "metrics": [{"variant": name, "size_bytes": path.stat().st_size,
                     "latency_ms": {k: v for k, v in at_threads.get(name, {}).items() if k not in ("variant", "threads")},
                     "fidelity": judgement.fidelity if name == "int8" else None,
                     "accuracy": judgement.accuracy[name] if judgement.accuracy else None}
                    for name, path in variants.items()],
        "judgement": {"int8_within_budget": judgement.ok, "summary": judgement.summary,
                      "rule": "accuracy" if judgement.accuracy else "snr"}
                     | ({"accuracy": judgement.accuracy, "max_accuracy_drop": budget.max_accuracy_drop}
                        if judgement.accuracy else {"min_snr_db": budget.min_snr_db}),
        "measurement": {"host": timing["host"], "where": timing["where"], "threads": threads,
                        "provider": config.benchmark.providers[0],
                        "interleaved": "fp32 and int8 at each thread count timed in alternating rounds on one sample",
                        "candidates": timing["rows"],
                        "measured_on": (f"measured on the device ({timing['where']})" if timing["where"] != "this host"
                                        else measurement_note(timing["host"], config.device))},
        "versions": {name: metadata.version(name) for name in ("onnx", "onnxruntime", "onnxsim", "numpy")}
                    | {"python": platform.python_version()},
    }


def simplified_or_source(model_path: Path, feed: dict[str, np.ndarray], dst: Path, notes: list[str],
                         progress: Callable[[str], None]) -> Path:
    """onnxsim's model, checked on a real sample; the model as given where onnxsim fails on it."""
    from edge_distill.export.simplify import simplify_onnx

    progress("simplifying with onnxsim")
    try:
        report = simplify_onnx(model_path, dst, feed, atol=1e-4, rtol=1e-3)
        notes.append(f"simplified: {report['nodes_before']} -> {report['nodes_after']} nodes")
    except SimplifyError as e:
        notes.append(f"not simplified: {e.message}")
        progress(f"kept unsimplified: {e.message}")
        dst.write_bytes(model_path.read_bytes())
    return dst


def prepare(fp32: Path, config: BuildConfig, work: Path, notes: list[str], progress: Callable[[str], None]
            ) -> tuple[Path, bool]:
    """(ONNX Runtime's pre-processed model, per channel). Per-channel QDQ needs opset 13; symbolic
    shape inference is skipped (noted) where it fails on a real graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edge_distill.export.onnx_io import quiet_libraries

    q = config.quantize
    per_channel, source, opset = q.per_channel, fp32, default_opset(fp32)
    if per_channel and q.format == "QDQ" and opset < 13:
        # Per-channel DequantizeLinear (its `axis`) exists from opset 13; ORT's quantizer writes it anyway.
        source, per_channel = _opset_13_or_per_tensor(fp32, opset, work, notes, progress)
    source, prepared = source.absolute(), work.absolute() / "prepared.onnx"  # the block runs in a scratch folder
    try:
        with quiet_libraries(scratch_in=work):
            quant_pre_process(str(source), str(prepared))
    except Exception as e:
        notes.append(f"ONNX Runtime's symbolic shape inference failed ({describe(e, 200)}): pre-processed without it")
        progress("symbolic shape inference failed on this graph: pre-processing without it")
        try:
            with quiet_libraries(scratch_in=work):
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception as again:
            raise QuantizeError(f"pre-processing {fp32.name} for quantization failed: {describe(again)}") from None
    return prepared, per_channel


def quantize_feeds(prepared: Path, feeds: list[dict], config: BuildConfig, per_channel: bool, keep_in_float: list[str],
                   dst: Path, notes: list[str], op_types: tuple[str, ...] | None = None) -> dict:
    """The profile's static int8 recipe, calibrated on `feeds`, with `keep_in_float` nodes left in
    float, and only `op_types` quantized where given (else every op ONNX Runtime can); the If
    branches the samples take included (export/branches.py). Extra options ONNX Runtime needed
    (export/quantize.quantize_static_retrying) are noted."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    from edge_distill.export.branches import quantize_branches
    from edge_distill.export.onnx_io import quiet_libraries
    from edge_distill.export.quantize import FeedReader, count_ops, quantize_static_retrying

    q = config.quantize
    prepared, dst = prepared.absolute(), dst.absolute()  # quiet_libraries runs the block in a scratch folder

    def recipe(source: Path, samples: list[dict], out: Path, exclude: list[str] = ()) -> dict:
        """The recipe on `source`; the extra options ONNX Runtime needed."""
        try:
            with quiet_libraries(scratch_in=dst.parent):
                extra = quantize_static_retrying(
                    source, out, FeedReader(samples), quant_format=QuantFormat[q.format], per_channel=per_channel,
                    reduce_range=q.reduce_range, activation_type=QuantType[q.activation_type],
                    weight_type=QuantType[q.weight_type], calibrate_method=CalibrationMethod[q.calibrate_method],
                    nodes_to_exclude=list(exclude), op_types_to_quantize=list(op_types) if op_types else None)
        except Exception as e:
            raise QuantizeError(f"quantizing {source.name} failed: {describe(e, 2000)}",
                                "try another profile's format (--set quantize.format=QOperator) or "
                                "keep nodes in float with --set quantize.exclude_nodes=[...]") from None
        note = "ONNX Runtime's weight-scale adjustment for int32 biases failed: quantized with " + ", ".join(extra)
        if extra and note not in notes:
            notes.append(note)
        return extra

    extra = recipe(prepared, feeds, dst, [*q.exclude_nodes, *keep_in_float])
    quantize_branches(dst, feeds, recipe, dst.parent, notes)
    try:
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise QuantizeError(f"ONNX Runtime cannot load the int8 model it made from {prepared.name}: {describe(e, 2000)}",
                            "try --set quantize.per_channel=false, or --set quantize.format=QOperator") from None
    return {"format": q.format, "activation_type": q.activation_type, "weight_type": q.weight_type,
            "per_channel": per_channel, "calibrate_method": q.calibrate_method, "calibration_samples": len(feeds),
            "kept_in_float": [*q.exclude_nodes, *keep_in_float], "op_counts": count_ops(onnx.load(str(dst))),
            **({"extra_options": extra} if extra else {}), **({"op_types": list(op_types)} if op_types else {})}


def quantize_within_budget(fp32: Path, calibrate_on: list[dict], held_out: list[dict], tensors: tuple[list, list],
                           config: BuildConfig, budget: Budget, work: Path, notes: list[str],
                           progress: Callable[[str], None], cache) -> tuple[Path | None, dict, Judgement]:
    """(int8 model, recipe, judgement); the model is None, and the judgement says why, where no
    int8 model could be made or none of its nodes was quantized (a model whose compute sits in
    subgraphs ONNX Runtime's quantizer skips): float then ships. Over the budget, the nodes whose
    int8 error is largest (ONNX Runtime's QDQ debugging: per-node SNR) are kept in float, 1, 2, 4,
    ... up to quantize.fallback_max_nodes, until the model is within it; the best-judged try is
    kept. `tensors`: the model's (inputs, outputs)."""
    from edge_distill.export.quantize import quantized_node_count
    from edge_distill.export.sensitivity import layer_sensitivity

    q = config.quantize
    prepared, per_channel = prepare(fp32, config, work, notes, progress)
    progress(f"calibrating ({q.calibrate_method}) on {len(calibrate_on)} samples and quantizing ({q.format}, "
             f"{q.activation_type}/{q.weight_type}, {'per channel' if per_channel else 'per tensor'})")
    reference = run_feeds(fp32, held_out)
    inputs, outputs = tensors

    def attempt(keep: list[str], dst: Path, op_types: tuple[str, ...] | None = None) -> tuple[Path, dict, Judgement]:
        recipe = quantize_feeds(prepared, calibrate_on, config, per_channel, keep, dst, notes, op_types)
        return dst, recipe, budget.judge(reference, run_feeds(dst, held_out), outputs, inputs)

    def not_made(why: str) -> tuple[None, dict, Judgement]:
        progress(f"no int8 model: {why}")
        return None, {}, Judgement(False, float("-inf"), f"no int8 model: {why}", {}, None)

    try:
        best = attempt([], work / "int8.onnx")
    except QuantizeError as e:  # ONNX Runtime's quantizer failed on this graph: float ships, saying why
        return not_made(e.message)
    if not quantized_node_count(best[1]["op_counts"]):
        return not_made("ONNX Runtime's quantizer quantized none of its nodes (subgraphs included), "
                        "so it is not an int8 model")
    if best[2].ok:
        return best
    # Elementwise arithmetic (a layer norm's, a gate's) often loses more in int8 than it gains:
    # quantizing only the convolutions and matrix products is the first repair.
    try:
        compute_only = attempt([], work / "int8-compute.onnx", COMPUTE_OPS)
    except QuantizeError as e:
        notes.append(f"int8 of {', '.join(COMPUTE_OPS)} only could not be made: {e.message}")
    else:
        progress(f"  only {', '.join(COMPUTE_OPS)} in int8: {compute_only[2].summary}")
        if quantized_node_count(compute_only[1]["op_counts"]) and compute_only[2].score > best[2].score:
            notes.append(f"int8 repaired by quantizing only {', '.join(COMPUTE_OPS)}: {compute_only[2].summary}, "
                         f"was {best[2].summary}")
            best = compute_only
        if best[2].ok:
            return best
    if q.distill:
        try:
            distilled = distill_attempt(best, fp32, calibrate_on, reference, held_out, tensors, config, budget, work,
                                        progress, cache)
        except QuantizeError as e:  # an op it cannot train: post-training int8 (or float) goes on
            notes.append(f"int8 not distilled: {e.message}")
            progress(f"int8 not distilled: {e.message}")
        else:
            if distilled[2].ok:
                notes.append(f"int8 distilled from float: {distilled[2].summary}, was {best[2].summary}")
                return distilled
            notes.append(f"int8 distilled from float: {distilled[2].summary}, still over budget")
            best = max(best, distilled, key=lambda tried: tried[2].score)
    else:
        progress(f"int8 over budget ({best[2].summary}): --distill trains it against float on the calibration "
                 "samples")
    if not q.fallback_max_nodes:
        return best
    progress(f"int8 over budget ({best[2].summary}): ranking nodes by their int8 error")
    try:
        ranked = [row["node"] for row in layer_sensitivity(prepared, best[0], calibrate_on[:16], work)]
    except Exception as e:  # ONNX Runtime's QDQ debugging fails on some graphs (magika's per-axis Reshape)
        notes.append(f"int8 not repaired: ranking its nodes failed ({describe(e, 200)})")
        progress(f"ranking nodes failed: {describe(e, 200)}")
        return best
    count = 1
    while count <= min(q.fallback_max_nodes, len(ranked)):
        tried = attempt(ranked[:count], work / f"int8-float{count}.onnx", best[1].get("op_types"))
        progress(f"  {count} most sensitive node(s) in float: {tried[2].summary}")
        if tried[2].score > best[2].score:
            best = tried
        if tried[2].ok:
            break
        count *= 2
    kept = best[1]["kept_in_float"]
    notes.append(f"int8 repaired by keeping {len(kept)} node(s) in float: {', '.join(kept)}" if kept else
                 f"keeping up to {q.fallback_max_nodes} sensitive node(s) in float did not bring int8 within budget")
    return best


def distill_attempt(ptq: tuple[Path, dict, Judgement], fp32: Path, calibrate_on: list[dict], reference: dict,
                    held_out: list[dict], tensors: tuple[list, list], config: BuildConfig, budget: Budget, work: Path,
                    progress: Callable[[str], None], cache) -> tuple[Path, dict, Judgement]:
    """Post-training int8 `ptq` trained to match float on the calibration samples
    (distill.qdq_distill), judged on the held-out ones as post-training int8 is. The trained
    model is a cache entry (`cache`, a pipeline.cache.StageCache) keyed by both models' hashes, the
    samples, the settings and the library versions: a rerun reuses it."""
    import shutil

    import torch

    from edge_distill.device.runner import usable_threads
    from edge_distill.distill.qdq_distill import DistillSettings, distill_int8
    from edge_distill.hashing import sha256
    from edge_distill.pipeline.cache import library_versions

    q = config.quantize
    if q.format != "QDQ":
        raise QuantizeError(f"--distill trains QDQ int8; the profile quantizes to {q.format}",
                            "add --set quantize.format=QDQ")
    settings = DistillSettings(q.distill_epochs, q.distill_max_seconds, reduce_range=q.reduce_range)
    description = {"int8_sha256": sha256(ptq[0]), "float_sha256": sha256(fp32), "samples": feeds_digest(calibrate_on),
                   "settings": dataclasses.asdict(settings), "versions": library_versions()}
    key, outputs = cache.key(description), ("model.onnx", "report.json")
    found = cache.lookup("int8-distill", key, outputs)
    progress(f"int8 over budget ({ptq[2].summary}): distilling it from float on {len(calibrate_on)} calibration "
             f"samples ({q.distill_epochs} epochs, at most {q.distill_max_seconds:g} s)")

    def make(staged: Path) -> None:
        torch.set_num_threads(usable_threads(config.benchmark.threads))
        float_outputs = run_feeds(fp32, calibrate_on)
        targets = [{name: values[i] for name, values in float_outputs.items()} for i in range(len(calibrate_on))]
        report = distill_int8(ptq[0], calibrate_on, targets, staged / "model.onnx", settings, progress)
        (staged / "report.json").write_text(json.dumps(report))

    if found.entry is None:
        entry = cache.build("int8-distill", key, description, outputs, make)
    else:
        entry = found.entry
        progress(f"  reused from the cache ({cache.root / 'int8-distill' / key})")
    dst = work / "int8-distilled.onnx"
    shutil.copyfile(entry / "model.onnx", dst)
    report = json.loads((entry / "report.json").read_text()) | {"cache_key": key, "reused": found.entry is not None}
    judgement = budget.judge(reference, run_feeds(dst, held_out), tensors[1], tensors[0])
    progress(f"  distilled int8: {judgement.summary}")
    return dst, ptq[1] | {"distilled": report}, judgement


def feeds_digest(feeds: list[dict]) -> str:
    """A digest of samples: every array's name, dtype, shape and bytes, in order."""
    import hashlib

    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def default_opset(model: Path) -> int:
    """The model's opset of the default ONNX domain (0 if it imports none)."""
    import onnx

    imports = onnx.load(str(model), load_external_data=False).opset_import
    return max((o.version for o in imports if o.domain in ("", "ai.onnx")), default=0)


def _opset_13_or_per_tensor(fp32: Path, opset: int, work: Path, notes: list[str],
                            progress: Callable[[str], None]) -> tuple[Path, bool]:
    """(model to quantize, per channel): the model converted to opset 13 for per-channel QDQ, or as
    it is, quantized per tensor, where the conversion fails."""
    import onnx
    from onnx import version_converter

    converted = work / "opset13.onnx"
    try:
        model = version_converter.convert_version(onnx.load(str(fp32)), 13)
        onnx.checker.check_model(model)
        onnx.save(model, str(converted))
    except Exception as e:
        notes.append(f"opset {opset}: per-channel QDQ needs opset 13 and the conversion failed ({describe(e, 200)}): "
                     "quantized per tensor")
        progress(f"opset {opset} model: quantizing per tensor")
        return fp32, False
    notes.append(f"opset {opset}: converted to opset 13 for per-channel QDQ (int8 variant only)")
    progress(f"opset {opset} model: converted to opset 13 for per-channel quantization")
    return converted, True


def run_feeds(model: Path, feeds) -> dict[str, np.ndarray]:
    """Every output of `model` on every feed, stacked (device.runner.run_feeds), on the CPU provider;
    an onnxruntime failure is one ModelError naming the model."""
    from edge_distill.device.runner import run_feeds as run_all
    from edge_distill.sessions import onnxruntime_errors, open_session

    session = open_session(model, f"{model.name}")
    with onnxruntime_errors(f"{model.name}: ONNX Runtime cannot run it on the samples"):
        return run_all(session, feeds)


def choose(judgement: Judgement, timing: dict, device_arch: str) -> tuple[str, int, str]:
    """(precision "int8" | "fp32", intra-op threads, why): the fastest candidate the budget allows
    where the timing stands for the device; else the profile's int8 recipe when within budget."""
    from edge_distill.device.remote import fastest

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
                                         f"{shown(int8_best)} vs float {shown(best)}{tie}")
    return "fp32", best["threads"], (f"int8 measured slower than float on {where}: its best {shown(int8_best)} "
                                     f"vs float {shown(best)}{tie}")


def quickest_beyond_noise(rows: list[dict]) -> tuple[dict, dict]:
    """(the row to ship, the quickest row). The quickest beats another row only where it was
    quicker in every interleaved round (round_p50s; with 5 rounds, a 1 in 32 chance if the two
    were equal); otherwise they are tied, and a tie goes to float, the simpler variant, then to
    fewer threads. Rows without rounds compare by p50 alone."""
    quickest = min(rows, key=lambda row: row["p50"])

    def tied(row: dict) -> bool:
        ours, theirs = quickest.get("round_p50s"), row.get("round_p50s")
        if row is quickest:
            return True
        if not ours or not theirs or len(ours) != len(theirs):
            return row["p50"] == quickest["p50"]
        return not all(a < b for a, b in zip(ours, theirs))

    chosen = min((row for row in rows if tied(row)), key=lambda row: (row["variant"] != "fp32", row["threads"]))
    return chosen, quickest


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


def write_io_golden(model: Path, feeds: list[dict], outputs, out: Path) -> dict[str, Any]:
    """Held-out feeds and the shipped model's outputs on them, for `verify` anywhere: arrays named
    input:NAME and output:NAME, one row per sample."""
    from edge_distill.bundle.writer import GOLDEN_ATOL_SHARE

    produced = run_feeds(model, feeds)
    arrays = {f"input:{name}": np.stack([f[name] for f in feeds]) for name in feeds[0]}
    arrays |= {f"output:{name}": values for name, values in produced.items()}
    atol = {spec.name: (GOLDEN_ATOL_SHARE * float(np.abs(produced[spec.name]).max()) if spec.is_float else 0.0)
            for spec in outputs}
    np.savez(out / "golden.npz", **arrays)
    (out / "golden.json").write_text(json.dumps({name: a.tolist() for name, a in arrays.items()}) + "\n")
    return {
        "kind": "io",
        "npz": "golden.npz",
        "json": "golden.json",
        "count": len(feeds),
        "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.name} for name, a in arrays.items()},
        "tolerance": {"atol": atol, "why": f"{GOLDEN_ATOL_SHARE:.1%} of each float output's largest |value|; "
                                            "integer outputs exact"},
        "source": "held-out calibration samples; outputs from ONNX Runtime's CPU provider on this machine",
    }


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
