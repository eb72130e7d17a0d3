"""When a measured figure should not be trusted as it stands, say so: in the terminal, the report,
the manifest and the model card. Each warning is {"kind", "message"}; kinds are stable names."""

from __future__ import annotations

from edge_distill.config import DeviceConfig

# Above these, a run-to-run spread says the host was busy (another process, frequency scaling). The
# coefficient of variation is taken over the runs up to p99: one stall among thousands of sub-ms
# runs would otherwise raise it on every build.
NOISY_CV_PCT = 25.0
NOISY_P99_OVER_P50 = 2.5


def measurement_warnings(report: dict, device: DeviceConfig) -> list[dict[str, str]]:
    """Warnings about a `benchmark_variants` report (with `shipped_variant`) for `device`."""
    warnings = []
    for m in report["metrics"]:
        latency = m["latency_ms"]
        ratio = latency["p99"] / latency["p50"] if latency["p50"] > 0 else 0.0
        cv = latency.get("cv_p99_pct", 0.0)
        if cv > NOISY_CV_PCT or ratio > NOISY_P99_OVER_P50:
            warnings.append({"kind": "noisy", "message":
                             f"{m['variant']}: latency spread is high (cv {cv:.0f}% up to p99, p99 "
                             f"{ratio:.1f}x p50): the host was busy; rerun on an idle machine or raise "
                             "benchmark.min_seconds"})
    method = report["method"]
    if method["threads"] < method["threads_requested"]:
        warnings.append({"kind": "threads_clamped", "message":
                         f"{method['threads_requested']} threads asked, {method['threads']} used (this host has "
                         f"{report['host']['cores']} cores): the figures are for {method['threads']} thread(s)"})
    by_variant = {m["variant"]: m for m in report["metrics"]}
    shipped = report.get("shipped_variant")
    if shipped == "student_int8" and "student_fp32" in by_variant:
        int8, fp32 = by_variant["student_int8"]["latency_ms"]["p50"], by_variant["student_fp32"]["latency_ms"]["p50"]
        if int8 > fp32:
            warnings.append({"kind": "int8_slower", "message":
                             f"int8 ships but measured slower than fp32 on this host ({report['host']['arch']}): "
                             f"p50 {int8:.4f} vs {fp32:.4f} ms; "
                             "--search-quantization ships the faster within the accuracy budget"})
    if report["host"]["arch"] != device.arch:
        warnings.append({"kind": "other_architecture", "message":
                         f"figures measured on {report['host']['arch']}, the device is {device.arch}: latency budgets "
                         "are not judged; measure on the device (--remote) or under its architecture"})
    return warnings
