"""Post-training quantization: the one module that calls ONNX Runtime's quantizers
(onnxruntime.quantization: quant_pre_process, quantize_static, quantize_dynamic, the MatMulNBits
weight-only quantizer) for every pipeline.

A `QuantRecipe` is one way to turn a float model into a deployable one: fp32 as is, static int8
(QDQ or QOperator, calibrated), dynamic int8, weight-only int8/int4 (MatMulNBits), fp16. `prepare`
is the one pre-processing step; `apply_recipe` applies a recipe and counts the quantized nodes
itself, refusing a model that would be "int8" in name only. Build's profile names one recipe and
its search in `search.py` tries many; optimize (`budget.py`) calibrates on feeds of any inputs;
text ships dynamic int8; llm's variants are written by onnxruntime-genai's builder and named and checked
by weight-only recipes (lm/quantize.py).
"""

from __future__ import annotations

import collections
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    create_calibrator,
    quantize_dynamic,
    quantize_static,
    save_tensors_data,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_distill.export.recipe import QuantRecipe
from edge_distill.errors import ConfigError, QuantizeError, describe
from edge_distill.export.graphs import all_nodes, ordered_nodes
from edge_distill.export.onnx_io import quiet_libraries
from edge_distill.onnx_model import load_onnx
from edge_distill.progress import progress_bar

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds samples in batches, so the reader never holds a copy of the whole set."""

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


class FeedReader(CalibrationDataReader):
    """Feeds of a model with any inputs ({input name: array}), one per call."""

    def __init__(self, feeds):  # a sequence of {input name: array}
        self.feeds, self.position = feeds, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def prepare(src: Path, dst: Path, notes: list[str] | None = None, progress: Callable[[str], None] = lambda _: None
            ) -> None:
    """ONNX Runtime's recommended pre-processing (symbolic shape inference, graph optimization), the
    one step every recipe starts from; where its symbolic shape inference fails on a real graph,
    without it, noted in `notes`."""
    load_onnx(src)
    source, target = src.absolute(), dst.absolute()  # before quiet_libraries changes the current folder
    try:
        with quiet_libraries(scratch_in=target.parent):
            quant_pre_process(str(source), str(target))
        return
    except Exception as e:
        if notes is not None:
            notes.append(f"ONNX Runtime's symbolic shape inference failed ({describe(e, 200)}): pre-processed without it")
        progress("symbolic shape inference failed on this graph: pre-processing without it")
    try:
        with quiet_libraries(scratch_in=target.parent):
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception as e:
        raise QuantizeError(f"pre-processing {src.name} for quantization failed: {describe(e)}") from None


class StreamedCalibration:
    """Activation ranges for each calibration method, computed once and shared by every recipe.

    Samples go through the calibrator one batch of `chunk` per `collect_data` call: ORT's histogram
    calibrators keep every activation of one call, so this bounds peak memory by one batch, not by
    the calibration set; what stays is the min/max or the histograms the method needs. (One batch
    per call also avoids their failure on batches of unequal size within one call.)
    """

    def __init__(self, prepared: Path, x: np.ndarray, workdir: Path, chunk: int = 32,
                 progress: Callable[[str], None] = lambda _: None):
        self.progress = progress
        self.prepared = prepared.absolute()  # read while quiet_libraries runs in a scratch folder
        self.x = x
        self.workdir = workdir.absolute()
        self.chunk = chunk
        self.input_name = load_onnx(prepared).graph.input[0].name
        self.caches: dict[str, Path] = {}

    def ranges_file(self, method: str) -> Path:
        if method not in self.caches:
            path = self.workdir / f"ranges-{method}.json"
            try:
                with quiet_libraries(scratch_in=self.workdir):
                    calibrator = create_calibrator(
                        self.prepared, augmented_model_path=str(self.workdir / f"augmented-{method}.onnx"),
                        calibrate_method=CalibrationMethod[method],
                    )
                    with progress_bar(self.progress, len(self.x), f"calibrating ({method})") as bar:
                        for start in range(0, len(self.x), self.chunk):
                            chunk = self.x[start : start + self.chunk]
                            calibrator.collect_data(ArrayCalibrationReader(self.input_name, chunk, batch_size=self.chunk))
                            bar.update(len(chunk))
                    save_tensors_data(calibrator.compute_data(), path)
            except Exception as e:
                raise QuantizeError(f"{method} calibration failed: {describe(e)}") from e
            self.caches[method] = path
        return self.caches[method]


def quantize_static_retrying(source: Path, dst: Path, reader: CalibrationDataReader | None, **options) -> dict:
    """onnxruntime's quantize_static; where its widening of weight scales for int32 biases fails on
    the graph (onnxruntime issue 24815: a (1, N) Gemm bias, as magika's), once more without it.
    Returns the extra_options it needed: {} or {"QDQDisableWeightAdjustForInt32Bias": True}."""
    try:
        quantize_static(str(source), str(dst), reader, **options)
        return {}
    except Exception:
        if reader is not None:
            reader.rewind()
        extra = {"QDQDisableWeightAdjustForInt32Bias": True}
        quantize_static(str(source), str(dst), reader, **options, extra_options=extra)
        return extra


def static_options(recipe: QuantRecipe, per_channel: bool | None = None) -> dict:
    """quantize_static's keyword arguments for a static recipe (`per_channel` where the caller had to
    change it: per-channel QDQ needs opset 13)."""
    return {"quant_format": QuantFormat[recipe.format],
            "per_channel": recipe.per_channel if per_channel is None else per_channel,
            "reduce_range": recipe.reduce_range, "activation_type": QuantType[recipe.activation_type],
            "weight_type": QuantType[recipe.weight_type], "calibrate_method": CalibrationMethod[recipe.calibrate_method],
            "nodes_to_exclude": list(recipe.exclude_nodes),
            "op_types_to_quantize": list(recipe.op_types) if recipe.op_types else None}


def quantize_on_feeds(recipe: QuantRecipe, source: Path, dst: Path, feeds, per_channel: bool | None = None) -> dict:
    """A static recipe calibrated on `feeds` (a sequence of {input name: array}: a model with any
    inputs); returns the extra options ONNX Runtime needed ({} or the int32-bias retry's)."""
    source, dst = source.absolute(), dst.absolute()  # quiet_libraries runs the block in a scratch folder
    with quiet_libraries(scratch_in=dst.parent):
        return quantize_static_retrying(source, dst, FeedReader(feeds), **static_options(recipe, per_channel))


def apply_recipe(recipe: QuantRecipe, prepared: Path, dst: Path, calibration: StreamedCalibration | None = None) -> dict:
    """Write `prepared` transformed by `recipe` to `dst`; returns its op counts and quantized nodes
    (and the extra options ONNX Runtime needed, where it did). A recipe that quantizes and leaves no
    quantized node (the model's compute in ops it skips) is a QuantizeError: never int8 in name only."""
    check_node_names(prepared, recipe.exclude_nodes)
    prepared, dst = prepared.absolute(), dst.absolute()  # quiet_libraries runs the block in a scratch folder
    extra: dict = {}
    try:
        with quiet_libraries(scratch_in=dst.parent):
            if recipe.kind == "fp32":
                shutil.copyfile(prepared, dst)
            elif recipe.kind == "static":
                extra = quantize_static_retrying(
                    prepared, dst, None, **static_options(recipe),
                    calibration_cache_path=calibration.ranges_file(recipe.calibrate_method))
            elif recipe.kind == "dynamic":
                quantize_dynamic(str(prepared), str(dst), per_channel=recipe.per_channel,
                                 reduce_range=recipe.reduce_range, weight_type=QuantType[recipe.weight_type],
                                 nodes_to_exclude=list(recipe.exclude_nodes),
                                 op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None)
            elif recipe.kind == "weight_only":
                from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

                quantizer = MatMulNBitsQuantizer(onnx.load(str(prepared)), bits=recipe.bits, block_size=recipe.block_size,
                                                 is_symmetric=True, accuracy_level=recipe.accuracy_level,
                                                 op_types_to_quantize=recipe.op_types or ("MatMul",),
                                                 nodes_to_exclude=list(recipe.exclude_nodes))
                quantizer.process()
                quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
            elif recipe.kind == "fp16":
                from onnxruntime.transformers.float16 import convert_float_to_float16

                # keep_io_types: the app still feeds and reads float32, as the manifest says.
                converted = convert_float_to_float16(onnx.load(str(prepared)), keep_io_types=True)
                onnx.save(sort_topologically(converted), str(dst))
            else:
                raise QuantizeError(f"unknown recipe kind '{recipe.kind}'")
    except QuantizeError:
        raise
    except Exception as e:
        raise QuantizeError(f"quantizing {prepared.name} with {recipe.name} failed: {describe(e, 2000)}",
                            'try quantize.format = "QDQ" or quantize.calibrate_method = "MinMax"') from e
    return recipe_report(recipe, dst) | ({"extra_options": extra} if extra else {})


def recipe_report(recipe: QuantRecipe, model: Path) -> dict:
    """{recipe, op_counts, quantized_nodes} of a model `recipe` made; a quantizing recipe's model
    without any quantized node is refused."""
    op_counts = count_ops(onnx.load(str(model)))
    quantized = quantized_node_count(op_counts)
    if quantized == 0 and recipe.kind in ("static", "dynamic", "weight_only"):
        raise QuantizeError(f"{recipe.name} left {model.name} without any quantized node",
                            "check that the model has Conv/Gemm/MatMul layers ONNX Runtime quantizes")
    return {"recipe": recipe.name, "op_counts": op_counts, "quantized_nodes": quantized}


def quantize_model_on_feeds(src: Path, dst: Path, feeds, recipe: QuantRecipe, workdir: Path) -> dict:
    """Pre-process, then a static recipe calibrated on `feeds` ({input name: array} each: a model
    with any inputs); returns its report."""
    prepared = workdir / f"{src.stem}-prepared.onnx"
    prepare(src, prepared)
    extra = quantize_on_feeds(recipe, prepared, dst, feeds)
    return recipe_report(recipe, dst) | ({"extra_options": extra} if extra else {})


def quantize_model(src: Path, dst: Path, calibration_x: np.ndarray, recipe: QuantRecipe, workdir: Path,
                   progress: Callable[[str], None] = lambda _: None) -> dict:
    """Pre-process, calibrate (streamed) and apply one recipe."""
    prepared = workdir / "prepared.onnx"
    prepare(src, prepared, progress=progress)
    calibration = StreamedCalibration(prepared, calibration_x, workdir, progress=progress) if recipe.kind == "static" else None
    report = apply_recipe(recipe, prepared, dst, calibration)
    return {**report, "calibration_samples": len(calibration_x) if calibration else 0}


def sort_topologically(model: onnx.ModelProto) -> onnx.ModelProto:
    """Order nodes so each comes after its inputs' producers. ORT's fp16 converter appends the
    input Casts at the end of the graph, which the ONNX checker rejects."""
    ordered = ordered_nodes(model.graph)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def check_node_names(model: Path, names: tuple[str, ...]) -> None:
    """Nodes to keep in float must exist: a typo would otherwise silently quantize everything."""
    if not names:
        return
    nodes = onnx.load(str(model)).graph.node
    missing = [name for name in names if name not in {node.name for node in nodes}]
    if missing:
        quantizable = [n.name for n in nodes if n.op_type in ("Conv", "Gemm", "MatMul")]
        raise ConfigError(
            f"quantize.exclude_nodes: {', '.join(missing)} not in the graph",
            f"node names after ORT pre-processing include: {', '.join(quantizable[:12])}",
        )


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, sorted by name, subgraphs (If, Loop, Scan bodies) included."""
    return dict(sorted(collections.Counter(node.op_type for node in all_nodes(model.graph)).items()))


def quantized_node_count(op_counts: dict[str, int]) -> int:
    """QuantizeLinear/DequantizeLinear (QDQ), QLinear*/ConvInteger-style (QOperator), dynamic and
    weight-only (MatMulNBits) nodes."""
    return sum(n for op, n in op_counts.items() if op in QUANT_OPS or op.startswith("QLinear") or "Integer" in op
               or op.startswith("DynamicQuantize") or op in ("MatMulNBits", "GatherBlockQuantized"))
