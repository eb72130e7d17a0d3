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


class TimeLimitExceeded(RuntimeError):
    """A measurement ran past its time limit; the run in progress was stopped."""


class TimeLimit:
    """Bounds the session runs of one measurement: `seconds` after it starts, the run in progress
    is stopped (onnxruntime's RunOptions.terminate, checked between kernels, inside Loop bodies
    too) and TimeLimitExceeded raised, so a model with a Loop of 10^12 trips ends. None: no limit."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4  # the stop is reported as TimeLimitExceeded, not as a logged error
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._timer = None
        if seconds is not None:
            import threading

            self._timer = threading.Timer(seconds, self._stop)
            self._timer.daemon = True
            self._timer.start()

    def _stop(self) -> None:
        self.options.terminate = True

    def run(self, session: ort.InferenceSession, feed: dict, names=None) -> list:
        if self.options.terminate or (self._deadline is not None and time.monotonic() > self._deadline):
            raise TimeLimitExceeded(f"stopped after the time limit of {self.seconds:g} s")
        try:
            return session.run(names, feed, self.options)
        except Exception:
            if self.options.terminate:
                raise TimeLimitExceeded(f"stopped after the time limit of {self.seconds:g} s") from None
            raise

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


OPTIMIZATION_LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def create_session(model: Path | bytes, providers: list | None = None, threads: int | None = None,
                   require_first: bool = True, config: dict[str, str] | None = None,
                   optimized_to: Path | None = None, level: str = "all",
                   log_level: int | None = None) -> ort.InferenceSession:
    """Every onnxruntime session edge-distill opens, here or on a device: graph optimizations at
    `level` ("basic", "extended" or "all"); intra-op threads pinned to `threads` where given (one
    inter-op thread); onnxruntime's own warnings at `log_level`, by default quiet unless
    EDGE_DISTILL_DEBUG is set (`--debug`); session `config` entries (e.g. session.disable_quant_qdq);
    the optimized graph written to `optimized_to` where given. `providers` as onnxruntime takes
    them: names or (name, options) pairs, the CPU by default. Unless `require_first` is off, a
    session that fell back from the first provider is an error: its figures would not be that
    provider's."""
    providers = providers or ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = OPTIMIZATION_LEVELS[level]
    options.log_severity_level = log_level if log_level is not None else 2 if os.environ.get("EDGE_DISTILL_DEBUG") else 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if optimized_to is not None:
        options.optimized_model_filepath = str(optimized_to)
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                   providers=providers)
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
    time_limit_s: float | None = None,
) -> dict:
    """Cold start (session creation + first run; median of `cold_start_runs`), then warm-up and at
    least `timed_runs` timed runs of one batch, continuing until `min_seconds` have passed (a
    sub-millisecond model needs thousands of runs for a stable p99). Times in milliseconds, from
    time.perf_counter around each run. Past `time_limit_s` in all, TimeLimitExceeded."""
    limit = TimeLimit(time_limit_s)
    try:
        cold = []
        for _ in range(cold_start_runs):
            start = time.perf_counter()
            session = create_session(model, providers, threads, require_first)
            feed = feed_for(session, sample)
            limit.run(session, feed)
            cold.append((time.perf_counter() - start) * 1e3)
        for _ in range(warmup_runs):
            limit.run(session, feed)
        times = np.asarray(time_runs(session, feed, timed_runs, min_seconds, limit))
    finally:
        limit.close()
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


def time_runs(session: ort.InferenceSession, feed: dict, min_runs: int, min_seconds: float,
              limit: TimeLimit | None = None) -> list[float]:
    """Milliseconds of each `session.run`, at least `min_runs` runs and at least `min_seconds`."""
    limit = limit or TimeLimit(None)
    samples: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while len(samples) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        limit.run(session, feed)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def compare_latency(
    models: dict[str, Path], sample, providers: list, threads: int | dict[str, int], seconds_each: float,
    rounds: int = 5, require_first: bool = True, time_limit_s: float | None = None,
) -> dict[str, dict]:
    """p50/p90 of several models measured in interleaved rounds (each round visits every model in
    a rotated order), so a drift of the machine's speed hits all of them alike; round_p50s: each
    round's median, for comparisons that must hold round by round. `threads`: one
    count for all, or each model name's own (the same file may appear under several names, one per
    thread count). Models that fail to load or run get {"error": ...}. Past `time_limit_s` in all,
    TimeLimitExceeded."""
    sessions, results, limit = {}, {}, TimeLimit(time_limit_s)
    try:
        for name, model in models.items():
            try:
                count = threads[name] if isinstance(threads, dict) else threads
                sessions[name] = create_session(model, providers, count, require_first)
                time_runs(sessions[name], feed_for(sessions[name], sample), 10, 0.0, limit)  # warm-up
            except TimeLimitExceeded:
                raise
            except Exception as e:  # an op without a kernel for this provider: report it, measure the rest
                sessions.pop(name, None)
                results[name] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"}
        times: dict[str, list[list[float]]] = {name: [] for name in sessions}
        order = list(sessions)
        for round_index in range(rounds):
            shift = round_index % max(len(order), 1)
            for name in order[shift:] + order[:shift]:
                times[name].append(time_runs(sessions[name], feed_for(sessions[name], sample), 5,
                                             seconds_each / rounds, limit))
    finally:
        limit.close()
    for name, per_round in times.items():
        samples = [t for round_times in per_round for t in round_times]
        medians = [float(np.median(round_times)) for round_times in per_round]
        # Each round's own median: one candidate beats another only if it is quicker in every round.
        results[name] = {"p50": float(np.percentile(samples, 50)), "p90": float(np.percentile(samples, 90)), "runs": len(samples),
                         "round_p50s": medians}
    return results


def thread_candidates(most: int) -> list[int]:
    """Intra-op thread counts worth timing up to `most`: 1, 2, 4, ... and `most` itself. A small
    model can run faster on fewer threads than cores (less synchronisation per kernel)."""
    counts = {most}
    count = 1
    while count < most:
        counts.add(count)
        count *= 2
    return sorted(counts)


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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container or taskset may allow
    fewer than the machine has), the one count every thread and worker choice uses."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def usable_threads(requested: int) -> int:
    """No more threads than this process has cores: more would only measure oversubscription."""
    return min(requested, usable_cores())


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (the runner's own process on a device).
    Linux's VmHWM first: getrusage's ru_maxrss survives execve, so a process started from a big one
    (a build that has a teacher loaded) would report its parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
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
        "cores": usable_cores(),
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


NUMPY_OF_ONNX = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                 "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
                 "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def zero_feed(session: ort.InferenceSession, shapes: dict[str, list[int]], batch: int) -> dict[str, np.ndarray]:
    """Zeros for every input of the session's model: its fixed sizes, a symbolic first axis set to
    `batch`, or the whole shape from `shapes` (name -> dims). ValueError names a size left symbolic."""
    feed = {}
    for spec in session.get_inputs():
        if spec.name in shapes:
            dims = shapes[spec.name]
        else:
            dims = [d if isinstance(d, int) else batch if k == 0 else None for k, d in enumerate(spec.shape)]
            if None in dims:
                symbolic = spec.shape[dims.index(None)]
                raise ValueError(f"input '{spec.name}' has the symbolic size {symbolic!r} (shape {spec.shape}): "
                                 f"give its shape, e.g. --shape {spec.name}:"
                                 + "x".join(str(d) if d is not None else "N" for d in dims))
        if spec.type not in NUMPY_OF_ONNX:
            raise ValueError(f"input '{spec.name}' is {spec.type}: give real inputs with --inputs")
        feed[spec.name] = np.zeros(dims, NUMPY_OF_ONNX[spec.type])
    return feed


def parse_threads(text: str) -> list[int]:
    """"4" -> [4]; "1,2,4" -> [1, 2, 4]."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--threads {text!r}: expected a count or a comma list of counts, e.g. 1,2,4") from None
    if min(counts) < 1:
        raise ValueError(f"--threads {text!r}: counts start at 1")
    return counts


def parse_shape(text: str) -> tuple[str, list[int]]:
    """"x:1x3x48x192" -> ("x", [1, 3, 48, 192])."""
    name, _, dims = text.rpartition(":")
    try:
        shape = [int(d) for d in dims.split("x")] if dims else []
    except ValueError:
        shape = [-1]
    if not name or min(shape, default=1) < 1:
        raise ValueError(f"--shape {text!r}: expected NAME:DIMS, e.g. x:1x3x48x192")
    return name, shape


def main(argv: list[str] | None = None) -> int:
    """`python3 runner.py model.onnx --json`: what `edge-distill bench --remote` runs on a device."""
    import argparse

    parser = argparse.ArgumentParser(description="Time ONNX models with onnxruntime (numpy + onnxruntime only).")
    parser.add_argument("models", type=Path, nargs="+", metavar="model",
                        help="the .onnx file to time; several (or several --threads) are timed side by side in "
                             "interleaved rounds and compared")
    parser.add_argument("--inputs", type=Path, help=".npy of preprocessed inputs: the timed batch is drawn from "
                        "them and their top-1 classes are reported; or a bundle's golden .npz of any inputs "
                        "(input:NAME, output:NAME): its first sample is timed and every output is compared "
                        "(default: zeros of the model's input shapes)")
    # Short flags as onnxruntime_perf_test names them: -e provider, -x threads, -r runs, -t seconds.
    parser.add_argument("-e", "--provider", default="CPUExecutionProvider",
                        help="onnxruntime execution provider (default: %(default)s)")
    parser.add_argument("-x", "--threads", type=str, default=str(usable_cores()), metavar="N[,N...]",
                        help="intra-op threads (default: this machine's cores, %(default)s); a comma list "
                             "(1,2,4) times each model at each count")
    parser.add_argument("--batch", type=int, default=1, help="samples per run (default: %(default)s)")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME:DIMS",
                        help="for zero inputs: the shape of an input with symbolic sizes, e.g. x:1x3x48x192 "
                             "(repeat per input)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs before timing (default: %(default)s)")
    parser.add_argument("-r", "--runs", type=int, default=300, help="at least this many timed runs (default: %(default)s)")
    parser.add_argument("-t", "--min-seconds", type=float, default=2.0,
                        help="and at least this long, in seconds; per model and thread count when comparing "
                             "(default: %(default)s)")
    parser.add_argument("--cold-starts", type=int, default=3,
                        help="session creations + first runs, median reported (default: %(default)s)")
    parser.add_argument("--time-limit", type=float, default=600.0, metavar="SECONDS",
                        help="stop a measurement that runs longer (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args(argv)
    try:
        return _run(args, parser)
    except Exception as e:  # onnxruntime's own errors, a time limit: one line, not a traceback (over SSH it is all the user sees)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        print(f"runner: {args.models[0].name}: {lines[0][:300] if lines else type(e).__name__}", file=sys.stderr)
        return 3


def _run(args, parser) -> int:
    import json

    try:
        threads = parse_threads(args.threads)
        shapes = dict(parse_shape(text) for text in args.shape)
    except ValueError as e:
        parser.error(str(e))
    if args.provider not in ort.get_available_providers():
        # One line, not a traceback: on a device over SSH this is all the user sees.
        print(f"runner: {args.provider} is not available in onnxruntime {ort.__version__} here "
              f"(has {', '.join(ort.get_available_providers())})", file=sys.stderr)
        return 2
    providers = [args.provider]
    golden = inputs = None
    probe = create_session(args.models[0])
    if args.inputs and args.inputs.suffix == ".npz":
        with np.load(args.inputs, allow_pickle=False) as f:
            golden = golden_feeds({name: f[name] for name in f.files})
        sample = golden[0][0]  # any inputs: one golden feed at its fixed shape
    elif args.inputs:
        inputs = np.load(args.inputs, allow_pickle=False)  # one input: --batch samples of it
        sample = np.resize(inputs, (args.batch, *inputs.shape[1:])).astype(np.float32)
    else:
        try:
            sample = zero_feed(probe, shapes, args.batch)
        except ValueError as e:
            print(f"runner: {args.models[0]}: {e}", file=sys.stderr)
            return 2
    feed = feed_for(probe, sample)
    result = {
        "host": describe_host(),
        "provider": args.provider,
        "threads": threads[0] if len(threads) == 1 else threads,
        "batch": batch_of(sample),
        "inputs": {name: {"shape": list(np.shape(a)), "dtype": np.asarray(a).dtype.name,
                          "source": "golden" if golden else "--inputs" if args.inputs else "zeros"}
                   for name, a in feed.items()},
        "settings": {"warmup_runs": args.warmup, "timed_runs": args.runs, "min_seconds": args.min_seconds,
                     "cold_start_runs": args.cold_starts},
    }
    if len(args.models) > 1 or len(threads) > 1:
        result["candidates"] = compare_candidates(args.models, threads, sample, providers, args.min_seconds, golden,
                                                  time_limit_s=args.time_limit)
    else:
        model = args.models[0]
        result["latency_ms"] = measure_latency(model, sample, providers, threads[0], args.warmup, args.runs,
                                               args.cold_starts, args.min_seconds, time_limit_s=args.time_limit)
        if golden:
            result["golden_max_abs_diff"] = golden_differences(create_session(model, providers, threads[0]), *golden)
        elif inputs is not None:
            result["top1"] = predict_classes(model, inputs, providers, threads[0]).tolist()
    if args.json:
        print(json.dumps(result))
    elif "candidates" in result:
        for row in result["candidates"]:
            timing = f"p50 {row['p50']:.4f} ms, p90 {row['p90']:.4f} ms" if "p50" in row else row["error"]
            print(f"{row['model']} at {row['threads']} thread(s): {timing}")
    else:
        latency = result["latency_ms"]
        print(f"{result['host']['cpu']} ({result['host']['arch']}, onnxruntime {result['host']['onnxruntime']}): "
              f"p50 {latency['p50']:.4f} ms, p90 {latency['p90']:.4f} ms, p95 {latency['p95']:.4f} ms, "
              f"p99 {latency['p99']:.4f} ms, "
              f"cold start {latency['cold_start']:.2f} ms", file=sys.stdout)
    return 0


def compare_candidates(models: list[Path], threads: list[int], sample, providers: list, seconds_each: float,
                       golden: tuple | None = None, require_first: bool = True,
                       time_limit_s: float | None = None) -> list[dict]:
    """Each model at each thread count, timed side by side (compare_latency); with golden vectors,
    each model's largest output difference from them, here."""
    names = {f"{model}@{count}": (model, count) for model in models for count in threads}
    latency = compare_latency({name: model for name, (model, _) in names.items()}, sample, providers,
                              {name: count for name, (_, count) in names.items()}, seconds_each,
                              require_first=require_first, time_limit_s=time_limit_s)
    rows = [{"model": str(model), "threads": count, **latency[name]} for name, (model, count) in names.items()]
    if golden:
        for model in models:
            runs = [row for row in rows if row["model"] == str(model) and "error" not in row]
            diffs = golden_differences(create_session(model, providers, threads[0]), *golden) if runs else None
            for row in runs:
                row["golden_max_abs_diff"] = diffs
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
