"""Bundle reports: JSON, CSV, Markdown, and the HTML page as headless Chromium renders it."""

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from edge_distill.bundle.report import COLORS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_reports_agree_with_the_manifest(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    rows = list(csv.DictReader((tiny_bundle / "report.csv").open()))
    assert [r["variant"] for r in rows] == ["teacher_fp32", "student_fp32", "student_int8"]
    for row, metric in zip(rows, manifest["metrics"]):
        assert float(row["p50"]) == pytest.approx(metric["latency_ms"]["p50"])
        assert float(row["accuracy"]) == pytest.approx(metric["accuracy"])
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
    page = f"file://{tiny_bundle / 'report.html'}"
    dom = chromium("--dump-dom", page, cwd=tmp_path).stdout
    assert dom.count('class="bar"') == 3 * 30  # a 30-bin histogram per variant, parsed by the browser
    assert dom.count('class="point"') == 3 and dom.count('<circle class="shipped"') == 1 and dom.count('<tr class="shipped"') == 1
    chromium("--window-size=1000,1400", f"--screenshot={tmp_path / 'shot.png'}", page, cwd=tmp_path)
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).reshape(-1, 3).astype(int)
    for color in COLORS[:3]:  # each variant's bars and point are drawn in its color
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=1) < 30).sum() > 200, color
    green = (pixels[:, 1] > 100) & (pixels[:, 0] < 60) & (pixels[:, 2] < 60)
    assert green.sum() > 20  # the ring around the shipped variant
