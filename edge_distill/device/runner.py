"""Latency and prediction runs on ONNX Runtime.

This module is what runs on a device: it imports only the standard library, numpy and
onnxruntime, and nothing else from edge_distill.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def create_session(model: Path, providers: list, threads: int, require_first: bool = True) -> ort.InferenceSession:
    """A session pinned to `threads` intra-op threads. `providers` as onnxruntime takes them: names
    or (name, options) pairs. Unless `require_first` is off, a session that fell back from the first
    provider is an error: its figures would not be that provider's."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
    first = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if require_first and session.get_providers()[0] != first:
        raise RuntimeError(f"{first} was asked for but the session runs on {session.get_providers()[0]}")
    return session


def feed_for(session: ort.InferenceSession, sample) -> dict[str, np.ndarray]:
    """What one run feeds: `sample` itself when it maps input names to arrays (a model with several
    inputs), else `sample` as the model's only input."""
    return sample if isinstance(sample, dict) else {session.get_inputs()[0].name: sample}


def batch_of(sample) -> int:
    """Samples in one run: the first axis of the (first) input, 1 for a scalar input."""
    first = next(iter(sample.values())) if isinstance(sample, dict) else sample
    return len(first) if np.ndim(first) else 1


def measure_latency(
    model: Path,
    sample,  # (B, C, H, W): one batch fed every run; or {input name: array} for several inputs
    providers: list[str],
    threads: int,
    warmup_runs: int,
    timed_runs: int,
    cold_start_runs: int,
    min_seconds: float = 0.0,
    require_first: bool = True,
) -> dict:
    """Cold start (session creation + first run; median of `cold_start_runs`), then warm-up and at
    least `timed_runs` timed runs of one batch, continuing until `min_seconds` have passed (a
    sub-millisecond model needs thousands of runs for a stable p99). Times in milliseconds, from
    time.perf_counter around each run."""
    cold = []
    for _ in range(cold_start_runs):
        start = time.perf_counter()
        session = create_session(model, providers, threads, require_first)
        feed = feed_for(session, sample)
        session.run(None, feed)
        cold.append((time.perf_counter() - start) * 1e3)
    for _ in range(warmup_runs):
        session.run(None, feed)
    times = np.asarray(time_runs(session, feed, timed_runs, min_seconds))
    up_to_p99 = times[times <= np.percentile(times, 99)]
    return {
        "cold_start": float(np.median(cold)),
        "p50": float(np.percentile(times, 50)),
        "p90": float(np.percentile(times, 90)),
        "p95": float(np.percentile(times, 95)),
        "p99": float(np.percentile(times, 99)),
        "mean": float(times.mean()),
        "std": float(times.std()),
        "cv_pct": float(100 * times.std() / times.mean()),  # run-to-run spread, rare stalls included
        # The spread of the runs up to p99: a busy host, not one stall among thousands of runs.
        "cv_p99_pct": float(100 * up_to_p99.std() / up_to_p99.mean()),
        "min": float(times.min()),
        "max": float(times.max()),
        "throughput_per_s": float(batch_of(sample) * 1e3 / times.mean()),
        "runs": len(times),
        "provider": session.get_providers()[0],
        "peak_rss_mb": peak_rss_mb(),
        "histogram": latency_histogram(times),
    }


def latency_histogram(times: np.ndarray, bins: int = 30) -> dict:
    """Counts over log-spaced bins from the fastest run to the 99.9th percentile (slower runs in the
    last bin), for plotting without shipping every sample."""
    low, high = float(times.min()), float(np.percentile(times, 99.9))
    edges = np.geomspace(low, max(high, low * 1.001), bins + 1)
    counts, _ = np.histogram(np.clip(times, low, edges[-1]), bins=edges)
    return {"edges_ms": [round(float(e), 6) for e in edges], "counts": counts.tolist(),
            "slower_in_last_bin": int((times > edges[-1]).sum())}


def time_runs(session: ort.InferenceSession, feed: dict, min_runs: int, min_seconds: float) -> list[float]:
    """Milliseconds of each `session.run`, at least `min_runs` runs and at least `min_seconds`."""
    samples: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while len(samples) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feed)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def compare_latency(
    models: dict[str, Path], sample, providers: list, threads: int, seconds_each: float, rounds: int = 5,
    require_first: bool = True,
) -> dict[str, dict]:
    """p50/p90 of several models measured in interleaved rounds (each round visits every model in
    a rotated order), so a drift of the machine's speed hits all of them alike. Models that fail
    to load or run get {"error": ...}."""
    sessions, results = {}, {}
    for name, model in models.items():
        try:
            sessions[name] = create_session(model, providers, threads, require_first)
            time_runs(sessions[name], feed_for(sessions[name], sample), 10, 0.0)  # warm-up
        except Exception as e:  # an op without a kernel for this provider: report it, measure the rest
            sessions.pop(name, None)
            results[name] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for round_index in range(rounds):
        shift = round_index % max(len(order), 1)
        for name in order[shift:] + order[:shift]:
            times[name] += time_runs(sessions[name], feed_for(sessions[name], sample), 5, seconds_each / rounds)
    for name, samples in times.items():
        results[name] = {"p50": float(np.percentile(samples, 50)), "p90": float(np.percentile(samples, 90)),
                         "runs": len(samples)}
    return results


def run_batched(session: ort.InferenceSession, x: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every output of a single-input model on `x` (N, ...), run `batch_size` samples at a time."""
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    parts = [session.run(names, {input_name: x[i : i + batch_size]}) for i in range(0, len(x), batch_size)]
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(names)}


def predict_classes(model: Path, x: np.ndarray, providers: list, threads: int, batch_size: int = 256,
                    require_first: bool = True) -> np.ndarray:
    """Top-1 class of each sample: (N, C, H, W) -> (N,)."""
    session = create_session(model, providers, threads, require_first)
    return next(iter(run_batched(session, x, batch_size).values())).argmax(axis=1)


def usable_threads(requested: int) -> int:
    """No more threads than this machine has cores: more would only measure oversubscription."""
    return min(requested, os.cpu_count() or 1)


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far (the runner's own process on a device)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


def describe_host() -> dict:
    """The machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "arch": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "onnxruntime": ort.__version__,
    }


def golden_feeds(arrays: dict[str, np.ndarray]) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A bundle's golden vectors for any inputs (arrays input:NAME and output:NAME, one row per
    sample, as `edge-distill optimize` writes them): the feeds, and the outputs expected of them."""
    names = [key.split(":", 1)[1] for key in arrays if key.startswith("input:")]
    count = len(arrays[f"input:{names[0]}"])
    # np.array: a scalar input stays a 0-d array (indexing gives a numpy scalar, which ORT refuses).
    feeds = [{name: np.array(arrays[f"input:{name}"][i]) for name in names} for i in range(count)]
    return feeds, {key.split(":", 1)[1]: value for key, value in arrays.items() if key.startswith("output:")}


def run_feeds(session: ort.InferenceSession, feeds) -> dict[str, np.ndarray]:
    """Every output on every feed ({input name: array}), stacked: output name -> (N, *output shape)."""
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, feed) for feed in feeds]
    return {name: np.stack([run[k] for run in runs]) for k, name in enumerate(names)}


def golden_differences(session: ort.InferenceSession, feeds: list[dict], expected: dict[str, np.ndarray]
                       ) -> dict[str, float]:
    """The largest |output - expected| per output over the golden feeds."""
    produced = run_feeds(session, feeds)
    return {name: float(np.abs(produced[name].astype(np.float64) - value).max()) for name, value in expected.items()}


def main(argv: list[str] | None = None) -> int:
    """`python3 runner.py model.onnx --json`: what `edge-distill bench --remote` runs on a device."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Time an ONNX model with onnxruntime (numpy + onnxruntime only).")
    parser.add_argument("model", type=Path, help="the .onnx file to time")
    parser.add_argument("--inputs", type=Path, help=".npy of preprocessed inputs: the timed batch is drawn from "
                        "them and their top-1 classes are reported; or a bundle's golden .npz of any inputs "
                        "(input:NAME, output:NAME): its first sample is timed and every output is compared "
                        "(default: zeros of the model's input shape)")
    # Short flags as onnxruntime_perf_test names them: -e provider, -x threads, -r runs, -t seconds.
    parser.add_argument("-e", "--provider", default="CPUExecutionProvider",
                        help="onnxruntime execution provider (default: %(default)s)")
    parser.add_argument("-x", "--threads", type=int, default=os.cpu_count() or 1,
                        help="intra-op threads (default: this machine's cores, %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="samples per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs before timing (default: %(default)s)")
    parser.add_argument("-r", "--runs", type=int, default=300, help="at least this many timed runs (default: %(default)s)")
    parser.add_argument("-t", "--min-seconds", type=float, default=2.0,
                        help="and at least this long, in seconds (default: %(default)s)")
    parser.add_argument("--cold-starts", type=int, default=3,
                        help="session creations + first runs, median reported (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args(argv)
    if args.provider not in ort.get_available_providers():
        # One line, not a traceback: on a device over SSH this is all the user sees.
        print(f"runner: {args.provider} is not available in onnxruntime {ort.__version__} here "
              f"(has {', '.join(ort.get_available_providers())})", file=sys.stderr)
        return 2
    providers = [args.provider]
    golden = None
    if args.inputs and args.inputs.suffix == ".npz":
        with np.load(args.inputs, allow_pickle=False) as f:
            golden = golden_feeds({name: f[name] for name in f.files})
    if golden:
        inputs = None
    elif args.inputs:
        inputs = np.load(args.inputs, allow_pickle=False)
    else:  # zeros of the model's input shape, a symbolic batch axis set to --batch
        spec = ort.InferenceSession(str(args.model), providers=providers).get_inputs()[0]
        inputs = np.zeros([d if isinstance(d, int) else args.batch for d in spec.shape], np.float32)
    # Any inputs: one golden feed at its fixed shape; one input: --batch samples of it.
    sample = golden[0][0] if golden else np.resize(inputs, (args.batch, *inputs.shape[1:])).astype(np.float32)
    result = {
        "host": describe_host(),
        "provider": args.provider,
        "threads": args.threads,
        "batch": batch_of(sample),
        "settings": {"warmup_runs": args.warmup, "timed_runs": args.runs, "min_seconds": args.min_seconds,
                     "cold_start_runs": args.cold_starts},
        "latency_ms": measure_latency(args.model, sample, providers, args.threads, args.warmup, args.runs,
                                      args.cold_starts, args.min_seconds),
    }
    if golden:
        session = create_session(args.model, providers, args.threads)
        result["golden_max_abs_diff"] = golden_differences(session, *golden)
    elif args.inputs:
        result["top1"] = predict_classes(args.model, inputs, providers, args.threads).tolist()
    if args.json:
        print(json.dumps(result))
    else:
        latency = result["latency_ms"]
        print(f"{result['host']['cpu']} ({result['host']['arch']}, onnxruntime {result['host']['onnxruntime']}): "
              f"p50 {latency['p50']:.4f} ms, p90 {latency['p90']:.4f} ms, p95 {latency['p95']:.4f} ms, "
              f"p99 {latency['p99']:.4f} ms, "
              f"cold start {latency['cold_start']:.2f} ms", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
