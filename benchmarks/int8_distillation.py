"""Benchmark int8 for real pretrained ONNX models, side by side in one run: post-training int8 as
`optimize` makes it (every op ONNX Runtime quantizes, and only convolutions and matrix products,
its first repair), the more faithful of the two after quantization-aware distillation
(`optimize --distill`),
ONNX Runtime's `quantize_static` with its defaults, and NNCF's `nncf.quantize` with its defaults.

Models (from pip packages, read where they are installed): the PP-OCR direction classifier,
recognizer and detector of rapidocr-onnxruntime, fed printed text lines rendered here (the
detector at 320x320); magika's file-type
model, fed byte windows of this Python installation's own files; silero-vad v5 (all its compute
in an If branch), fed speech-band noise bursts at 16 kHz. Per variant, on held-out samples: the
worst output's SNR against float, the task's own measure (class agreement, per-timestep agreement,
text mask IoU, speech decision agreement), p50 over float's p50 from interleaved rounds on this host at the same
threads, file size, and the distillation's wall time. On x86 without VNNI ours uses 7-bit weights
(quantize.reduce_range), as `optimize`'s search does there.

    python benchmarks/int8_distillation.py --json benchmarks/results/int8_distillation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests.handmade: the text-line renderer and model folders

from edge_distill.config import load_config  # noqa: E402
from edge_distill.device.runner import compare_latency, describe_host  # noqa: E402
from edge_distill.export.qdq_distill import DistillSettings, distill_int8  # noqa: E402
from edge_distill.errors import QuantizeError  # noqa: E402
from edge_distill.export.budget import COMPUTE_OPS, prepare, quantize_feeds  # noqa: E402
from edge_distill.sessions import run_model  # noqa: E402
from tests.handmade import rapidocr_models, text_images  # noqa: E402


def host_has_vnni() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def class_agreement(reference: np.ndarray, produced: np.ndarray) -> float:
    return float((reference.argmax(-1) == produced.argmax(-1)).mean())


def mask_iou(reference: np.ndarray, produced: np.ndarray) -> float:
    """Intersection over union of the text masks at 0.3, PaddleOCR's threshold."""
    ref, got = reference > 0.3, produced > 0.3
    union = np.logical_or(ref, got).sum()
    return float(np.logical_and(ref, got).sum() / union) if union else 1.0


def speech_agreement(reference: np.ndarray, produced: np.ndarray) -> float:
    return float(((reference > 0.5) == (produced > 0.5)).mean())


def ocr_lines(count: int, height: int, width: int) -> list[dict]:
    return [{"x": image[None]} for image in text_images(count, height, width, seed=11)]


def byte_windows(count: int) -> list[dict]:
    """2048-byte windows from this Python's own library files, as magika reads a file's start."""
    files = sorted(Path(np.__file__).parents[1].rglob("*.py"))[:count]
    rows = []
    for path in files:
        data = np.frombuffer(path.read_bytes()[:2048], np.uint8).astype(np.int32)
        rows.append({"bytes": np.pad(data, (0, 2048 - len(data)), constant_values=256)[None]})
    return rows


def speech_windows(count: int) -> list[dict]:
    """512-sample windows at 16 kHz: band-limited noise bursts over silence, as speech and pauses."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(count):
        t = np.arange(512) / 16000
        voiced = (i % 3 != 0) * np.sin(2 * np.pi * rng.uniform(120, 300) * t) * rng.uniform(0.05, 0.5)
        audio = voiced * (1 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(512)
        rows.append({"input": audio.astype(np.float32)[None], "state": np.zeros((2, 1, 128), np.float32),
                     "sr": np.array(16000, np.int64)})
    return rows


def installed(package: str, relative: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent / relative if spec and spec.origin else None
    return path if path and path.exists() else None


def models() -> dict[str, dict]:
    found = {}
    ocr = rapidocr_models()
    if ocr:
        found["ppocr-cls"] = {"path": ocr / "ch_ppocr_mobile_v2.0_cls_infer.onnx", "feeds": lambda: ocr_lines(100, 48, 192),
                              "measure": ("top-1 agreement", class_agreement), "distill_s": 180}
        found["ppocr-rec"] = {"path": ocr / "ch_PP-OCRv4_rec_infer.onnx", "feeds": lambda: ocr_lines(80, 48, 320),
                              "measure": ("per-timestep agreement", class_agreement), "distill_s": 600}
        found["ppocr-det"] = {"path": ocr / "ch_PP-OCRv4_det_infer.onnx", "feeds": lambda: ocr_lines(40, 320, 320),
                              "measure": ("text mask IoU at 0.3", mask_iou), "distill_s": 600}
    magika = installed("magika", "models/standard_v3_3/model.onnx")
    if magika:
        found["magika"] = {"path": magika, "feeds": lambda: byte_windows(100),
                           "measure": ("top-1 agreement", class_agreement), "distill_s": 180}
    silero = installed("silero_vad", "data/silero_vad.onnx")
    if silero:
        found["silero-vad"] = {"path": silero, "feeds": lambda: speech_windows(100),
                               "measure": ("speech decision agreement", speech_agreement), "distill_s": 180}
    return found


def ort_defaults(prepared: Path, feeds: list[dict], dst: Path) -> None:
    from onnxruntime.quantization import quantize_static

    from edge_distill.export.quantize import FeedReader

    quantize_static(str(prepared), str(dst), FeedReader(feeds))


def nncf_default(fp32: Path, feeds: list[dict], dst: Path) -> None:
    import nncf
    import onnx

    onnx.save(nncf.quantize(onnx.load(str(fp32)), nncf.Dataset(feeds), subset_size=len(feeds)), str(dst))


def judge(fp32_outputs: dict, produced: dict, measure) -> dict:
    snrs = []
    for name, reference in fp32_outputs.items():
        if not np.issubdtype(reference.dtype, np.floating):
            continue
        error = float(np.sum((reference.astype(np.float64) - produced[name]) ** 2))
        snrs.append(float("inf") if error == 0 else 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / error))
    first = next(iter(fp32_outputs))
    return {"snr_db": round(min(snrs), 2), "task": round(measure(fp32_outputs[first], produced[first]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="Model names to run (default: all installed).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="Timed seconds per variant.")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    reduce_range = not host_has_vnni()
    config = load_config("x86-avx512", None, [f"quantize.reduce_range={str(reduce_range).lower()}"])
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in models().items():
            if args.only and name not in args.only:
                continue
            work = Path(tmp) / name
            work.mkdir()
            feeds = spec["feeds"]()
            calibration, held_out = feeds[: len(feeds) * 4 // 5], feeds[len(feeds) * 4 // 5:]
            fp32 = spec["path"]
            reference = run_model(fp32, held_out)
            notes: list[str] = []
            prepared, per_channel = prepare(fp32, config, work, notes, lambda _: None)
            variants, results = {}, {}
            started = time.monotonic()
            for label, op_types in (("ours all ops", None), ("ours compute ops", COMPUTE_OPS)):
                try:
                    quantize_feeds(prepared, calibration, config, per_channel, [], work / f"{label[5:8]}.onnx", notes,
                                   op_types)
                    variants[label] = work / f"{label[5:8]}.onnx"
                except QuantizeError as e:
                    results[label] = {"error": e.message}
            print(f"{name}: post-training int8 in {time.monotonic() - started:.0f} s", flush=True)
            if variants:  # distilled from the more faithful post-training int8, as optimize --distill does
                start_from = max(variants, key=lambda label: judge(reference, run_model(variants[label], held_out),
                                                                   spec["measure"][1])["snr_db"])
                float_outputs = run_model(fp32, calibration)
                targets = [{k: v[i] for k, v in float_outputs.items()} for i in range(len(calibration))]
                started = time.monotonic()
                try:
                    report = distill_int8(variants[start_from], calibration, targets, work / "distilled.onnx",
                                          DistillSettings(epochs=8, max_seconds=spec["distill_s"],
                                                          reduce_range=reduce_range),
                                          lambda line: print(f"{name}: {line}", flush=True))
                    variants["ours distilled"] = work / "distilled.onnx"
                    results["ours distilled"] = {"distill_seconds": round(time.monotonic() - started, 1),
                                                 "best_epoch": report["best_epoch"], "from": start_from}
                except QuantizeError as e:
                    results["ours distilled"] = {"error": e.message}
            for label, make in (("ORT defaults", lambda dst: ort_defaults(prepared, calibration, dst)),
                                ("NNCF default", lambda dst: nncf_default(fp32, calibration, dst))):
                try:
                    make(work / f"{label.split()[0]}.onnx")
                    variants[label] = work / f"{label.split()[0]}.onnx"
                except Exception as e:  # a peer's failure on this model is a result too
                    results[label] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
            for label, path in variants.items():
                results[label] = results.get(label, {}) | judge(reference, run_model(path, held_out), spec["measure"][1])
                results[label]["size_bytes"] = path.stat().st_size
            timing = compare_latency({"fp32": fp32, **variants}, held_out[0], ["CPUExecutionProvider"], args.threads,
                                     args.seconds)
            for label in variants:
                if "p50" in timing[label] and "p50" in timing["fp32"]:
                    results[label]["speed_ratio"] = round(timing[label]["p50"] / timing["fp32"]["p50"], 3)
            rows[name] = {"fp32_p50_ms": timing["fp32"].get("p50"), "fp32_size_bytes": fp32.stat().st_size,
                          "task_measure": spec["measure"][0], "variants": results, "notes": notes}
            print(json.dumps({name: rows[name]}, indent=1), flush=True)
    print(f"\n{'model':11s} {'variant':20s} {'SNR dB':>7s} {'task':>7s} {'int8/fp32':>9s} {'MB':>6s} {'distil s':>8s}")
    for name, row in rows.items():
        for label, r in row["variants"].items():
            if "error" in r:
                print(f"{name:11s} {label:20s} {r['error'][:70]}")
                continue
            print(f"{name:11s} {label:20s} {r['snr_db']:7.1f} {r['task']:7.3f} {r.get('speed_ratio', float('nan')):9.2f} "
                  f"{r['size_bytes'] / 1e6:6.2f} {r.get('distill_seconds', ''):>8}")
    host = describe_host()
    print(f"host: {host.get('cpu')} ({host.get('cores')} cores), {args.threads} thread(s), "
          f"{'7-bit' if reduce_range else '8-bit'} weights for ours; task measure per model: "
          + ", ".join(f"{n}: {r['task_measure']}" for n, r in rows.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # With --only, the other models' rows of an earlier run are kept (each model's ratios come
        # from its own interleaved rounds).
        earlier = json.loads(args.json.read_text())["models"] if args.only and args.json.exists() else {}
        args.json.write_text(json.dumps({"host": host, "threads": args.threads, "reduce_range": reduce_range,
                                         "models": earlier | rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
