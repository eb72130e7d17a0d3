"""ONNX Runtime's weight-only 4-bit algorithms on an `edge-distill llm` student, side by side:
RTN symmetric (the int4_weights variant the build makes), RTN asymmetric, HQQ, k-quant and GPTQ
(symmetric and asymmetric, calibrated on 32 of the build's training windows), all MatMulNBits with
blocks of 32 and accuracy level 4, judged as the build judges its variants (held-out perplexity over
the teacher's whole vocabulary, next-token agreement with the teacher).

    edge-distill llm --out dist/llm --json > llm.json
    python benchmarks/llm_weight_only.py llm.json --json benchmarks/results/llm_weight_only.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

sys.path.insert(0, str(Path(__file__).parents[1]))

from edge_distill.lm.quantize import BLOCK_SIZE, held_out_quality  # noqa: E402

MATMUL = ("MatMul",)
CALIBRATION_WINDOWS = 32


class PrefillReader(CalibrationDataReader):
    """GPTQ's calibration data: each window as the prefill a generation starts with."""

    def __init__(self, decoder, windows: np.ndarray):
        # a list's iterator, not a generator: ONNX Runtime deep-copies the reader before reading it
        self.feeds = iter([decoder.prefill_feed(window[None, :-1].astype(np.int64)) for window in windows])

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def algorithms(decoder, calibration_windows: np.ndarray) -> dict:
    """Each algorithm's MatMulNBitsQuantizer settings; a GPTQ run reads a reader of its own to the end."""
    from onnxruntime.quantization.matmul_nbits_quantizer import GPTQWeightOnlyQuantConfig, \
        HQQWeightOnlyQuantConfig, KQuantWeightOnlyQuantConfig

    def gptq(is_symmetric: bool) -> dict:
        reader = PrefillReader(decoder, calibration_windows)
        return {"is_symmetric": is_symmetric,
                "algo_config": GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, op_types_to_quantize=MATMUL)}

    return {"RTN symmetric (int4_weights)": {"is_symmetric": True},
            "RTN asymmetric": {"is_symmetric": False},
            "HQQ": {"algo_config": HQQWeightOnlyQuantConfig(block_size=BLOCK_SIZE, bits=4, op_types_to_quantize=MATMUL)},
            "k-quant": {"algo_config": KQuantWeightOnlyQuantConfig(op_types_to_quantize=MATMUL)},
            "GPTQ symmetric": gptq(True),
            "GPTQ asymmetric": gptq(False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="The --json output of an `edge-distill llm` run.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    files = {name: Path(path) for step in json.loads(args.build.read_text())["steps"]
             for name, path in step["outputs"].items()}
    held_out, teacher_top1 = np.load(files["held_out.npy"]), np.load(files["teacher_top1.npy"])
    fp32 = files["decoder_fp32.onnx"]
    rows = [{"algorithm": "fp32", "size_bytes": fp32.stat().st_size, "seconds": 0.0,
             **held_out_quality(fp32, held_out, teacher_top1, args.threads)[0]}]
    from edge_distill.device.decoder import Decoder
    from edge_distill.sessions import open_session

    decoder = Decoder(open_session(fp32, fp32.name, threads=args.threads))
    train = np.load(files["train.npy"])
    calibration = train[np.random.default_rng(0).choice(len(train), CALIBRATION_WINDOWS, replace=False)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in algorithms(decoder, calibration).items():
            out = Path(tmp) / "model.onnx"
            started = time.perf_counter()
            quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=BLOCK_SIZE, accuracy_level=4,
                                             op_types_to_quantize=MATMUL, **settings)
            quantizer.process()
            quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
            rows.append({"algorithm": name, "size_bytes": out.stat().st_size,
                         "seconds": round(time.perf_counter() - started, 1),
                         **held_out_quality(out, held_out, teacher_top1, args.threads)[0]})
    print(f"{'4-bit algorithm':30s} {'file MB':>8s} {'ppl':>8s} {'vs fp32':>8s} {'agree':>6s} {'made in s':>9s}")
    for r in rows:
        print(f"{r['algorithm']:30s} {r['size_bytes'] / 2**20:8.1f} {r['perplexity']:8.2f} "
              f"{r['perplexity'] / rows[0]['perplexity'] - 1:+8.1%} {r['agreement_with_teacher']:6.3f} {r['seconds']:9.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
