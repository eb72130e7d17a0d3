"""int8 within a budget, for a model with any inputs (`optimize`): ONNX Runtime's static recipe
calibrated on the samples, judged on held-out samples against float (Budget: every output's SNR,
or given labels the accuracy drop), and repaired where it misses: only the compute ops in int8,
then quantization-aware distillation (`quantize.distill`), then the most sensitive nodes kept in
float. A model is called int8 only where nodes were quantized (subgraphs counted)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_distill.config import BuildConfig
from edge_distill.errors import DataError, QuantizeError, describe
from edge_distill.sessions import run_model

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


def prepare(fp32: Path, config: BuildConfig, work: Path, notes: list[str], progress: Callable[[str], None]
            ) -> tuple[Path, bool]:
    """(ONNX Runtime's pre-processed model, per channel). Per-channel QDQ needs opset 13; symbolic
    shape inference is skipped (noted) where it fails on a real graph."""
    from edge_distill.export.quantize import prepare as ort_prepare

    q = config.quantize
    per_channel, source, opset = q.per_channel, fp32, default_opset(fp32)
    if per_channel and q.format == "QDQ" and opset < 13:
        # Per-channel DequantizeLinear (its `axis`) exists from opset 13; ORT's quantizer writes it anyway.
        source, per_channel = _opset_13_or_per_tensor(fp32, opset, work, notes, progress)
    prepared = work / "prepared.onnx"
    ort_prepare(source, prepared, notes, progress)
    return prepared, per_channel


def quantize_feeds(prepared: Path, feeds: list[dict], config: BuildConfig, per_channel: bool, keep_in_float: list[str],
                   dst: Path, notes: list[str], op_types: tuple[str, ...] | None = None) -> dict:
    """The profile's static int8 recipe, calibrated on `feeds`, with `keep_in_float` nodes left in
    float, and only `op_types` quantized where given (else every op ONNX Runtime can); the If
    branches the samples take included (export/branches.py). Extra options ONNX Runtime needed
    (export/quantize.quantize_static_retrying) are noted."""
    import dataclasses

    import onnx

    from edge_distill.device.runner import create_session
    from edge_distill.export.branches import quantize_branches
    from edge_distill.export.quantize import QuantRecipe, count_ops, quantize_on_feeds

    q = config.quantize
    prepared, dst = prepared.absolute(), dst.absolute()
    profile_recipe = dataclasses.replace(QuantRecipe.from_config(q), op_types=tuple(op_types or ()))

    def recipe(source: Path, samples: list[dict], out: Path, exclude: list[str] = ()) -> dict:
        """The recipe on `source`; the extra options ONNX Runtime needed."""
        try:
            extra = quantize_on_feeds(dataclasses.replace(profile_recipe, exclude_nodes=tuple(exclude)), source, out,
                                      samples, per_channel)
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
        create_session(dst)
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
    reference = run_model(fp32, held_out)
    inputs, outputs = tensors

    def attempt(keep: list[str], dst: Path, op_types: tuple[str, ...] | None = None) -> tuple[Path, dict, Judgement]:
        recipe = quantize_feeds(prepared, calibrate_on, config, per_channel, keep, dst, notes, op_types)
        return dst, recipe, budget.judge(reference, run_model(dst, held_out), outputs, inputs)

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
    from edge_distill.export.qdq_distill import DistillSettings, distill_int8
    from edge_distill.hashing import sha256
    from edge_distill.hashing import library_versions

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
        float_outputs = run_model(fp32, calibrate_on)
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
    judgement = budget.judge(reference, run_model(dst, held_out), tensors[1], tensors[0])
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
