"""Static int8 post-training quantization with onnxruntime.quantization."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_distill.config import QuantizeConfig
from edge_distill.errors import QuantizeError, describe
from edge_distill.export.onnx_io import load_onnx, quiet_libraries

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds calibration samples in batches, so the reader never holds a copy of the whole set."""

    def __init__(self, input_name: str, x: np.ndarray, batch_size: int = 32):
        self.input_name = input_name
        self.x = x
        self.batch_size = batch_size
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.x):
            return None
        batch = self.x[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0


def quantize_static_int8(src: Path, dst: Path, calibration: np.ndarray, cfg: QuantizeConfig) -> dict:
    """ORT's recommended pre-processing (shape inference + graph optimization), then quantize_static."""
    model = load_onnx(src)
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp, quiet_libraries():
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared))
            quantize_static(
                str(prepared),
                str(dst),
                ArrayCalibrationReader(input_name, calibration),
                quant_format=QuantFormat[cfg.format],
                per_channel=cfg.per_channel,
                reduce_range=cfg.reduce_range,
                activation_type=QuantType[cfg.activation_type],
                weight_type=QuantType[cfg.weight_type],
                calibrate_method=CalibrationMethod[cfg.calibrate_method],
            )
        except Exception as e:
            raise QuantizeError(
                f"quantizing {src.name} failed: {describe(e)}",
                "try quantize.format = \"QDQ\" or quantize.calibrate_method = \"MinMax\"",
            ) from e
    return {"op_counts": count_ops(onnx.load(str(dst))), "calibration_samples": len(calibration)}


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, sorted by name."""
    return dict(sorted(collections.Counter(node.op_type for node in model.graph.node).items()))


def quantized_node_count(op_counts: dict[str, int]) -> int:
    """QuantizeLinear/DequantizeLinear (QDQ) plus QLinear*/ConvInteger-style (QOperator) nodes."""
    return sum(n for op, n in op_counts.items() if op in QUANT_OPS or op.startswith("QLinear") or "Integer" in op)
