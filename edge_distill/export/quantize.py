"""Post-training quantization with onnxruntime.quantization: recipes, streamed calibration, apply.

A `QuantRecipe` is one way to turn the fp32 student into a deployable model (fp32 as is, static
int8 QDQ/QOperator, dynamic int8, fp16). The profile names one recipe; the search in `search.py`
tries many and keeps the fastest that stays inside the accuracy budget.
"""

from __future__ import annotations

import collections
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
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

from edge_distill.config import QuantizeConfig
from edge_distill.errors import ConfigError, QuantizeError, describe
from edge_distill.export.graphs import all_nodes, ordered_nodes
from edge_distill.export.onnx_io import quiet_libraries
from edge_distill.onnx_model import load_onnx
from edge_distill.progress import progress_bar

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")
SHORT_TYPES = {"QUInt8": "U8", "QInt8": "S8"}


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


@dataclass(frozen=True)
class QuantRecipe:
    kind: str  # "fp32" | "static" | "dynamic" | "fp16"
    format: str = "QDQ"
    per_channel: bool = True
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    calibrate_method: str = "MinMax"
    reduce_range: bool = False
    exclude_nodes: tuple[str, ...] = ()  # kept in float

    @classmethod
    def from_config(cls, cfg: QuantizeConfig) -> "QuantRecipe":
        """The single static int8 recipe a profile asks for."""
        return cls("static", cfg.format, cfg.per_channel, cfg.activation_type, cfg.weight_type,
                   cfg.calibrate_method, cfg.reduce_range, tuple(cfg.exclude_nodes))

    @property
    def name(self) -> str:
        if self.kind in ("fp32", "fp16"):
            return self.kind
        types = SHORT_TYPES[self.activation_type] + SHORT_TYPES[self.weight_type]
        if self.kind == "dynamic":
            parts = ["dynamic", SHORT_TYPES[self.weight_type], "pc" if self.per_channel else "pt"]
        else:
            parts = [self.format, types, "pc" if self.per_channel else "pt", self.calibrate_method]
        if self.reduce_range:
            parts.append("rr")
        if self.exclude_nodes:
            parts.append(f"float{len(self.exclude_nodes)}")
        return "-".join(parts)

    def keep_in_float(self, nodes: tuple[str, ...]) -> "QuantRecipe":
        return replace(self, exclude_nodes=tuple(dict.fromkeys(self.exclude_nodes + nodes)))


def prepare_for_quantization(src: Path, dst: Path) -> None:
    """ORT's recommended pre-processing: symbolic shape inference and graph optimization."""
    load_onnx(src)
    source, target = src.absolute(), dst.absolute()  # before quiet_libraries changes the current folder
    try:
        with quiet_libraries(scratch_in=dst.parent):
            quant_pre_process(str(source), str(target))
    except Exception as e:
        raise QuantizeError(f"pre-processing {src.name} for quantization failed: {describe(e)}") from e


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


def apply_recipe(recipe: QuantRecipe, prepared: Path, dst: Path, calibration: StreamedCalibration | None) -> dict:
    """Write `prepared` transformed by `recipe` to `dst`; returns op counts (and the extra options
    ONNX Runtime needed, where it did)."""
    check_node_names(prepared, recipe.exclude_nodes)
    prepared, dst = prepared.absolute(), dst.absolute()  # quiet_libraries runs the block in a scratch folder
    extra: dict = {}
    try:
        with quiet_libraries(scratch_in=dst.parent):
            if recipe.kind == "fp32":
                shutil.copyfile(prepared, dst)
            elif recipe.kind == "static":
                extra = quantize_static_retrying(
                    prepared, dst, None,
                    quant_format=QuantFormat[recipe.format],
                    per_channel=recipe.per_channel,
                    reduce_range=recipe.reduce_range,
                    activation_type=QuantType[recipe.activation_type],
                    weight_type=QuantType[recipe.weight_type],
                    calibrate_method=CalibrationMethod[recipe.calibrate_method],
                    calibration_cache_path=calibration.ranges_file(recipe.calibrate_method),
                    nodes_to_exclude=list(recipe.exclude_nodes),
                )
            elif recipe.kind == "dynamic":
                quantize_dynamic(str(prepared), str(dst), per_channel=recipe.per_channel,
                                 reduce_range=recipe.reduce_range, weight_type=QuantType[recipe.weight_type],
                                 nodes_to_exclude=list(recipe.exclude_nodes))
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
        raise QuantizeError(f"quantizing with {recipe.name} failed: {describe(e)}",
                            'try quantize.format = "QDQ" or quantize.calibrate_method = "MinMax"') from e
    return {"recipe": recipe.name, "op_counts": count_ops(onnx.load(str(dst)))} | ({"extra_options": extra} if extra else {})


def quantize_model(src: Path, dst: Path, calibration_x: np.ndarray, recipe: QuantRecipe, workdir: Path,
                   progress: Callable[[str], None] = lambda _: None) -> dict:
    """Pre-process, calibrate (streamed) and apply one recipe."""
    prepared = workdir / "prepared.onnx"
    prepare_for_quantization(src, prepared)
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
    """QuantizeLinear/DequantizeLinear (QDQ) plus QLinear*/ConvInteger-style (QOperator) nodes."""
    return sum(n for op, n in op_counts.items() if op in QUANT_OPS or op.startswith("QLinear") or "Integer" in op
               or op.startswith("DynamicQuantize"))
