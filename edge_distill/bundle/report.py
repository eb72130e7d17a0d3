"""Benchmark reports written into the bundle: JSON, CSV, Markdown and a self-contained HTML page
with plots (latency histogram per variant; accuracy vs p50 latency with the shipped variant marked)."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from edge_distill.bundle.plots import Point, scatter_svg

REPORT_FILES = ("report.json", "report.csv", "report.md", "report.html")
COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759")
CSV_COLUMNS = ("variant", "provider", "accuracy", "teacher_agreement", "params", "size_bytes", "cold_start", "p50",
               "p90", "p99", "mean", "std", "min", "max", "throughput_per_s", "runs", "estimate_ms")


def write_reports(manifest: dict[str, Any], out: Path, markdown_table: str) -> None:
    shipped = manifest["model"]["variant"]
    report = {"metrics": manifest["metrics"], "shipped_variant": shipped, **manifest["measurement"]}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.csv").write_text(render_csv(manifest["metrics"]))
    (out / "report.md").write_text(f"# Benchmark\n\n{manifest['measurement']['measured_on']}\n\n"
                                   f"{markdown_table}\n\nShipped: `{shipped}`.\n")
    (out / "report.html").write_text(render_html(manifest))


def render_csv(metrics: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for m in metrics:
        flat = {**m, **m["latency_ms"]}
        writer.writerow([flat.get(column, "") for column in CSV_COLUMNS])
    return buffer.getvalue()


def render_html(manifest: dict[str, Any]) -> str:
    metrics, shipped = manifest["metrics"], manifest["model"]["variant"]
    rows = "".join(
        f"<tr{' class=shipped' if m['variant'] == shipped else ''}><td>{html.escape(m['variant'])}</td>"
        f"<td>{m['params']:,}</td><td>{m['size_bytes']:,}</td><td>{m['accuracy']:.4f}</td>"
        f"<td>{m['latency_ms']['cold_start']:.3f}</td><td>{m['latency_ms']['p50']:.4f}</td>"
        f"<td>{m['latency_ms']['p90']:.4f}</td><td>{m['latency_ms']['p99']:.4f}</td></tr>" for m in metrics)
    title = f"{manifest['profile']['name']}: benchmark of {manifest['model']['file']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:960px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} tr.shipped{{font-weight:bold;background:#eef6ee}}
figure{{margin:1em 0}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(manifest['measurement']['measured_on'])}</p>
<table><tr><th>variant</th><th>params</th><th>bytes</th><th>accuracy</th><th>cold ms</th><th>p50 ms</th>
<th>p90 ms</th><th>p99 ms</th></tr>{rows}</table>
<figure id="histograms"><figcaption>Latency per run (ms, log scale)</figcaption>{histograms_svg(metrics)}</figure>
<figure id="tradeoff"><figcaption>Accuracy vs p50 latency; the shipped variant is ringed</figcaption>
{tradeoff_svg(metrics, shipped)}</figure>
</body></html>
"""


def histograms_svg(metrics: list[dict]) -> str:
    width, panel, pad = 900, 140, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{panel * len(metrics)}">']
    for row, (m, color) in enumerate(zip(metrics, COLORS)):
        hist = m["latency_ms"]["histogram"]
        top, counts = row * panel, hist["counts"]
        peak = max(counts) or 1
        bar = (width - 2 * pad) / len(counts)
        parts.append(f'<text x="{pad}" y="{top + 16}">{html.escape(m["variant"])}: '
                     f'{hist["edges_ms"][0]:.4f} to {hist["edges_ms"][-1]:.4f} ms</text>')
        for i, count in enumerate(counts):
            h = (panel - 40) * count / peak
            parts.append(f'<rect class="bar" x="{pad + i * bar:.1f}" y="{top + panel - 10 - h:.1f}" '
                         f'width="{bar - 1:.1f}" height="{h:.1f}" fill="{color}"/>')
    return "\n".join(parts + ["</svg>"])


def tradeoff_svg(metrics: list[dict], shipped: str) -> str:
    return scatter_svg([Point(m["variant"], m["latency_ms"]["p50"], m["accuracy"], color, m["variant"] == shipped)
                        for m, color in zip(metrics, COLORS)], "test accuracy")
