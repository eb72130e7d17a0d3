"""Student sizes for a text budget: the layer sweep of pipeline/sweep.py, for text students.

Each layer count is built as its own cached student (the teacher's outputs, and a fine-tuned
teacher, are shared) and measured as every text build is; the fewest-parameter student meeting the
latency budget (p50 of the int8 student at the longest length timed) and the quality budget (test
accuracy for a classifier; recall@10 on the held-out retrieval task for embeddings) ships, with
the sweep beside it in sweep.json and sweep.svg.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_distill.config import BudgetConfig
from edge_distill.text.build import TextBuildSettings, build_text_bundle


def quality_of(manifest: dict[str, Any], model: str = "student_int8") -> tuple[str, float]:
    """(what the quality budget measures, the figure of `model`: the int8 student unless named) for a text bundle."""
    quality = manifest["metrics"]["quality"][model]
    if manifest["task"] == "text-classification":
        return "test accuracy", quality["accuracy"]
    if quality.get("queries"):
        return "held-out recall@10", quality["recall@10"]
    return "cosine to the teacher", quality["cosine_to_teacher"]


def text_row(manifest: dict[str, Any]) -> dict[str, Any]:
    """A text student's sweep row: its int8 model's size and p50 at the longest length timed."""
    length = list(manifest["metrics"]["p50_ms"])[-1]
    p50 = manifest["metrics"]["p50_ms"][length]["student_int8"]
    return {"params": manifest["model"]["parameters"], "size_bytes": manifest["metrics"]["size_bytes"]["student_int8"],
            "length": int(length),
            **({"status": "measured", "p50_ms": p50} if isinstance(p50, float) else {"status": f"not timed: {p50}"})}


def build_text_for_budget(settings: TextBuildSettings, layer_counts: list[int], budget: BudgetConfig, out: Path,
                          cache_dir: Path, force: bool = False,
                          progress: Callable[[str], None] = lambda _: None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build a student per layer count, pick, publish. Returns the shipped manifest and the sweep report."""
    from edge_distill.pipeline.sweep import LayerSweep, sweep_layers

    def build(layers: int, folder: Path) -> dict[str, Any]:
        return build_text_bundle(dataclasses.replace(settings, layers=layers), folder, cache_dir, force, progress)

    sweep = LayerSweep(build, text_row, quality_of, "the int8 student at the longest length timed, batch 1")
    return sweep_layers(sweep, layer_counts, budget, out, progress)
