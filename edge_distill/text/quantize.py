"""int8 for a text encoder, the two ways ONNX Runtime offers: dynamic (weights int8 ahead of time,
activations quantized per run: the usual choice for transformers on CPU; MatMul and the embedding
Gather) and static QDQ (activations calibrated on real token ids ahead of time)."""

from __future__ import annotations

from pathlib import Path

from edge_distill.errors import QuantizeError, describe


def quantize_dynamic_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge_distill.export.onnx_io import quiet_libraries

    fp32, out = fp32.absolute(), out.absolute()  # quiet_libraries runs the block in a scratch folder
    try:
        with quiet_libraries(scratch_in=out.parent):
            quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"])
    except Exception as e:
        raise QuantizeError(f"dynamic int8 of {fp32.name} failed: {describe(e, 2000)}") from None


def quantize_static_int8(fp32: Path, out: Path, feeds: list[dict], work: Path) -> None:
    """QDQ, U8S8, per channel, MinMax, calibrated on `feeds` ({input_ids, attention_mask} each)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edge_distill.export.onnx_io import quiet_libraries
    from edge_distill.export.quantize import FeedReader

    fp32, out = fp32.absolute(), out.absolute()  # quiet_libraries runs the block in a scratch folder
    prepared = work.absolute() / f"{fp32.stem}-prepared.onnx"
    try:
        with quiet_libraries(scratch_in=out.parent):
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(out), FeedReader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["MatMul", "Gather"])
    except Exception as e:
        raise QuantizeError(f"static int8 of {fp32.name} failed: {describe(e, 2000)}") from None
