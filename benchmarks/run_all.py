"""The project's benchmark suite: one command, one summary table, one JSON.

    python benchmarks/run_all.py            # about 4 minutes on 2 cores
    python benchmarks/run_all.py --full     # also the quantization, calibration-memory and distillation benchmarks

Every figure comes from the real `edge-distill` command or the real runner on this machine:
- build time: cold `edge-distill build --profile rpi4` in an empty cache, then the no-op rebuild;
- KD gap closure: the same student trained on labels only (distill.alpha = 0, the scratch baseline)
  vs with KD, against the teacher: (KD - scratch) / (teacher - scratch), test accuracy;
- int8 vs fp32: p50 of the default student and of the 1.1M-parameter teacher (quantization search);
- harness overhead: the harness's p50 vs a bare `session.run` loop, same model, inputs and process;
- estimate vs measured: `edge-distill estimate --measure` for the profile that matches this host.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "edge_distill.cli", *args, "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"edge-distill {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def timed_cli(*args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    payload = cli(*args)
    return time.perf_counter() - started, payload


def harness_overhead(model: Path, seconds: float = 3.0) -> dict:
    """p50 of measure_latency vs a bare loop, alternated three times each to share any drift."""
    import onnxruntime as ort

    from edge_distill.device.runner import measure_latency

    sample = np.zeros((1, 1, 8, 8), np.float32)
    harness, bare = [], []
    for _ in range(3):
        harness.append(measure_latency(model, sample, ["CPUExecutionProvider"], 2, 50, 300, 1, seconds / 3)["p50"])
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: sample}
        for _ in range(50):
            session.run(None, feed)
        times, deadline = [], time.perf_counter() + seconds / 3
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        bare.append(float(np.percentile(times, 50)))
    return {"harness_p50_ms": float(np.median(harness)), "bare_p50_ms": float(np.median(bare)),
            "overhead_pct": 100 * (np.median(harness) / np.median(bare) - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="also run quantization.py, calibration_memory.py and distillation.py")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "suite.json")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = str(tmp / "cache")
        cold_s, build = timed_cli("build", "--profile", "rpi4", "--out", str(tmp / "kd"), "--cache-dir", cache)
        noop_s, _ = timed_cli("build", "--profile", "rpi4", "--out", str(tmp / "kd"), "--cache-dir", cache)
        _, scratch = timed_cli("build", "--profile", "rpi4", "--out", str(tmp / "scratch"), "--cache-dir", cache,
                               "--set", "distill.alpha=0.0")
        metrics = {m["variant"]: m for m in build["metrics"]}
        teacher, kd = metrics["teacher_fp32"]["accuracy"], metrics["student_int8"]["accuracy"]
        scratch_acc = next(m for m in scratch["metrics"] if m["variant"] == "student_int8")["accuracy"]
        gap = teacher - scratch_acc
        results["build"] = {"cold_s": cold_s, "noop_s": noop_s}
        results["kd_gap_closure"] = {"teacher": teacher, "kd_student": kd, "scratch_student": scratch_acc,
                                     "closure": (kd - scratch_acc) / gap if gap > 0 else None}

        teacher_onnx = next((tmp / "cache" / "export").glob("*/teacher_fp32.onnx"))
        search = cli("quantize", "--profile", "x86-avx512", "--cache-dir", cache, "--input",
                     f"student_fp32.onnx={teacher_onnx}", "--max-accuracy-drop", "1.0")
        rows = json.loads(Path(search["outputs"]["quantize.json"]).read_text())["selected"]["candidates"]
        fp32_row = next(r for r in rows if r["kind"] == "fp32")
        best_int8 = min((r for r in rows if r["kind"] in ("static", "dynamic") and not r["error"]), key=lambda r: r["p50_ms"])
        results["int8_vs_fp32"] = {
            "student": {"fp32_p50_ms": metrics["student_fp32"]["latency_ms"]["p50"],
                        "int8_p50_ms": metrics["student_int8"]["latency_ms"]["p50"]},
            "teacher_1.1M": {"fp32_p50_ms": fp32_row["p50_ms"], "int8_p50_ms": best_int8["p50_ms"],
                             "int8_recipe": best_int8["name"]},
        }
        for entry in results["int8_vs_fp32"].values():
            entry["speedup"] = entry["fp32_p50_ms"] / entry["int8_p50_ms"]

        results["harness_overhead"] = harness_overhead(tmp / "kd" / "model.onnx")
        results["estimate_vs_measured"] = {}
        for name, model in (("student_int8", tmp / "kd" / "model.onnx"), ("teacher_fp32", teacher_onnx)):
            estimate = cli("estimate", str(model), "--profile", "x86-avx512", "--measure")
            results["estimate_vs_measured"][name] = {k: estimate[k] for k in
                                                     ("estimate_ms", "measured_p50_ms", "measured_over_estimate")}
        results["measured_on"] = build["measured_on"]
    if args.full:
        for script in ("quantization.py", "calibration_memory.py", "distillation.py"):
            subprocess.run([sys.executable, str(HERE / script)], check=True)

    closure = results["kd_gap_closure"]
    rows = [
        ("cold build, rpi4 (s)", f"{results['build']['cold_s']:.1f}", "<= 120"),
        ("no-op rebuild (s)", f"{results['build']['noop_s']:.2f}", "<= 5"),
        ("KD gap closure", "n/a (no gap)" if closure["closure"] is None else
         f"{closure['closure']:.2f} (teacher {closure['teacher']:.4f}, KD {closure['kd_student']:.4f}, "
         f"scratch {closure['scratch_student']:.4f})", ""),
        *((f"int8 vs fp32 p50, {name}", f"{e['speedup']:.2f}x ({e['fp32_p50_ms']:.4f} -> {e['int8_p50_ms']:.4f} ms)", "")
          for name, e in results["int8_vs_fp32"].items()),
        ("harness overhead vs bare loop", f"{results['harness_overhead']['overhead_pct']:+.1f}%", "within 3%"),
        *((f"measured / estimate, {name}", f"{e['measured_over_estimate']:.2f} "
           f"({e['measured_p50_ms']:.4f} / {e['estimate_ms']:.4f} ms)", "")
          for name, e in results["estimate_vs_measured"].items()),
    ]
    print(f"\n{'benchmark':<36}{'result':<64}goal")
    for name, value, goal in rows:
        print(f"{name:<36}{value:<64}{goal}")
    print(results["measured_on"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
