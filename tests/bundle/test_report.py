"""Bundle reports: JSON, CSV, Markdown, and the HTML page as headless Chromium renders it."""

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from edge_distill.bundle.plots import COLORS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_reports_agree_with_the_manifest(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    rows = list(csv.DictReader((tiny_bundle / "report.csv").open()))
    assert [r["variant"] for r in rows] == ["teacher_fp32", "student_fp32", "student_int8"]
    for row, metric in zip(rows, manifest["metrics"]):  # units in the header, 4 significant digits
        assert float(row["p50_ms"]) == pytest.approx(metric["latency_ms"]["p50"], rel=1e-3)
        assert float(row["accuracy"]) == pytest.approx(metric["accuracy"], abs=1e-4)
    assert {"cold_start_ms", "p95_ms", "p99_ms", "cv_pct", "size_bytes"} <= set(rows[0])
    report = json.loads((tiny_bundle / "report.json").read_text())
    assert report["shipped_variant"] == manifest["model"]["variant"] and report["metrics"] == manifest["metrics"]
    assert "| student_int8 |" in (tiny_bundle / "report.md").read_text()
    for name in ("report.json", "report.csv", "report.md", "report.html"):
        assert name in manifest["files"]  # hashed like the rest, so verify covers them
    histogram = manifest["metrics"][0]["latency_ms"]["histogram"]
    assert len(histogram["edges_ms"]) == len(histogram["counts"]) + 1
    assert sum(histogram["counts"]) == manifest["metrics"][0]["latency_ms"]["runs"]


def chromium(*args, cwd):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={cwd / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run does)")
def test_html_report_renders_its_plots_in_chromium(tiny_bundle, tmp_path):
    """What a person sees: each plot has labelled axes with ticks and units, the histograms share one
    latency axis with p50/p99 markers, the method block says how the figures were measured, and
    the warnings show."""
    from xml.etree import ElementTree

    page = f"file://{tiny_bundle / 'report.html'}"
    dom = chromium("--dump-dom", page, cwd=tmp_path).stdout
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    figures = {f: dom[dom.index(f'<figure id="{f}">'):].split("</figure>")[0] for f in ("histograms", "tradeoff")}
    histograms, tradeoff = (ElementTree.fromstring(figures[f][figures[f].index("<svg"):]) for f in figures)
    for svg, x_label, y_label in ((histograms, "latency per run (ms", "runs"), (tradeoff, "p50 latency (ms)", "test accuracy")):
        texts = ["".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")]
        assert any(x_label in t for t in texts) and any(t == y_label for t in texts), texts
        ticks = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("id", "").startswith(("xtick", "ytick"))]
        assert len(ticks) >= 4  # both axes have ticks, with their labels as text
    ids = {g.get("id") for g in histograms.iter("{http://www.w3.org/2000/svg}g")}
    for m in manifest["metrics"]:  # one panel per variant, with its p50 and p99 markers
        assert {f"histogram-{m['variant']}", f"p50-{m['variant']}", f"p99-{m['variant']}"} <= ids
    assert {f"point-{m['variant']}" for m in manifest["metrics"]} | {"shipped"} <= {
        g.get("id") for g in tradeoff.iter("{http://www.w3.org/2000/svg}g")}
    method = dom[dom.index('<section id="method">'):].split("</section>")[0]
    for words in ("threads", "2 used (4 asked)", "runs", "provider", "CPUExecutionProvider", "versions",
                  "onnxruntime", manifest["build_id"]):
        assert words in method, words
    assert '<section id="warnings">' in dom and "threads asked" in dom
    assert "<th>agree</th>" in dom
    chromium("--window-size=1000,1800", f"--screenshot={tmp_path / 'shot.png'}", page, cwd=tmp_path)
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).reshape(-1, 3).astype(int)
    for color in COLORS[:3]:  # each variant's histogram and point are drawn in its color
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=1) < 40).sum() > 100, color
