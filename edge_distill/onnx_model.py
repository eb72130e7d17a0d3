"""An ONNX model's declared tensors, below every package that reads models: loading a checked
model, its inputs and outputs (TensorSpec), and concrete shapes for symbolic sizes (--shape).
Low module: onnx, numpy, errors and files only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edge_distill.errors import ConfigError, InputFileError, ModelError, describe
from edge_distill.files import regular_file


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, int64, ...
    dims: tuple[int | str, ...]  # as declared: sizes, or the names of symbolic dimensions

    @property
    def is_float(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype), np.floating)

    def as_manifest(self, fixed: tuple[int, ...] | None = None) -> dict:
        spec = {"name": self.name, "dtype": self.dtype, "shape": list(self.dims)}
        return spec | ({"fixed_shape": list(fixed)} if fixed is not None else {})


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    shape = value.type.tensor_type.shape
    # A size of 0 or -1 is symbolic too: exporters write -1 where they mean "any".
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                 for d in shape.dim)


def model_tensors(model: onnx.ModelProto, where: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) as declared; initializers that old opsets also list as inputs are left out."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for values in (model.graph.input, model.graph.output):
        tensors = []
        for value in values:
            if value.name in initializers:
                continue
            if not value.type.HasField("tensor_type"):
                raise InputFileError(f"{where}: input or output '{value.name}' is not a tensor (a sequence or map)",
                                     "only tensor inputs and outputs can be quantized and measured")
            elem = value.type.tensor_type.elem_type
            try:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
            except (KeyError, ValueError):
                dtype = None
            if dtype is None or dtype.kind not in "biuf":  # ml_dtypes' bfloat16 and float8 have kind "V"
                shown = onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else elem
                raise InputFileError(f"{where}: input or output '{value.name}' is {shown}, which numpy and ONNX "
                                     "Runtime's Python API cannot feed or read", "export it with float32 (or "
                                     "float16, integer or bool) inputs and outputs")
            tensors.append(TensorSpec(value.name, dtype.name, _dims(value)))
        specs.append(tensors)
    if not specs[1]:
        raise InputFileError(f"{where}: the graph has no outputs", "export the model with its outputs")
    return specs[0], specs[1]


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME:1x3x48x192` -> ("NAME", (1, 3, 48, 192)), as `--shape` takes it."""
    name, sep, dims = text.rpartition(":")
    try:
        parsed = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        parsed = ()
    if not sep or not name or not parsed or min(parsed) < 1:
        raise ConfigError(f"--shape {text!r}: expected INPUT_NAME:DIMS with positive sizes, e.g. input:1x3x48x192")
    return name, parsed


MAX_INPUT_ELEMENTS = 2**34  # 64 GiB of float32 in one input


def fix_shapes(inputs: list[TensorSpec], shapes: dict[str, tuple[int, ...]], where: str,
               batch: int | None = None) -> dict[str, tuple[int, ...]]:
    """Every input's concrete shape: as declared, `shapes` (--shape) filling its symbolic sizes; with
    `batch`, a symbolic first axis not given becomes `batch`. Any other symbolic size is an error
    naming it."""
    unknown = set(shapes) - {t.name for t in inputs}
    if unknown:
        raise ConfigError(f"--shape {sorted(unknown)[0]}: the model has no such input",
                          f"its inputs: {', '.join(t.name for t in inputs)}")
    fixed = {}
    for tensor in inputs:
        dims = list(tensor.dims)
        if tensor.name in shapes:
            given = shapes[tensor.name]
            if len(given) != len(dims):
                raise ConfigError(f"--shape {tensor.name}: {len(given)} sizes for an input of rank {len(dims)}")
            for dim, size in zip(dims, given):
                if isinstance(dim, int) and dim != size:
                    raise ConfigError(f"--shape {tensor.name}: size {size} where the model fixes {dim}")
            dims = list(given)
        elif dims and isinstance(dims[0], str) and batch is not None:
            dims[0] = batch  # a symbolic batch axis
        free = [f"{d} (axis {i})" for i, d in enumerate(dims) if isinstance(d, str)]
        if free:
            example = "x".join(str(d) if isinstance(d, int) else "1" for d in dims)
            raise ModelError(f"{where}: input '{tensor.name}' has symbolic size(s) {', '.join(free)}: concrete "
                             "shapes are needed", f"give them, e.g. --shape {tensor.name}:{example}")
        elements = math.prod(dims)
        if elements > MAX_INPUT_ELEMENTS:
            raise ConfigError(f"{where}: input '{tensor.name}' of shape {'x'.join(map(str, dims))} holds {elements:.3g} "
                              f"values, more than the {MAX_INPUT_ELEMENTS:.3g} any device here could hold",
                              "give the shape the model runs at (--shape NAME:DIMS)")
        fixed[tensor.name] = tuple(dims)
    return fixed


# Ops ONNX Runtime registers in the default ONNX domain though ONNX has no schema for them;
# onnxruntime-genai's builder writes them (lm/export.py). The checker is run with them set apart.
ORT_ONNX_DOMAIN_OPS = frozenset({"SimplifiedLayerNormalization"})


def check_onnx(model: onnx.ModelProto) -> None:
    """onnx.checker.check_model, with ORT_ONNX_DOMAIN_OPS moved to a domain of their own in a copy
    (the checker skips domains it does not know) so everything else is still checked."""
    if any(node.op_type in ORT_ONNX_DOMAIN_OPS and not node.domain for node in model.graph.node):
        model = copy_of(model)
        for node in model.graph.node:
            if node.op_type in ORT_ONNX_DOMAIN_OPS and not node.domain:
                node.domain = "onnxruntime.onnx_domain"
        model.opset_import.add(domain="onnxruntime.onnx_domain", version=1)
    onnx.checker.check_model(model)


def copy_of(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX model; any failure names the file."""
    regular_file(path)
    try:
        model = onnx.load(str(path))
        check_onnx(model)
    except Exception as e:
        raise InputFileError(f"{path}: not a valid ONNX model ({describe(e, 200)})", "re-export it with torch.onnx.export") from None
    return model
