"""ONNX float ops as their torch twins (`OPS`: node, its inputs -> output), for running an ONNX
graph as a differentiable torch module (export/qdq_distill.QdqModule). Each follows the ONNX
operator's definition for the attributes common vision, audio and sequence models use; another
attribute value is refused in one line naming the node."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from edge_distill.errors import QuantizeError

TORCH_TYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.INT64: torch.int64,
               onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.BOOL: torch.bool,
               onnx.TensorProto.DOUBLE: torch.float64, onnx.TensorProto.FLOAT16: torch.float32}


def _ints(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else list(found.ints) if found.ints else found.i


def node_attribute(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


def _pads(node: onnx.NodeProto, spatial: int) -> tuple[list[int], list[int]]:
    if node_attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        raise QuantizeError(f"{node.op_type} {node.name}: auto_pad {node_attribute(node, 'auto_pad').decode()} is not supported "
                            "by quantization-aware distillation", "leave out --distill")
    pads = _ints(node, "pads", [0] * 2 * spatial)
    return pads[:spatial], pads[spatial:]


def _padded(x: torch.Tensor, begin: list[int], end: list[int], value: float = 0.0):
    """(input, symmetric padding for torch): asymmetric pads applied by F.pad first."""
    if begin == end:
        return x, begin
    spec = [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]
    return F.pad(x, spec, value=value), [0] * len(begin)


def _conv(node, x, w, b=None):
    spatial = w.dim() - 2
    begin, end = _pads(node, spatial)
    x, padding = _padded(x, begin, end)
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    return conv(x, w, b, stride=_ints(node, "strides", [1] * spatial), padding=padding,
                dilation=_ints(node, "dilations", [1] * spatial), groups=node_attribute(node, "group", 1))


def _conv_transpose(node, x, w, b=None):
    spatial = w.dim() - 2
    begin, end = _pads(node, spatial)
    if begin != end or _ints(node, "output_shape"):
        raise QuantizeError(f"ConvTranspose {node.name}: asymmetric pads or output_shape are not supported by "
                            "quantization-aware distillation", "leave out --distill")
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spatial - 1]
    return conv(x, w, b, stride=_ints(node, "strides", [1] * spatial), padding=begin,
                output_padding=_ints(node, "output_padding", [0] * spatial), groups=node_attribute(node, "group", 1),
                dilation=_ints(node, "dilations", [1] * spatial))


def _resize(node, x, roi=None, scales=None, sizes=None):
    """Nearest (asymmetric, floor) and linear (half_pixel) resizing of the spatial axes: torch's
    interpolate computes exactly these."""
    mode = node_attribute(node, "mode", b"nearest").decode()
    transform = node_attribute(node, "coordinate_transformation_mode", b"half_pixel").decode()
    nearest = node_attribute(node, "nearest_mode", b"round_prefer_floor").decode()
    if (mode, transform, nearest if mode == "nearest" else "") not in (("nearest", "asymmetric", "floor"),
                                                                     ("linear", "half_pixel", "")):
        raise QuantizeError(f"Resize {node.name}: mode {mode} with {transform} coordinates is not supported by "
                            "quantization-aware distillation", "leave out --distill")
    if sizes is not None and sizes.numel():
        size = [int(v) for v in sizes.tolist()[2:]]
    else:
        size = [int(math.floor(n * f)) for n, f in zip(x.shape[2:], scales.tolist()[2:])]
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=("linear", "bilinear", "trilinear")[x.dim() - 3], align_corners=False)


def _pool(node, x, kind: str):
    kernel = _ints(node, "kernel_shape")
    begin, end = _pads(node, len(kernel))
    strides = _ints(node, "strides", [1] * len(kernel))
    ceil = bool(node_attribute(node, "ceil_mode", 0))
    if kind == "max":
        x, padding = _padded(x, begin, end, float("-inf"))
        return (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(kernel) - 1](x, kernel, strides, padding, ceil_mode=ceil)
    include = bool(node_attribute(node, "count_include_pad", 0))
    if begin != end and not include:
        raise QuantizeError(f"AveragePool {node.name}: asymmetric padding without count_include_pad is not supported "
                            "by quantization-aware distillation", "leave out --distill")
    x, padding = _padded(x, begin, end)
    return (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(kernel) - 1](x, kernel, strides, padding, ceil_mode=ceil,
                                                                       count_include_pad=include)


def _gemm(node, a, b, c=None):
    a = a.transpose(-1, -2) if node_attribute(node, "transA", 0) else a
    b = b.transpose(-1, -2) if node_attribute(node, "transB", 0) else b
    y = node_attribute(node, "alpha", 1.0) * (a @ b)
    return y if c is None else y + node_attribute(node, "beta", 1.0) * c


def _axes(node, given):
    """Axes from an input (newer opsets) or the attribute (older)."""
    return [int(a) for a in given.tolist()] if given is not None else _ints(node, "axes")


def _reshape(node, x, shape):
    target = [int(s) for s in shape.tolist()]
    if not node_attribute(node, "allowzero", 0):
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


def _slice(node, x, starts, ends, axes=None, steps=None):
    axes = list(range(len(starts))) if axes is None else axes.tolist()
    steps = [1] * len(starts) if steps is None else steps.tolist()
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts.tolist(), ends.tolist(), axes, steps):
        if step < 0:
            raise QuantizeError(f"Slice {node.name}: negative steps are not supported by quantization-aware "
                                "distillation", "leave out --distill")
        size = x.shape[axis]
        index[axis] = slice(max(min(start, size), -size), max(min(end, size), -size - 1), step)
    return x[tuple(index)]


def _squeeze(node, x, axes=None):
    axes = _axes(node, axes)
    return x.squeeze() if axes is None else x.squeeze(tuple(a % x.dim() for a in axes))


def _unsqueeze(node, x, axes=None):
    for axis in sorted(a % (x.dim() + len(_axes(node, axes))) for a in _axes(node, axes)):
        x = x.unsqueeze(axis)
    return x


def _reduce(fn):
    def reduce(node, x, axes=None):
        axes = _axes(node, axes)
        keep = bool(node_attribute(node, "keepdims", 1))
        if not axes:
            return fn(x, dim=tuple(range(x.dim())), keepdim=keep)
        return fn(x, dim=tuple(axes), keepdim=keep)
    return reduce


def _split(node, x, split=None):
    axis = node_attribute(node, "axis", 0)
    sizes = split.tolist() if split is not None else _ints(node, "split")
    if not sizes:
        count = len(node.output)
        sizes = [math.ceil(x.shape[axis] / count)] * count
    return list(torch.split(x, sizes, dim=axis))


def _clip(node, x, low=None, high=None):
    low = node_attribute(node, "min") if low is None else low
    high = node_attribute(node, "max") if high is None else high
    return torch.clamp(x, min=low, max=high)


def _gather(node, x, indices):
    axis = node_attribute(node, "axis", 0) % x.dim()
    flat = torch.index_select(x, axis, indices.reshape(-1).long() % x.shape[axis])
    return flat.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1:])


def _cast(node, x):
    to = node_attribute(node, "to")
    if to not in TORCH_TYPES:
        raise QuantizeError(f"Cast {node.name}: to type {to} is not supported by quantization-aware distillation",
                            "leave out --distill")
    return x.to(TORCH_TYPES[to])


def _softmax(node, x):
    return torch.softmax(x, dim=node_attribute(node, "axis", -1))


def _flatten(node, x):
    axis = node_attribute(node, "axis", 1) % (x.dim() or 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _shape(node, x):
    return torch.tensor(x.shape[node_attribute(node, "start", 0):node_attribute(node, "end", None)], dtype=torch.int64)


# Float ops: node, its inputs (None for an empty name) -> output or list of outputs.
OPS: dict[str, Callable] = {
    "BatchNormalization": lambda n, x, scale, bias, mean, var: F.batch_norm(
        x, mean, var, scale, bias, training=False, eps=node_attribute(n, "epsilon", 1e-5)),
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Resize": _resize, "Gemm": _gemm, "MatMul": lambda n, a, b: a @ b,
    "Add": lambda n, a, b: a + b, "Sub": lambda n, a, b: a - b, "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc"),
    "Pow": lambda n, a, b: torch.pow(a, b), "Sqrt": lambda n, x: torch.sqrt(x), "Exp": lambda n, x: torch.exp(x),
    "Neg": lambda n, x: -x, "Erf": lambda n, x: torch.erf(x), "Reciprocal": lambda n, x: 1 / x,
    "Max": lambda n, *xs: torch.stack(torch.broadcast_tensors(*xs)).amax(0),
    "Min": lambda n, *xs: torch.stack(torch.broadcast_tensors(*xs)).amin(0),
    "Relu": lambda n, x: F.relu(x), "Tanh": lambda n, x: torch.tanh(x), "Sigmoid": lambda n, x: torch.sigmoid(x),
    "LeakyRelu": lambda n, x: F.leaky_relu(x, node_attribute(n, "alpha", 0.01)),
    "HardSigmoid": lambda n, x: torch.clamp(node_attribute(n, "alpha", 0.2) * x + node_attribute(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda n, x: F.hardswish(x), "Clip": _clip, "Softmax": _softmax, "Identity": lambda n, x: x,
    "MaxPool": lambda n, x: _pool(n, x, "max"), "AveragePool": lambda n, x: _pool(n, x, "avg"),
    "GlobalAveragePool": lambda n, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda n, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum), "ReduceMax": _reduce(torch.amax),
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": lambda n, x: x.permute(*_ints(n, "perm",
                                                                                          list(range(x.dim()))[::-1])),
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Concat": lambda n, *xs: torch.cat(xs, dim=node_attribute(n, "axis")),
    "Split": _split, "Slice": _slice, "Gather": _gather, "Shape": _shape, "Cast": _cast,
    "Expand": lambda n, x, shape: x * torch.ones(shape.tolist(), dtype=x.dtype),
    "Where": lambda n, c, a, b: torch.where(c, a, b), "Equal": lambda n, a, b: a == b,
    "Constant": lambda n: torch.from_numpy(numpy_helper.to_array(node_attribute(n, "value")).copy()),
}
