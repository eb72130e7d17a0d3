"""Benchmark peak memory of calibration against the calibration set size.

For a MobileNet-style model on 3x96x96 inputs (random weights: memory does not depend on them),
each calibration method runs in a fresh process over N samples, two ways:
- streamed: edge-distill's StreamedCalibration (one batch per ORT collect_data call);
- one-shot: ORT's calibrator fed the whole set through one reader (what quantize_static does).
The process's peak RSS (ru_maxrss, input set included) is printed as a table and written as JSON.

    python benchmarks/calibration_memory.py --json benchmarks/results/calibration_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = (128, 512, 1024)
METHODS = ("MinMax", "Entropy", "Percentile")

CHILD = r"""
import resource, sys
from pathlib import Path
import numpy as np
from onnxruntime.quantization import CalibrationMethod, create_calibrator
from edge_distill.export.quantize import ArrayCalibrationReader, StreamedCalibration

model, work, method, n, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
x = np.random.default_rng(0).standard_normal((n, 3, 96, 96), dtype=np.float32)  # no float64 transient
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "streamed":
    StreamedCalibration(model, x, work).ranges_file(method)
else:
    calibrator = create_calibrator(model, augmented_model_path=str(work / "aug.onnx"),
                                   calibrate_method=CalibrationMethod[method])
    calibrator.collect_data(ArrayCalibrationReader("input", x))
    calibrator.compute_data()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak)
"""


def make_model(path: Path) -> None:
    import torch

    from edge_distill.export.onnx_export import export_onnx
    from edge_distill.export.quantize import prepare
    from edge_distill.models.families import MobileNet

    torch.manual_seed(0)
    sample = torch.randn(2, 3, 96, 96).numpy()
    export_onnx(MobileNet((3, 96, 96), 10, 24, 3).eval(), sample, path.with_suffix(".raw.onnx"), opset=18)
    prepare(path.with_suffix(".raw.onnx"), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/calibration_memory.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "mobilenet.onnx"
        make_model(model)
        for method in METHODS:
            for mode in ("streamed", "one-shot"):
                for n in SIZES:
                    work = Path(tempfile.mkdtemp(dir=tmp))
                    done = subprocess.run([sys.executable, "-c", CHILD, str(model), str(work), method, str(n), mode],
                                          capture_output=True, text=True)
                    if done.returncode != 0:
                        rows.append({"method": method, "mode": mode, "samples": n, "error": done.stderr[-300:]})
                        continue
                    base, peak = (int(v) for v in done.stdout.split()[-2:])
                    rows.append({"method": method, "mode": mode, "samples": n,
                                 "peak_rss_mb": peak / 1024, "calibration_mb": (peak - base) / 1024})
    print(f"{'method':<12}{'mode':<10}" + "".join(f"{f'N={n} MB':>12}" for n in SIZES) + "   (peak RSS of the whole process, MB)")
    for method in METHODS:
        for mode in ("streamed", "one-shot"):
            cells = []
            for n in SIZES:
                row = next(r for r in rows if (r["method"], r["mode"], r["samples"]) == (method, mode, n))
                cells.append(f"{row['peak_rss_mb']:>12.0f}" if "error" not in row else f"{'failed':>12}")
            print(f"{method:<12}{mode:<10}" + "".join(cells))
    print("input set itself: " + ", ".join(f"N={n}: {n * 3 * 96 * 96 * 4 / 2**20:.0f} MB" for n in SIZES))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
