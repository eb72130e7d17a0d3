"""Benchmark `edge-distill optimize` on real pretrained models a pip package ships: the three
PP-OCR ONNX models inside rapidocr-onnxruntime (text direction classifier, detector, recognizer;
Paddle exports with symbolic sizes, opset 11/12, weights in Constant nodes).

Each model is calibrated and judged on printed text lines rendered here (tests/handmade.py's
`text_images`: random words, dark on light, half of them upside down), normalized as PaddleOCR
does. Per model: float and int8 p50 at their fastest thread count (each at 1 and 2 threads, timed
side by side in interleaved rounds on this host), sizes, int8's fidelity to float on the held-out
fifth (SNR, cosine, top-1 agreement where the output is a class score vector), for the direction
classifier also accuracy against the true direction of each line (--labels), what shipped at how
many threads and why, and the roofline estimate of the float model against its measured p50.

    python benchmarks/real_models.py --json benchmarks/results/real_models.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests.handmade: the text-line renderer and the model folder

from edge_distill.config import load_config  # noqa: E402
from edge_distill.device.runner import describe_host  # noqa: E402
from edge_distill.measure.harness import estimate_model  # noqa: E402
from edge_distill.api import optimize_bundle  # noqa: E402
from tests.handmade import rapidocr_models, text_images  # noqa: E402

MODELS = {"cls": ("ch_ppocr_mobile_v2.0_cls_infer", (48, 192), 60), "rec": ("ch_PP-OCRv4_rec_infer", (48, 320), 60),
          "det": ("ch_PP-OCRv4_det_infer", (320, 320), 30)}
LABELLED = {"cls"}  # text_images turns every second line upside down: class 1 ("180") of the classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="x86-avx512")
    parser.add_argument("--min-snr", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    folder = rapidocr_models()
    if folder is None:
        raise SystemExit("pip install --no-deps rapidocr-onnxruntime==1.4.4")
    config = load_config(args.profile, None, ["benchmark.min_seconds=1.0"])
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for short, (name, (height, width), count) in MODELS.items():
            samples = Path(tmp) / f"{short}.npz"
            np.savez(samples, x=text_images(count, height, width), y=np.arange(count) % 2)
            shape = (1, 3, height, width)
            manifest = optimize_bundle(config, folder / f"{name}.onnx", samples, Path(tmp) / short,
                                       cache_dir=Path(tmp) / "cache", shapes={"x": shape}, min_snr_db=args.min_snr,
                                       labels="y" if short in LABELLED else None,
                                       progress=lambda line: print(f"{short}: {line}", flush=True))
            metrics = {m["variant"]: m for m in manifest["metrics"]}
            estimate = estimate_model(folder / f"{name}.onnx", config, 1, {"x": shape}, measure=True)
            (fidelity,) = metrics["int8"]["fidelity"].values()
            fastest = {variant: min((r for r in manifest["measurement"]["candidates"] if r["variant"] == variant),
                                    key=lambda r: r["p50"]) for variant in ("fp32", "int8")}
            rows[short] = {
                "model": name, "shape": list(shape), "candidates": manifest["measurement"]["candidates"],
                "fp32": {"p50_ms": fastest["fp32"]["p50"], "threads": fastest["fp32"]["threads"],
                         "size_bytes": metrics["fp32"]["size_bytes"], "accuracy": metrics["fp32"]["accuracy"]},
                "int8": {"p50_ms": fastest["int8"]["p50"], "threads": fastest["int8"]["threads"],
                         "size_bytes": metrics["int8"]["size_bytes"], "accuracy": metrics["int8"]["accuracy"],
                         **fidelity},
                "judgement": manifest["judgement"], "threads": manifest["runtime"]["intra_op_threads"],
                "shipped": manifest["model"]["precision"], "why": manifest["model"]["why"],
                "notes": manifest["model"]["notes"],
                "estimate_ms": estimate["estimate_ms"], "measured_p50_ms": estimate["measured_p50_ms"],
                "measured_over_estimate": estimate["measured_over_estimate"],
            }
    print(f"\n{'model':5s} {'fp32 p50':>11s} {'int8 p50':>11s} {'int8/fp32':>9s} {'fp32 MB':>8s} {'int8 MB':>8s} "
          f"{'SNR dB':>7s} {'top-1':>6s} {'accuracy':>11s} {'shipped':>10s} {'meas/est':>8s}")
    for short, r in rows.items():
        top1 = r["int8"].get("top1_agreement")
        accuracy = f"{r['fp32']['accuracy']:.3f}/{r['int8']['accuracy']:.3f}" if r["fp32"]["accuracy"] is not None \
            else "-"
        print(f"{short:5s} {r['fp32']['p50_ms']:8.3f}@{r['fp32']['threads']}t {r['int8']['p50_ms']:8.3f}@"
              f"{r['int8']['threads']}t {r['int8']['p50_ms'] / r['fp32']['p50_ms']:9.2f} "
              f"{r['fp32']['size_bytes'] / 2**20:8.2f} {r['int8']['size_bytes'] / 2**20:8.2f} {r['int8']['snr_db']:7.1f} "
              f"{'-' if top1 is None else f'{top1:.3f}':>6s} {accuracy:>11s} {r['shipped'] + '@' + str(r['threads']) + 't':>10s} "
              f"{r['measured_over_estimate']:8.2f}")
    for short, r in rows.items():
        print(f"{short}: shipped {r['shipped']}: {r['why']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": describe_host(), "profile": args.profile, "min_snr_db": args.min_snr,
                                         "models": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
