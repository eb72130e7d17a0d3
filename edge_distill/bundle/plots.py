"""The report's plots, drawn with matplotlib as inline SVG (text kept as text, so that a browser,
a screen reader and a test can read every tick and label): latency histograms of every variant on
one shared latency axis with p50/p99 markers, and accuracy against p50 latency (the report's
variants, a size sweep's students) with the shipped one ringed."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948")
# Text stays <text>; ids are stable across runs, so a rebuilt report differs only where figures do.
SVG_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "edge-distill", "font.size": 10}


@dataclass(frozen=True)
class Point:
    label: str
    p50_ms: float
    accuracy: float
    color: str = COLORS[0]
    ringed: bool = False  # what ships


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(figure) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(SVG_STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    # Inline in HTML: no XML declaration or DOCTYPE.
    return re.sub(r"^.*?(<svg\b)", r"\1", buffer.getvalue(), count=1, flags=re.S)


def latency_histograms_svg(metrics: list[dict]) -> str:
    """One panel per variant, sharing a log latency axis (ms) so the variants compare at a glance;
    counts of runs per bin; dashed p50 and dotted p99 lines. Runs slower than the 99.9th percentile
    are counted in the last bin, and the caption says how many there were."""
    import matplotlib

    with matplotlib.rc_context(SVG_STYLE):
        figure = _figure(8.0, 1.5 + 1.4 * len(metrics))
        axes = figure.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
        for ax, m, color in zip(axes, metrics, COLORS):
            latency, hist = m["latency_ms"], m["latency_ms"]["histogram"]
            edges, counts = hist["edges_ms"], hist["counts"]
            ax.stairs(counts, edges, fill=True, color=color, gid=f"histogram-{m['variant']}")
            for key, style in (("p50", "--"), ("p99", ":")):
                ax.axvline(latency[key], color="black", linestyle=style, linewidth=1, gid=f"{key}-{m['variant']}")
            ax.set_xscale("log")
            ax.set_ylabel("runs")
            ax.set_title(f"{m['variant']}: p50 {latency['p50']:.4f} ms, p99 {latency['p99']:.4f} ms, "
                         f"{latency['runs']} runs", loc="left", fontsize=9)
        axes[-1].set_xlabel("latency per run (ms, log scale; dashed p50, dotted p99)")
        return _svg(figure)


def scatter_svg(points: list[Point], accuracy_label: str = "accuracy", max_latency_ms: float = 0.0,
                min_accuracy: float = 0.0, front: list[Point] | None = None) -> str:
    """Accuracy (y) against p50 latency (x, ms, from 0); dashed red lines at the budgets (0: none),
    a line through `front` (a Pareto front), what ships ringed in green."""
    import matplotlib

    with matplotlib.rc_context(SVG_STYLE):
        figure = _figure(6.4, 4.0)
        ax = figure.subplots()
        if not points:
            ax.text(0.5, 0.5, "nothing was measured", ha="center", transform=ax.transAxes)
            return _svg(figure)
        if front and len(front) > 1:
            ordered = sorted(front, key=lambda p: p.p50_ms)
            ax.plot([p.p50_ms for p in ordered], [p.accuracy for p in ordered], color="steelblue", linewidth=1,
                    gid="pareto-front")
        for i, p in enumerate(points):
            ax.scatter([p.p50_ms], [p.accuracy], s=36, color=p.color, zorder=3, gid=f"point-{p.label}")
            # Labels step down by point, so that points at (nearly) one place keep readable labels.
            ax.annotate(p.label, (p.p50_ms, p.accuracy), textcoords="offset points", xytext=(8, 4 - 11 * (i % 4)),
                        fontsize=8, color=p.color)
            if p.ringed:
                ax.scatter([p.p50_ms], [p.accuracy], s=200, facecolors="none", edgecolors="green", linewidths=2,
                           zorder=4, gid="shipped")
        if max_latency_ms:
            ax.axvline(max_latency_ms, color="red", linestyle="--", linewidth=1, gid="latency-budget")
        if min_accuracy:
            ax.axhline(min_accuracy, color="red", linestyle="--", linewidth=1, gid="accuracy-budget")
        ax.set_xlim(left=0, right=max([p.p50_ms for p in points] + [max_latency_ms]) * 1.2)
        ax.set_xlabel("p50 latency (ms)")
        ax.set_ylabel(accuracy_label)
        ax.grid(True, linewidth=0.3)
        return _svg(figure)
