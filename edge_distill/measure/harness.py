"""Benchmark several model variants the same way and collect one table of figures."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_distill.device.runner import describe_host, measure_latency, predict_classes, usable_threads
from edge_distill.config import BenchmarkConfig, BuildConfig, DeviceConfig
from edge_distill.progress import progress_bar


def benchmark_variants(
    variants: dict[str, tuple[Path, int]],  # name -> (model file, parameter count); the first is the reference
    x_test: np.ndarray,  # (N, C, H, W): an array or data.samples files, read in batches
    y_test: np.ndarray,  # (N,)
    cfg: BenchmarkConfig,
    device: DeviceConfig,
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """Accuracy, agreement with the first variant, size and latency of each variant."""
    threads = usable_threads(cfg.threads)  # the clamp is recorded in the report's method
    sample = x_test[: cfg.batch_size]
    if len(sample) < cfg.batch_size:
        sample = np.resize(sample, (cfg.batch_size, *sample.shape[1:]))
    providers = provider_specs(cfg)
    metrics, reference = [], None
    progress(f"benchmarking {len(variants)} variants: each >= {cfg.timed_runs} timed runs and >= "
             f"{cfg.min_seconds:g} s at batch {cfg.batch_size}, {threads} thread(s)")
    with progress_bar(progress, len(variants), "benchmark") as bar:
        for name, (model, params) in variants.items():
            bar.update(0, variant=name)
            predicted = predict_classes(model, x_test, providers, threads, require_first=not cfg.allow_cpu_fallback)
            reference = predicted if reference is None else reference
            latency = measure_latency(
                model, sample, providers, threads, cfg.warmup_runs, cfg.timed_runs, cfg.cold_start_runs,
                cfg.min_seconds, require_first=not cfg.allow_cpu_fallback, time_limit_s=cfg.time_limit_s,
            )
            metrics.append({
                "variant": name,
                "provider": latency["provider"],
                "provider_requested": cfg.providers[0],
                "fell_back_to_cpu": latency["provider"] != cfg.providers[0],
                "accuracy": float((predicted == y_test).mean()),
                "teacher_agreement": float((predicted == reference).mean()),
                "params": params,
                "size_bytes": model.stat().st_size,
                "latency_ms": latency,
            })
            bar.update(1, p50=f"{latency['p50']:.4f} ms")
    host = describe_host()
    return {
        "metrics": metrics,
        "host": host,
        "measured_on": measurement_note(host, device),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "method": {
            "providers": cfg.providers,
            "threads": threads,
            "threads_requested": cfg.threads,
            "batch_size": cfg.batch_size,
            "warmup_runs": cfg.warmup_runs,
            "timed_runs": cfg.timed_runs,
            "min_seconds": cfg.min_seconds,
            "cold_start_runs": cfg.cold_start_runs,
            "timer": "time.perf_counter around InferenceSession.run, in process",
            "cold_start": "InferenceSession creation + first run, median of cold_start_runs, model file in page cache",
            "accuracy": f"top-1 on the {len(y_test)}-sample test split; teacher_agreement: same top-1 as the first variant",
        },
    }


def measurement_note(host: dict, device: DeviceConfig) -> str:
    """Say plainly where the figures come from, so host figures are never read as device figures."""
    where = f"this host ({host['arch']}, {host['cpu']}, {host['cores']} cores)"
    if host["arch"] != device.arch:
        return f"Measured on {where}, NOT on the target device {device.description or device.name}: expect different latency there."
    return f"Measured on {where}, which has the profile's architecture ({device.arch}); it may not be the target device itself."


def provider_specs(cfg: BenchmarkConfig) -> list:
    """Providers with their options, as onnxruntime takes them; the CPU last when fallback is allowed."""
    specs = [(name, cfg.provider_options.get(name, {})) for name in cfg.providers]
    if cfg.allow_cpu_fallback and "CPUExecutionProvider" not in cfg.providers:
        specs.append(("CPUExecutionProvider", {}))
    return specs


def check_providers(providers: list[str], allow_cpu_fallback: bool = False) -> None:
    """Fail before any work when this onnxruntime lacks a provider the profile needs (unless the
    profile allows falling back to the CPU; the benchmark then records the fallback)."""
    import onnxruntime as ort

    from edge_distill.errors import ProviderUnavailableError

    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing and not allow_cpu_fallback:
        raise ProviderUnavailableError(
            f"benchmark.providers: {', '.join(missing)} not available in this onnxruntime (has {', '.join(available)})",
            "install the matching build (e.g. onnxruntime-gpu for CUDAExecutionProvider), pick a CPU profile, "
            "or set benchmark.allow_cpu_fallback = true",
        )


def add_estimates(report: dict, models: dict[str, Path], device: DeviceConfig, batch: int) -> None:
    """Put each variant's roofline estimate beside its measured figures in `report` (from
    `benchmark_variants`), and measured / estimate where the host has the device's architecture
    (a ratio to another machine's figure means nothing)."""
    from edge_distill.measure.estimate import estimate_latency

    for metric in report["metrics"]:
        estimate = estimate_latency(models[metric["variant"]], device, report["method"]["threads"], batch)
        metric["estimate_ms"] = estimate["estimate_ms"]
        if report["host"]["arch"] == device.arch:
            metric["measured_over_estimate"] = metric["latency_ms"]["p50"] / estimate["estimate_ms"]


def estimate_model(model: Path, config: BuildConfig, batch: int = 1, shapes: dict[str, list[int]] | None = None,
                   measure: bool = False, calibration: Path | None = None, progress=lambda _: None) -> dict:
    """`edge-distill estimate`: the estimate for the profile's device and threads; with `measure`,
    also p50 measured here with the profile's benchmark settings, and measured / estimate. The
    measurement runs on the first sample of `calibration` (data/feeds.py) where given, else on
    zeros: a model that branches on an input's value (a sample rate) needs a real one."""
    from edge_distill.measure.estimate import estimate_latency
    from edge_distill.onnx_model import fix_shapes, load_onnx, model_tensors

    load_onnx(model)  # a clear error for a file that is not a model
    result = estimate_latency(model, config.device, config.benchmark.threads, batch, shapes=shapes)
    if not measure:
        return result
    from edge_distill.sessions import onnxruntime_errors

    inputs, _ = model_tensors(load_onnx(model), str(model))
    fixed = fix_shapes(inputs, shapes or {}, str(model), batch)
    if calibration is not None:
        from edge_distill.data.feeds import load_feeds

        feed = load_feeds(calibration, inputs, fixed)[0]
    else:  # zeros of each input's dtype and fixed shape: the estimate's own shapes, any number of inputs
        feed = {t.name: np.zeros(fixed[t.name], np.dtype(t.dtype)) for t in inputs}
    bench = config.benchmark
    check_providers(bench.providers, bench.allow_cpu_fallback)
    # A model can run for hours (a Loop whose count is an input): the user learns the bound before the wait.
    measured_threads = usable_threads(result["threads"])
    progress(f"timing {model.name} here at {measured_threads} thread(s): at least {bench.timed_runs} runs and "
             f"{bench.min_seconds:g} s, stopped after the time limit of {bench.time_limit_s:g} s (--time-limit)")
    with onnxruntime_errors(f"estimate --measure {model.name} on {'zeros' if calibration is None else calibration}",
                            "time a real sample with --calibration SAMPLES.npz (zeros can send a model down a branch "
                            "it never takes)" if calibration is None else
                            "check the model with onnxruntime directly, or re-export it"):
        # Here, at most this host's cores: more threads than cores would time contention, not the model.
        latency = measure_latency(model, feed, provider_specs(bench), measured_threads, bench.warmup_runs,
                                  bench.timed_runs, bench.cold_start_runs, bench.min_seconds,
                                  require_first=not bench.allow_cpu_fallback, time_limit_s=bench.time_limit_s)
    host = describe_host()
    return result | {"measured_p50_ms": latency["p50"], "measured_threads": measured_threads,
                     "measured_on": measurement_note(host, config.device),
                     # a ratio to another machine's figure means nothing
                     "measured_over_estimate": latency["p50"] / result["estimate_ms"]
                     if host["arch"] == config.device.arch else None}
