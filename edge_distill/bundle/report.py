"""Benchmark reports written into the bundle: JSON, CSV (units in the header), Markdown and a
self-contained HTML page: the table, the warnings, how the figures were measured, and the plots."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from edge_distill.bundle.plots import COLORS, Point, latency_histograms_svg, scatter_svg

REPORT_FILES = ("report.json", "report.csv", "report.md", "report.html")
# (header with its unit, where the value is, significant digits or None for integers and text)
CSV_COLUMNS = (
    ("variant", "variant", None), ("provider", "provider", None), ("accuracy", "accuracy", 4),
    ("teacher_agreement", "teacher_agreement", 4), ("params", "params", None), ("size_bytes", "size_bytes", None),
    ("cold_start_ms", "cold_start", 4), ("p50_ms", "p50", 4), ("p90_ms", "p90", 4), ("p95_ms", "p95", 4),
    ("p99_ms", "p99", 4), ("mean_ms", "mean", 4), ("std_ms", "std", 3), ("cv_pct", "cv_pct", 3),
    ("min_ms", "min", 4), ("max_ms", "max", 4), ("throughput_per_s", "throughput_per_s", 4), ("runs", "runs", None),
    ("estimate_ms", "estimate_ms", 4),
)


def write_reports(manifest: dict[str, Any], out: Path, markdown_table: str) -> None:
    shipped = manifest["model"]["variant"]
    report = {"metrics": manifest["metrics"], "shipped_variant": shipped, "warnings": manifest.get("warnings", []),
              **manifest["measurement"]}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.csv").write_text(render_csv(manifest["metrics"]))
    warnings = "".join(f"- {w['message']}\n" for w in manifest.get("warnings", []))
    (out / "report.md").write_text(f"# Benchmark\n\n{manifest['measurement']['measured_on']}\n\n"
                                   f"{markdown_table}\n\nShipped: `{shipped}`.\n"
                                   + (f"\n## Warnings\n\n{warnings}" if warnings else ""))
    (out / "report.html").write_text(render_html(manifest))


def render_csv(metrics: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([header for header, _, _ in CSV_COLUMNS])
    for m in metrics:
        flat = {**m, **m["latency_ms"]}
        writer.writerow(["" if flat.get(key) is None else f"{flat[key]:.{digits}g}" if digits else flat[key]
                         for _, key, digits in CSV_COLUMNS])
    return buffer.getvalue()


def method_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """How the figures were measured, as (what, value) rows for people."""
    method, host = manifest["measurement"]["method"], manifest["measurement"]["host"]
    spread = ", ".join(f"{m['variant']} {m['latency_ms'].get('cv_p99_pct', 0.0):.1f}%" for m in manifest["metrics"])
    versions = ", ".join(f"{name} {version}" for name, version in manifest["versions"].items())
    return [
        ("provider", ", ".join(method["providers"])),
        ("threads", f"{method['threads']} used ({method['threads_requested']} asked)"),
        ("batch", str(method["batch_size"])),
        ("runs", f"{method['warmup_runs']} warm-up, then at least {method['timed_runs']} timed runs and "
                 f"{method['min_seconds']:g} s per variant; {method['cold_start_runs']} cold start(s)"),
        ("timer", method["timer"]),
        ("spread (cv of runs up to p99)", spread),
        ("host", f"{host['cpu']} ({host['arch']}, {host['cores']} cores, {host.get('os', '')})"),
        ("build", f"{manifest['build_id']}, measured {manifest['measurement'].get('date', 'at build time')}"),
        ("versions", versions),
    ]


def render_html(manifest: dict[str, Any]) -> str:
    metrics, shipped = manifest["metrics"], manifest["model"]["variant"]
    rows = "".join(
        f"<tr{' class=shipped' if m['variant'] == shipped else ''}><td>{html.escape(m['variant'])}</td>"
        f"<td>{m['params']:,}</td><td>{m['size_bytes']:,}</td><td>{m['accuracy']:.4f}</td>"
        f"<td>{m['teacher_agreement']:.4f}</td><td>{m['latency_ms']['cold_start']:.3f}</td>"
        f"<td>{m['latency_ms']['p50']:.4f}</td><td>{m['latency_ms']['p90']:.4f}</td>"
        f"<td>{m['latency_ms']['p99']:.4f}</td></tr>" for m in metrics)
    warnings = "".join(f"<li>{html.escape(w['message'])}</li>" for w in manifest.get("warnings", []))
    method = "".join(f"<tr><th>{html.escape(what)}</th><td>{html.escape(value)}</td></tr>"
                     for what, value in method_rows(manifest))
    folded = sum(m["latency_ms"]["histogram"].get("slower_in_last_bin", 0) for m in metrics)
    title = f"{manifest['profile']['name']}: benchmark of {manifest['model']['file']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:960px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} #method th{{text-align:left}}
#method td{{text-align:left}} tr.shipped{{font-weight:bold;background:#eef6ee}} #warnings{{color:#a33}}
figure{{margin:1em 0}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(manifest['measurement']['measured_on'])}</p>
<table id="metrics"><tr><th>variant</th><th>params</th><th>bytes</th><th>accuracy</th><th>agree</th>
<th>cold ms</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th></tr>{rows}</table>
{f'<section id="warnings"><h2>Warnings</h2><ul>{warnings}</ul></section>' if warnings else ''}
<section id="method"><h2>How these figures were measured</h2><table>{method}</table></section>
<figure id="histograms"><figcaption>Latency of every timed run, per variant, on one latency axis
({folded} run(s) slower than each variant's 99.9th percentile are counted in its last bin)</figcaption>
{latency_histograms_svg(metrics)}</figure>
<figure id="tradeoff"><figcaption>Test accuracy against p50 latency; the shipped variant is ringed</figcaption>
{tradeoff_svg(metrics, shipped)}</figure>
</body></html>
"""


def tradeoff_svg(metrics: list[dict], shipped: str) -> str:
    return scatter_svg([Point(m["variant"], m["latency_ms"]["p50"], m["accuracy"], color, m["variant"] == shipped)
                        for m, color in zip(metrics, COLORS)], "test accuracy")
