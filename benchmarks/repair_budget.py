"""Does keeping more nodes in float ever bring over-budget int8 within it? `optimize`'s repair keeps
the 1, 2, 4, ... nodes ONNX Runtime's QDQ debugging ranks most sensitive in float, up to
quantize.fallback_max_nodes. This runs the repair up to 32 nodes on models whose post-training int8
misses the budget, and prints the held-out worst-output SNR at each count, so the default budget
can be set from what pays off.

Models: the three-input streaming model of the tests (its sample-rate path breaks in int8), and the
PP-OCR recognizer and detector of rapidocr-onnxruntime on rendered text lines. 7-bit weights on x86
without VNNI, as `optimize`'s search uses there.

    python benchmarks/repair_budget.py --json benchmarks/results/repair_budget.json
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from benchmarks.int8_distillation import host_has_vnni, ocr_lines  # noqa: E402
from edge_distill.config import load_config  # noqa: E402
from edge_distill.api import optimize_bundle  # noqa: E402
from tests import handmade  # noqa: E402

MOST = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    settings = [f"quantize.reduce_range={str(not host_has_vnni()).lower()}", f"quantize.fallback_max_nodes={MOST}",
                "quantize.search_min_seconds=0.05"]
    config = load_config("x86-avx512", None, settings)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = {"three-input": (handmade.three_input_model(tmp / "vad.onnx"),
                                 handmade.three_input_samples(tmp / "vad.npz"), {})}
        ocr = handmade.rapidocr_models()
        if ocr:
            for short, name, size in (("ppocr-rec", "ch_PP-OCRv4_rec_infer", (48, 320)),
                                      ("ppocr-det", "ch_PP-OCRv4_det_infer", (320, 320))):
                np.savez(tmp / f"{short}.npz", x=np.stack([f["x"] for f in ocr_lines(40, *size)]))
                cases[short] = (ocr / f"{name}.onnx", tmp / f"{short}.npz", {"x": (1, 3, *size)})
        for short, (model, samples, shapes) in cases.items():
            lines: list[str] = []
            optimize_bundle(config, model, samples, tmp / f"{short}-bundle",
                            cache_dir=tmp / "cache", shapes=shapes, min_snr_db=40.0, progress=lines.append)
            plain = next(re.search(r"SNR (-?[\d.]+) dB", line).group(1) for line in lines
                         if line.startswith("int8 over budget"))
            tries = {0: float(plain)} | {int(m.group(1)): float(m.group(2)) for line in lines
                                          if (m := re.search(r"(\d+) most sensitive node\(s\) in float: worst output SNR "
                                                             r"(-?[\d.]+) dB", line))}
            rows[short] = tries
            print(f"{short}: " + ", ".join(f"{count} in float {snr:.1f} dB" for count, snr in tries.items()), flush=True)
    counts = sorted({c for tries in rows.values() for c in tries})
    print(f"\n{'model':12s} " + " ".join(f"{c:>6d}" for c in counts) + "   (nodes kept in float: worst-output SNR dB)")
    for short, tries in rows.items():
        print(f"{short:12s} " + " ".join(f"{tries[c]:6.1f}" if c in tries else f"{'-':>6s}" for c in counts))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "snr_db_by_nodes_in_float": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
