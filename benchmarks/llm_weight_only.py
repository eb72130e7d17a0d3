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
    """GPTQ's calibration data: each window as the prefill a generation starts with (past length 0)."""

    def __init__(self, windows: np.ndarray, past_names: list[str], kv_heads: int, head_dim: int):
        self.windows, self.past = windows, {name: np.zeros((1, kv_heads, 0, head_dim), np.float32)
                                            for name in past_names}
        self.rewind()

    def rewind(self) -> None:
        self.remaining = iter(self.windows)

    def get_next(self) -> dict | None:
        window = next(self.remaining, None)
        if window is None:
            return None
        ids = window[None, :-1].astype(np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids),
                "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None], **self.past}


def algorithms(calibration: PrefillReader) -> dict:
    from onnxruntime.quantization.matmul_nbits_quantizer import GPTQWeightOnlyQuantConfig, \
        HQQWeightOnlyQuantConfig, KQuantWeightOnlyQuantConfig

    def gptq():
        calibration.rewind()  # each GPTQ run reads the windows from the first
        return GPTQWeightOnlyQuantConfig(calibration_data_reader=calibration, op_types_to_quantize=MATMUL)

    return {"RTN symmetric (int4_weights)": lambda: {"is_symmetric": True},
            "RTN asymmetric": lambda: {"is_symmetric": False},
            "HQQ": lambda: {"algo_config": HQQWeightOnlyQuantConfig(block_size=BLOCK_SIZE, bits=4,
                                                                    op_types_to_quantize=MATMUL)},
            "k-quant": lambda: {"algo_config": KQuantWeightOnlyQuantConfig(op_types_to_quantize=MATMUL)},
            "GPTQ symmetric": lambda: {"is_symmetric": True, "algo_config": gptq()},
            "GPTQ asymmetric": lambda: {"is_symmetric": False, "algo_config": gptq()}}


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
    calibration = PrefillReader(train[np.random.default_rng(0).choice(len(train), CALIBRATION_WINDOWS, replace=False)],
                                decoder.past_names, decoder.kv_heads, decoder.head_dim)
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in algorithms(calibration).items():
            out = Path(tmp) / "model.onnx"
            started = time.perf_counter()
            quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=BLOCK_SIZE, accuracy_level=4,
                                             op_types_to_quantize=MATMUL, **settings())
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
