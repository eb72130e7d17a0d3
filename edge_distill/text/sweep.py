"""Student sizes for a text budget: the budget sweep of pipeline/sweep.py, for text students.

Each layer count is built as its own cached student (the teacher's outputs, and a fine-tuned
teacher, are shared) and measured as every text build is; the fewest-parameter student meeting the
latency budget (p50 of the int8 student at the longest length timed) and the quality budget (test
accuracy for a classifier; recall@10 on the held-out retrieval task for embeddings) ships, with
the sweep beside it in sweep.json and sweep.svg.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_distill.config import BudgetConfig
from edge_distill.errors import ConfigError
from edge_distill.pipeline.staging import staging_folder
from edge_distill.text.build import TextBuildSettings, build_text_bundle


def quality_of(manifest: dict[str, Any], model: str = "student_int8") -> tuple[str, float]:
    """(what the quality budget measures, the figure of `model`: the int8 student unless named) for a text bundle."""
    quality = manifest["metrics"]["quality"][model]
    if manifest["task"] == "text-classification":
        return "test accuracy", quality["accuracy"]
    if quality.get("queries"):
        return "held-out recall@10", quality["recall@10"]
    return "cosine to the teacher", quality["cosine_to_teacher"]


def build_text_for_budget(settings: TextBuildSettings, layer_counts: list[int], budget: BudgetConfig, out: Path,
                          cache_dir: Path, force: bool = False,
                          progress: Callable[[str], None] = lambda _: None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build a student per layer count, pick, publish. Returns the shipped manifest and the sweep report."""
    from edge_distill.pipeline.publish import check_out, publish
    from edge_distill.pipeline.sweep import mark_pareto, pick_smallest, render_svg

    check_out(out)
    if not layer_counts:
        raise ConfigError("--sweep-layers: no layer counts", "e.g. --sweep-layers 1,2,3")
    rows, manifests = [], {}
    progress(f"budget sweep over {len(layer_counts)} student sizes: p50 <= {budget.max_latency_ms or 'any'} ms, "
             f"quality >= {budget.min_accuracy or 'any'}")
    with staging_folder(out.absolute().parent, f".{out.name}.tmp-") as tmp:  # publish removes what a kill leaves
        for layers in sorted(set(layer_counts)):
            size = f"{layers}-layer"
            progress(f"{size}: building")
            manifest = build_text_bundle(dataclasses.replace(settings, layers=layers), Path(tmp) / size, cache_dir,
                                         force, progress)
            measure, quality = quality_of(manifest)
            length = list(manifest["metrics"]["p50_ms"])[-1]
            p50 = manifest["metrics"]["p50_ms"][length]["student_int8"]
            row = {"size": size, "layers": layers, "params": manifest["model"]["parameters"],
                   "size_bytes": manifest["metrics"]["size_bytes"]["student_int8"], "length": int(length),
                   "accuracy": quality}
            rows.append(row | ({"status": "measured", "p50_ms": p50} if isinstance(p50, float)
                               else {"status": f"not timed: {p50}"}))
            manifests[size] = manifest
        mark_pareto(rows)
        chosen, why = pick_smallest(rows, budget, measure)
        chosen["chosen"] = True
        progress(why)
        report = {"budgets": {"max_latency_ms": budget.max_latency_ms or None, "min_quality": budget.min_accuracy or None},
                  "quality": measure, "latency": f"p50 of the int8 student at {rows[0]['length']} tokens, batch 1",
                  "rows": rows, "chosen": chosen["size"], "why": why}
        (Path(tmp) / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
        (Path(tmp) / "sweep.svg").write_text(render_svg(rows, budget, measure))
        bundle = Path(tmp) / chosen["size"]
        publish({p.name: p for p in bundle.iterdir()} | {name: Path(tmp) / name for name in ("sweep.json", "sweep.svg")},
                out)
    progress(f"bundle for the {chosen['size']} student written to {out}")
    return manifests[chosen["size"]], report


def text_sweep_table(report: dict[str, Any]) -> str:
    """One line per size: parameters, int8 file, p50, quality; the front marked '*', the shipped '<-'."""
    lines = [f"{'size':<9}{'params':>11}{'int8 MB':>9}{'p50 ms':>9}  {report['quality']}"]
    for r in report["rows"]:
        timed = f"{r['p50_ms']:>9.3f}" if r["status"] == "measured" else f"{'-':>9}"
        mark = ("*" if r.get("pareto") else " ") + (" <- shipped" if r.get("chosen") else "")
        lines.append(f"{r['size']:<9}{r['params']:>11,}{r['size_bytes'] / 2**20:>9.2f}{timed}  {r['accuracy']:.4f} {mark}")
    return "\n".join(lines + [f"* Pareto front; {report['latency']}", report["why"]])
