"""Budget-driven build: the smallest student that meets the device's latency and accuracy budgets.

Every (width, depth) of the sweep is first estimated from its exported graph (roofline, as int8);
sizes whose estimate exceeds `estimate_slack` x the latency budget are skipped untrained. The rest
run the normal cached pipeline (data and teacher are shared), are measured, and the smallest that
meets both budgets ships, with the whole sweep as a Pareto table and an SVG plot.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_distill.config import BudgetConfig, BuildConfig
from edge_distill.errors import BudgetExceededError, ConfigError
from edge_distill.pipeline.build import run_pipeline
from edge_distill.pipeline.runner import PipelineRun
from edge_distill.pipeline.publish import check_out, publish
from edge_distill.progress import Progress
from edge_distill.pipeline.stages.package import PackageStage


def build_for_budget(
    config: BuildConfig, out: Path, cache_dir: Path, force: bool = False, progress: Progress = lambda _: None
) -> tuple[PipelineRun, dict]:
    """Sweep, pick, publish. Returns the chosen size's run and the sweep report."""
    check_out(out)
    budget = config.budget
    dataset = json.loads(run_pipeline(config, cache_dir, "data", progress=progress).artifacts["dataset.json"].read_text())
    rows, runs = [], {}
    sizes = [(width, depth) for depth in budget.sweep_depths for width in sorted(budget.sweep_widths)]
    progress(f"budget sweep over {len(sizes)} student sizes: p50 <= {budget.max_latency_ms or 'any'} ms, "
             f"test accuracy >= {budget.min_accuracy or 'any'}")
    for width, depth in sizes:
        candidate = dataclasses.replace(config, student=dataclasses.replace(config.student, width=width, depth=depth))
        row: dict[str, Any] = {"size": f"w{width}-d{depth}", "width": width, "depth": depth}
        row |= estimate_student(candidate, dataset)
        if budget.max_latency_ms and row["estimate_ms"] > budget.estimate_slack * budget.max_latency_ms:
            progress(f"{row['size']}: estimate {row['estimate_ms']:.3f} ms > {budget.estimate_slack:g} x budget: skipped")
            rows.append(row | {"status": "skipped by estimate"})
            continue
        progress(f"{row['size']}: estimate {row['estimate_ms']:.3f} ms: building")
        run = run_pipeline(candidate, cache_dir, PackageStage.name, force=force, progress=progress)
        manifest = json.loads(run.artifacts["manifest.json"].read_text())
        shipped = next(m for m in manifest["metrics"] if m["variant"] == manifest["model"]["variant"])
        row |= {"status": "measured", "accuracy": shipped["accuracy"], "p50_ms": shipped["latency_ms"]["p50"],
                "size_bytes": shipped["size_bytes"], "params": shipped["params"], "variant": shipped["variant"]}
        row["measured_over_estimate"] = row["p50_ms"] / row["estimate_ms"]
        rows.append(row)
        runs[row["size"]] = run
    mark_pareto(rows)
    chosen, why = pick_smallest(rows, budget)
    chosen["chosen"] = True
    progress(why)
    report = {"budgets": {"max_latency_ms": budget.max_latency_ms or None, "min_accuracy": budget.min_accuracy or None},
              "accuracy": "test accuracy of the shipped model", "rows": rows, "chosen": chosen["size"], "why": why,
              "measured_on": manifest_note(runs[chosen["size"]])}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
        (Path(tmp) / "sweep.svg").write_text(render_svg(rows, budget))
        files = {name: runs[chosen["size"]].artifacts[name] for name in PackageStage.outputs}
        publish(files | {"sweep.json": Path(tmp) / "sweep.json", "sweep.svg": Path(tmp) / "sweep.svg"}, out)
    progress(f"bundle for {chosen['size']} written to {out}")
    return runs[chosen["size"]], report


def estimate_student(config: BuildConfig, dataset: dict) -> dict:
    """Roofline estimate of an untrained student of this size, exported as it will be, run as int8."""
    import numpy as np

    from edge_distill.measure.estimate import estimate_latency
    from edge_distill.export.onnx_export import export_onnx
    from edge_distill.models.loading import build_model, count_params

    student = config.student
    model = build_model(student.factory, student.family, tuple(dataset["input_shape"]), len(dataset["labels"]),
                        student.width, student.depth, "student")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "student.onnx"
        export_onnx(model, np.zeros((2, *dataset["input_shape"]), np.float32), path, config.export.opset)
        estimate = estimate_latency(path, config.device, config.benchmark.threads, config.benchmark.batch_size,
                                    assume_int8=True)
    return {"params": count_params(model), "macs": estimate["macs"], "estimate_ms": estimate["estimate_ms"]}


def mark_pareto(rows: list[dict]) -> None:
    """A measured row is on the Pareto front if no other is at least as fast and as accurate, and better in one."""
    measured = [r for r in rows if r["status"] == "measured"]
    for row in measured:
        row["pareto"] = not any(
            o is not row and o["p50_ms"] <= row["p50_ms"] and o["accuracy"] >= row["accuracy"]
            and (o["p50_ms"] < row["p50_ms"] or o["accuracy"] > row["accuracy"]) for o in measured)


def pick_smallest(rows: list[dict], budget: BudgetConfig, quality: str = "test accuracy",
                  sizes: str = "budget.sweep_widths/sweep_depths", latency_flag: str = "--max-latency-ms"
                  ) -> tuple[dict, str]:
    """The fewest-parameter measured row meeting both budgets; else best effort or a clear error.
    A row's "accuracy" is `quality`, named so in the messages; `sizes` and `latency_flag` are the
    setting that lists the sizes and the flag of the latency budget, which the hints name."""
    measured = [r for r in rows if r["status"] == "measured"]

    def fast_enough(r):
        return not budget.max_latency_ms or r["p50_ms"] <= budget.max_latency_ms

    def accurate_enough(r):
        return r["accuracy"] >= budget.min_accuracy

    meeting = [r for r in measured if fast_enough(r) and accurate_enough(r)]
    if meeting:
        chosen = min(meeting, key=lambda r: (r["params"], r["p50_ms"]))
        return chosen, (f"{chosen['size']} is the smallest student meeting both budgets: {chosen['params']:,} params, "
                        f"p50 {chosen['p50_ms']:.4f} ms, {quality} {chosen['accuracy']:.4f}")
    if not measured:
        fastest = min(rows, key=lambda r: r["estimate_ms"])
        message = (f"every student size is estimated over the latency budget: the fastest, {fastest['size']}, at "
                   f"{fastest['estimate_ms']:.3f} ms vs {budget.max_latency_ms:g} ms "
                   f"(x{fastest['estimate_ms'] / budget.max_latency_ms:.1f})")
        raise BudgetExceededError(message, f"raise {latency_flag}, add smaller sizes to {sizes}, "
                                           "or raise budget.estimate_slack")
    fastest = min(measured, key=lambda r: r["p50_ms"])
    best = max(measured, key=lambda r: r["accuracy"])
    failures = []
    if not any(fast_enough(r) for r in measured):
        failures.append(f"latency: the fastest, {fastest['size']}, has p50 {fastest['p50_ms']:.4f} ms, "
                        f"{100 * (fastest['p50_ms'] / budget.max_latency_ms - 1):.0f}% over {budget.max_latency_ms:g} ms")
    if not any(accurate_enough(r) for r in measured):
        failures.append(f"{quality}: the best, {best['size']}, reaches {best['accuracy']:.4f}, "
                        f"{100 * (budget.min_accuracy - best['accuracy']):.2f} points under {budget.min_accuracy:g}")
    if not failures:
        failures.append(f"no single size meets both: the fast ones miss the {quality} budget and the others "
                        "the latency budget")
    message = "no student size meets the budgets; " + "; ".join(failures)
    if not budget.ship_best_effort:
        raise BudgetExceededError(message, f"relax a budget, add sizes to {sizes}, or ship the closest with "
                                           "--ship-best-effort")
    fast = [r for r in measured if fast_enough(r)]
    chosen = max(fast, key=lambda r: r["accuracy"]) if fast else fastest
    return chosen, f"best effort ({message}): shipping {chosen['size']}"


def sweep_table(report: dict) -> str:
    """The sweep as a Pareto table: one line per size, front marked '*', the chosen one '<-'."""
    lines = [f"{'size':<8}{'params':>9}{'MACs':>12}{'est. ms':>9}{'p50 ms':>9}{'meas/est':>9}{'accuracy':>10}  "]
    for r in report["rows"]:
        if r["status"] != "measured":
            lines.append(f"{r['size']:<8}{r['params']:>9,}{r['macs']:>12,}{r['estimate_ms']:>9.4f}  {r['status']}")
            continue
        mark = ("*" if r.get("pareto") else " ") + (" <- shipped" if r.get("chosen") else "")
        lines.append(f"{r['size']:<8}{r['params']:>9,}{r['macs']:>12,}{r['estimate_ms']:>9.4f}{r['p50_ms']:>9.4f}"
                     f"{r['measured_over_estimate']:>9.2f}{r['accuracy']:>10.4f} {mark}")
    return "\n".join(lines + ["* Pareto front (no other size is both faster and more accurate)", report["why"]])


def manifest_note(run: PipelineRun) -> str:
    return json.loads(run.artifacts["manifest.json"].read_text())["measurement"]["measured_on"]


def render_svg(rows: list[dict], budget: BudgetConfig, quality: str = "test accuracy") -> str:
    """`quality` (a row's "accuracy") vs p50 latency of every measured size; Pareto front joined,
    the chosen one ringed."""
    from edge_distill.bundle.plots import Point, scatter_svg

    measured = {r["size"]: Point(r["size"], r["p50_ms"], r["accuracy"], ringed=bool(r.get("chosen")))
                for r in rows if r["status"] == "measured"}
    front = [measured[r["size"]] for r in rows if r["status"] == "measured" and r.get("pareto")]
    return scatter_svg(list(measured.values()), quality, budget.max_latency_ms, budget.min_accuracy, front)


@dataclasses.dataclass(frozen=True)
class LayerSweep:
    """A sweep over a pipeline's student layer counts (text, llm): how one is built and measured."""
    build: Callable[[int, Path], dict[str, Any]]  # (layers, folder) -> the manifest of the bundle built there
    row: Callable[[dict[str, Any]], dict[str, Any]]  # manifest -> params, size_bytes, and p50_ms or a status
    quality: Callable[[dict[str, Any]], tuple[str, float]]  # manifest -> (what the quality budget measures, its figure)
    latency: str  # what a row's p50_ms is
    latency_flag: str = "--max-latency-ms"  # the command's flag for the latency budget, named in hints


def sweep_layers(sweep: LayerSweep, layer_counts: list[int], budget: BudgetConfig, out: Path,
                 progress: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build a student per layer count (each its own cached build), pick the smallest meeting the
    budgets, publish it with sweep.json and sweep.svg. Returns the shipped manifest and the report."""
    from edge_distill.staging import staging_folder

    check_out(out)
    if not layer_counts:
        raise ConfigError("--sweep-layers: no layer counts", "e.g. --sweep-layers 1,2,3")
    rows, manifests = [], {}
    progress(f"budget sweep over {len(set(layer_counts))} student sizes: p50 <= {budget.max_latency_ms or 'any'} ms "
             f"({sweep.latency}), quality >= {budget.min_accuracy or 'any'}")
    with staging_folder(out.absolute().parent, f".{out.name}.tmp-") as tmp:  # publish removes what a kill leaves
        for layers in sorted(set(layer_counts)):
            size = f"{layers}-layer"
            progress(f"{size}: building")
            manifests[size] = sweep.build(layers, Path(tmp) / size)
            measure, quality = sweep.quality(manifests[size])
            rows.append({"size": size, "layers": layers, **sweep.row(manifests[size]), "accuracy": quality})
        mark_pareto(rows)
        chosen, why = pick_smallest(rows, budget, measure, "--sweep-layers", sweep.latency_flag)
        chosen["chosen"] = True
        progress(why)
        report = {"budgets": {"max_latency_ms": budget.max_latency_ms or None, "min_quality": budget.min_accuracy or None},
                  "quality": measure, "latency": sweep.latency, "rows": rows, "chosen": chosen["size"], "why": why}
        (Path(tmp) / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
        (Path(tmp) / "sweep.svg").write_text(render_svg(rows, budget, measure))
        bundle = Path(tmp) / chosen["size"]
        publish({p.name: p for p in bundle.iterdir()} | {name: Path(tmp) / name for name in ("sweep.json", "sweep.svg")},
                out)
    progress(f"bundle for the {chosen['size']} student written to {out}")
    return manifests[chosen["size"]], report


def layer_sweep_table(report: dict[str, Any]) -> str:
    """One line per layer count: parameters, model file, latency, quality; the front marked '*', the shipped '<-'."""
    lines = [f"{'size':<9}{'params':>12}{'file MB':>9}{'p50 ms':>9}  {report['quality']}"]
    for r in report["rows"]:
        timed = f"{r['p50_ms']:>9.3f}" if r["status"] == "measured" else f"{'-':>9}"
        mark = ("*" if r.get("pareto") else " ") + (" <- shipped" if r.get("chosen") else "")
        lines.append(f"{r['size']:<9}{r['params']:>12,}{r['size_bytes'] / 2**20:>9.2f}{timed}  {r['accuracy']:.4f} {mark}")
    return "\n".join(lines + [f"* Pareto front; p50 ms: {report['latency']}", report["why"]])
