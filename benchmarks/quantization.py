"""Benchmark quantization chosen by measurement: every recipe's validation accuracy, p50 and size.

Two builds through the real command, each with `--max-accuracy-drop`:
1. the default build (`--profile rpi4`, digits 1x8x8, ConvNet student);
2. a MobileNet-style student (depthwise-separable) on 3x96x96 inputs: the digits upscaled with
   bilinear resampling and repeated over three channels (real data, larger tensors), `--profile x86-avx512`;
3. the same with quantization-aware distillation (3 fake-quant epochs) before the search;
4. the default build's 1.1M-parameter ConvNet teacher, quantized through `edge-distill quantize --input`.
Prints each candidate table with the shipped recipe marked and writes everything as JSON.

    python benchmarks/quantization.py --json benchmarks/results/quantization.json
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

MOBILENET = [
    "--profile", "x86-avx512",
    "--set", "teacher.family='mobilenet'", "--set", "teacher.width=48", "--set", "teacher.depth=3",
    "--set", "teacher.epochs=8",
    "--set", "student.family='mobilenet'", "--set", "student.width=24", "--set", "student.depth=3",
    "--set", "distill.epochs=12",
]
CASES = {
    "default-convnet-8x8": ["--profile", "rpi4"],
    "mobilenet-3x96x96": MOBILENET,
    # The same student fine-tuned with quantization-aware distillation before the search.
    "mobilenet-3x96x96-qat": MOBILENET + ["--set", "distill.qat_epochs=3"],
}


def write_digits96(path: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [np.asarray(Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((96, 96), Image.Resampling.BILINEAR))
              for img in digits.images]
    x = np.repeat(np.stack(images)[:, None], 3, axis=1)  # (N, 3, 96, 96) uint8
    np.savez(path, x=x, y=digits.target, labels=np.array([str(c) for c in digits.target_names]))


def run_case(args: list[str], out: Path, cache: Path, budget: float) -> tuple[float, dict]:
    command = [sys.executable, "-m", "edge_distill.cli", "build", *args, "--out", str(out), "--cache-dir", str(cache),
               "--max-accuracy-drop", str(budget), "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"build failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, json.loads((out / "manifest.json").read_text())


def quantize_teacher(teacher: Path, cache: Path, budget: float) -> dict:
    """The search on a bigger model: the default build's 1.1M-parameter teacher, through
    `edge-distill quantize --input student_fp32.onnx=...`."""
    command = [sys.executable, "-m", "edge_distill.cli", "quantize", "--profile", "x86-avx512", "--cache-dir", str(cache),
               "--input", f"student_fp32.onnx={teacher}", "--max-accuracy-drop", str(budget), "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"quantize failed:\n{done.stderr[-3000:]}")
    return json.loads(Path(json.loads(done.stdout)["outputs"]["quantize.json"]).read_text())


def print_table(name: str, profile: str, quantization: dict) -> None:
    selected = quantization["selected"]
    print(f"\n== {name}: profile {profile}, budget {quantization['max_accuracy_drop']:g} points")
    print(selected["latency_measured_on"])
    print(f"{'recipe':<34}{'val acc':>9}{'drop pt':>9}{'p50 ms':>10}{'size B':>10}  ")
    for row in selected["candidates"]:
        if row["error"]:
            print(f"{row['name']:<34}  failed: {row['error'][:70]}")
            continue
        mark = "<- shipped" if row["name"] == selected["recipe"] else ""
        print(f"{row['name']:<34}{row['accuracy']:>9.4f}{row['accuracy_drop']:>+9.2f}{row['p50_ms']:>10.4f}"
              f"{row['size_bytes']:>10,}  {mark}")
    print(selected["why"])
    fp32 = next(r for r in selected["candidates"] if r["kind"] == "fp32")
    int8 = [r for r in selected["candidates"] if r["kind"] in ("static", "dynamic") and not r["error"]]
    fastest = min(int8, key=lambda r: r["p50_ms"])
    print(f"fastest int8 ({fastest['name']}) vs fp32 p50: {fp32['p50_ms'] / fastest['p50_ms']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="max accuracy drop, percentage points")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/quantization.json"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_digits96(tmp / "digits96.npz")
        for name, case in CASES.items():
            extra = ["--data", str(tmp / "digits96.npz")] if "96" in name else []
            seconds, manifest = run_case(case + extra, tmp / name, tmp / f"cache-{name.split('-')[0]}", args.budget)
            print_table(name, manifest["profile"]["name"], manifest["model"]["quantization"])
            print(f"build: {seconds:.0f} s; test accuracy " + ", ".join(
                f"{m['variant']} {m['accuracy']:.4f}" for m in manifest["metrics"]))
            results[name] = {"build_seconds": seconds, "selected": manifest["model"]["quantization"]["selected"],
                             "metrics": manifest["metrics"], "shipped_variant": manifest["model"]["variant"]}
        teacher = next((tmp / "cache-default" / "export").glob("*/teacher_fp32.onnx"))
        quantization = quantize_teacher(teacher, tmp / "cache-default", args.budget)
        print_table("convnet-teacher-1.1M-params-8x8", "x86-avx512", quantization)
        results["convnet-teacher-1.1M-params-8x8"] = {"selected": quantization["selected"]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
