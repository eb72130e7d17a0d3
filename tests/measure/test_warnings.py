"""Warnings about figures that should not be trusted as they stand: each kind is raised by its
cause alone, and reaches the terminal and manifest.json."""

import json
import platform

import pytest

from edge_distill.config import DeviceConfig
from edge_distill.measure.warnings import measurement_warnings
from tests.test_cli import invoke, tiny_args

HOST = {"arch": "x86_64", "cpu": "test cpu", "cores": 2}


def report(int8_p50=0.01, fp32_p50=0.02, cv=2.0, p99_factor=1.2, threads=2, requested=2, arch="x86_64"):
    def metric(variant, p50):
        return {"variant": variant, "latency_ms": {"p50": p50, "p99": p50 * p99_factor, "cv_p99_pct": cv}}

    return {"metrics": [metric("teacher_fp32", 0.1), metric("student_fp32", fp32_p50), metric("student_int8", int8_p50)],
            "method": {"threads": threads, "threads_requested": requested}, "host": {**HOST, "arch": arch},
            "shipped_variant": "student_int8"}


X86 = DeviceConfig(arch="x86_64")


def kinds(warnings):
    return [w["kind"] for w in warnings]


def test_clean_figures_give_no_warning():
    assert measurement_warnings(report(), X86) == []


@pytest.mark.parametrize("figures, kind, words", [
    (dict(cv=40.0), "noisy", "cv 40% up to p99"),
    (dict(p99_factor=5.0), "noisy", "p99 5.0x p50"),
    (dict(threads=2, requested=4), "threads_clamped", "4 threads asked, 2 used"),
    (dict(int8_p50=0.03), "int8_slower", "p50 0.0300 vs 0.0200 ms"),
    (dict(arch="aarch64"), "other_architecture", "latency budgets are not judged"),
])
def test_each_warning_comes_from_its_cause(figures, kind, words):
    warnings = measurement_warnings(report(**figures), X86)
    assert kind in kinds(warnings) and any(words in w["message"] for w in warnings), warnings
    assert set(kinds(warnings)) == {kind}


def test_int8_slower_only_when_int8_ships():
    slow = report(int8_p50=0.03)
    slow["shipped_variant"] = "student_fp32"  # the search already chose fp32
    assert measurement_warnings(slow, X86) == []


def test_warnings_reach_the_terminal_and_the_manifest(tiny_cache, tmp_path):
    out = tmp_path / "dist"
    result = invoke("build", "--profile", "rpi4", "--out", str(out), "--cache-dir", str(tiny_cache),
                    *tiny_args("--set", "benchmark.threads=512"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    stated = {w["kind"]: w["message"] for w in manifest["warnings"]}
    assert "512 threads asked" in stated["threads_clamped"]
    cross_architecture = platform.machine().lower() not in ("aarch64", "arm64")  # rpi4 is aarch64
    assert ("other_architecture" in stated) == cross_architecture
    if cross_architecture:  # a budget is not judged from another architecture's figures
        assert manifest["budgets"]["latency_p50_within"] is None
    for message in stated.values():
        assert f"Warning: {message}" in result.stderr
        assert message in (out / "README.md").read_text() and message in (out / "report.md").read_text()
