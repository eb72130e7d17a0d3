"""Quantization-aware distillation of any ONNX model: its post-training int8 (QDQ) copy, trained to
match the float original on the user's own unlabeled samples, written back as QDQ.

The QDQ model ONNX Runtime's quantizer made is read as a torch module (`QdqModule`): every
float op runs as its torch twin, each weight's DequantizeLinear becomes a trainable weight
fake-quantized with a trainable per-channel scale, and each activation's QuantizeLinear /
DequantizeLinear pair a fake quantizer whose scale is trained (LSQ: the gradient through rounding
passes straight through, so the scale learns where clipping and rounding balance). The float
model's outputs on the calibration samples are the targets; the loss is each output's squared
error over its mean energy (over samples, the inverse of the SNR int8 is judged by). The trained weights and scales
go back into the same graph (int8 weights, int32 biases at input scale x weight scale), so the
result runs on ONNX Runtime's int8 kernels exactly as post-training int8 does, and is judged,
timed and shipped by the same rules.

Ops are those of common vision, audio and sequence models; a graph with any other op is refused
in one line naming them. Seeded; bounded by quantize.distill_max_seconds.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

from edge_distill.errors import QuantizeError

INT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
TORCH_TYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.INT64: torch.int64,
               onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.BOOL: torch.bool,
               onnx.TensorProto.DOUBLE: torch.float64, onnx.TensorProto.FLOAT16: torch.float32}


def round_through(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def _ints(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else list(found.ints) if found.ints else found.i


def _attr(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


def _pads(node: onnx.NodeProto, spatial: int) -> tuple[list[int], list[int]]:
    if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        raise QuantizeError(f"{node.op_type} {node.name}: auto_pad {_attr(node, 'auto_pad').decode()} is not supported "
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
                dilation=_ints(node, "dilations", [1] * spatial), groups=_attr(node, "group", 1))


def _conv_transpose(node, x, w, b=None):
    spatial = w.dim() - 2
    begin, end = _pads(node, spatial)
    if begin != end or _ints(node, "output_shape"):
        raise QuantizeError(f"ConvTranspose {node.name}: asymmetric pads or output_shape are not supported by "
                            "quantization-aware distillation", "leave out --distill")
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spatial - 1]
    return conv(x, w, b, stride=_ints(node, "strides", [1] * spatial), padding=begin,
                output_padding=_ints(node, "output_padding", [0] * spatial), groups=_attr(node, "group", 1),
                dilation=_ints(node, "dilations", [1] * spatial))


def _resize(node, x, roi=None, scales=None, sizes=None):
    """Nearest (asymmetric, floor) and linear (half_pixel) resizing of the spatial axes: torch's
    interpolate computes exactly these."""
    mode = _attr(node, "mode", b"nearest").decode()
    transform = _attr(node, "coordinate_transformation_mode", b"half_pixel").decode()
    nearest = _attr(node, "nearest_mode", b"round_prefer_floor").decode()
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
    ceil = bool(_attr(node, "ceil_mode", 0))
    if kind == "max":
        x, padding = _padded(x, begin, end, float("-inf"))
        return (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(kernel) - 1](x, kernel, strides, padding, ceil_mode=ceil)
    include = bool(_attr(node, "count_include_pad", 0))
    if begin != end and not include:
        raise QuantizeError(f"AveragePool {node.name}: asymmetric padding without count_include_pad is not supported "
                            "by quantization-aware distillation", "leave out --distill")
    x, padding = _padded(x, begin, end)
    return (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(kernel) - 1](x, kernel, strides, padding, ceil_mode=ceil,
                                                                       count_include_pad=include)


def _gemm(node, a, b, c=None):
    a = a.transpose(-1, -2) if _attr(node, "transA", 0) else a
    b = b.transpose(-1, -2) if _attr(node, "transB", 0) else b
    y = _attr(node, "alpha", 1.0) * (a @ b)
    return y if c is None else y + _attr(node, "beta", 1.0) * c


def _axes(node, given):
    """Axes from an input (newer opsets) or the attribute (older)."""
    return [int(a) for a in given.tolist()] if given is not None else _ints(node, "axes")


def _reshape(node, x, shape):
    target = [int(s) for s in shape.tolist()]
    if not _attr(node, "allowzero", 0):
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
        keep = bool(_attr(node, "keepdims", 1))
        if not axes:
            return fn(x, dim=tuple(range(x.dim())), keepdim=keep)
        return fn(x, dim=tuple(axes), keepdim=keep)
    return reduce


def _split(node, x, split=None):
    axis = _attr(node, "axis", 0)
    sizes = split.tolist() if split is not None else _ints(node, "split")
    if not sizes:
        count = len(node.output)
        sizes = [math.ceil(x.shape[axis] / count)] * count
    return list(torch.split(x, sizes, dim=axis))


def _clip(node, x, low=None, high=None):
    low = _attr(node, "min") if low is None else low
    high = _attr(node, "max") if high is None else high
    return torch.clamp(x, min=low, max=high)


def _gather(node, x, indices):
    axis = _attr(node, "axis", 0) % x.dim()
    flat = torch.index_select(x, axis, indices.reshape(-1).long() % x.shape[axis])
    return flat.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1:])


def _cast(node, x):
    to = _attr(node, "to")
    if to not in TORCH_TYPES:
        raise QuantizeError(f"Cast {node.name}: to type {to} is not supported by quantization-aware distillation",
                            "leave out --distill")
    return x.to(TORCH_TYPES[to])


def _softmax(node, x):
    return torch.softmax(x, dim=_attr(node, "axis", -1))


def _flatten(node, x):
    axis = _attr(node, "axis", 1) % (x.dim() or 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _shape(node, x):
    return torch.tensor(x.shape[_attr(node, "start", 0):_attr(node, "end", None)], dtype=torch.int64)


# Float ops: node, its inputs (None for an empty name) -> output or list of outputs.
OPS: dict[str, Callable] = {
    "BatchNormalization": lambda n, x, scale, bias, mean, var: F.batch_norm(
        x, mean, var, scale, bias, training=False, eps=_attr(n, "epsilon", 1e-5)),
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Resize": _resize, "Gemm": _gemm, "MatMul": lambda n, a, b: a @ b,
    "Add": lambda n, a, b: a + b, "Sub": lambda n, a, b: a - b, "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc"),
    "Pow": lambda n, a, b: torch.pow(a, b), "Sqrt": lambda n, x: torch.sqrt(x), "Exp": lambda n, x: torch.exp(x),
    "Neg": lambda n, x: -x, "Erf": lambda n, x: torch.erf(x), "Reciprocal": lambda n, x: 1 / x,
    "Max": lambda n, *xs: torch.stack(torch.broadcast_tensors(*xs)).amax(0),
    "Min": lambda n, *xs: torch.stack(torch.broadcast_tensors(*xs)).amin(0),
    "Relu": lambda n, x: F.relu(x), "Tanh": lambda n, x: torch.tanh(x), "Sigmoid": lambda n, x: torch.sigmoid(x),
    "LeakyRelu": lambda n, x: F.leaky_relu(x, _attr(n, "alpha", 0.01)),
    "HardSigmoid": lambda n, x: torch.clamp(_attr(n, "alpha", 0.2) * x + _attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda n, x: F.hardswish(x), "Clip": _clip, "Softmax": _softmax, "Identity": lambda n, x: x,
    "MaxPool": lambda n, x: _pool(n, x, "max"), "AveragePool": lambda n, x: _pool(n, x, "avg"),
    "GlobalAveragePool": lambda n, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda n, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum), "ReduceMax": _reduce(torch.amax),
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": lambda n, x: x.permute(*_ints(n, "perm",
                                                                                          list(range(x.dim()))[::-1])),
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Concat": lambda n, *xs: torch.cat(xs, dim=_attr(n, "axis")),
    "Split": _split, "Slice": _slice, "Gather": _gather, "Shape": _shape, "Cast": _cast,
    "Expand": lambda n, x, shape: x * torch.ones(shape.tolist(), dtype=x.dtype),
    "Where": lambda n, c, a, b: torch.where(c, a, b), "Equal": lambda n, a, b: a == b,
    "Constant": lambda n: torch.from_numpy(numpy_helper.to_array(_attr(n, "value")).copy()),
}


@dataclass
class WeightQuant:
    """A weight's DequantizeLinear: trainable values in units of the initial step, trainable scale."""
    values: str  # the int8 initializer
    scale: str
    zero_point: str
    axis: int | None
    low: int
    high: int


class QdqModule(torch.nn.Module):
    """A QDQ ONNX graph (no subgraphs) as a differentiable torch module with trainable weights and
    scales; `export` writes them back into a copy of the graph."""

    def __init__(self, model: onnx.ModelProto, reduce_range: bool = False):
        """`reduce_range`: weights kept within 7 bits (-64..64), as ONNX Runtime's quantizer made
        them (x86 without VNNI, where u8 x s8 pair sums saturate at 16 bits)."""
        super().__init__()
        graph = model.graph
        self.model = model
        unsupported = sorted({n.op_type for n in graph.node} - set(OPS) - {"QuantizeLinear", "DequantizeLinear"})
        if unsupported:
            raise QuantizeError(f"quantization-aware distillation does not support op(s) {', '.join(unsupported)}",
                                "leave out --distill: post-training int8 or float ships")
        init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = list(graph.node)
        self.constants = {name: torch.from_numpy(np.array(a)) for name, a in init.items()}
        self.output_names = [o.name for o in graph.output]
        self.weights: dict[str, WeightQuant] = {}
        self.step0: dict[str, torch.Tensor] = {}
        self.bias: dict[str, str] = {}  # the int32 bias's DequantizeLinear output -> its initializer
        # Biases stay as float: int32 rounding is far below int8's, and they are requantized at the
        # trained scales when written back.
        self.bias_values: dict[str, torch.Tensor] = {}
        params, log_scales = {}, {}  # log_scales: the log of a factor on each scale
        for node in self.nodes:
            if node.op_type != "DequantizeLinear" or node.input[0] not in init:
                continue
            values = init[node.input[0]]
            if values.dtype == np.int32:
                self.bias[node.output[0]] = node.input[0]
                self.bias_values[node.output[0]] = torch.tensor(
                    (values.astype(np.float64) * init[node.input[1]].astype(np.float64)).astype(np.float32))
                continue
            if values.dtype.type not in (np.int8, np.uint8):
                continue
            axis = _attr(node, "axis", 1) if init[node.input[1]].ndim == 1 and init[node.input[1]].size > 1 else None
            # The range ONNX Runtime's quantizer rounds weights into (symmetric when signed).
            low, high = (int(v) for v in get_qmin_qmax_for_qType(
                onnx.helper.np_dtype_to_tensor_dtype(values.dtype), reduce_range, values.dtype == np.int8))
            self.weights[node.output[0]] = WeightQuant(node.input[0], node.input[1], node.input[2], axis, low, high)
            scale = self._shaped(torch.from_numpy(init[node.input[1]].astype(np.float32)), axis, values.ndim)
            zero = self._shaped(torch.from_numpy(init[node.input[2]].astype(np.float32)), axis, values.ndim)
            self.step0[node.output[0]] = scale
            params[node.output[0]] = torch.from_numpy(values.astype(np.float32)) - zero  # in steps
            log_scales[node.input[1]] = torch.zeros(init[node.input[1]].shape)
        for node in self.nodes:  # activations: QuantizeLinear's scale, shared by name with its DequantizeLinear
            if node.op_type == "QuantizeLinear" and node.input[1] in init and node.input[1] not in log_scales:
                log_scales[node.input[1]] = torch.zeros(np.shape(init[node.input[1]]))
        self.keys = {name: f"p{i}" for i, name in enumerate([*params, *log_scales])}
        self.values = torch.nn.ParameterDict({self.keys[n]: torch.nn.Parameter(v.clone()) for n, v in params.items()})
        self.scales = torch.nn.ParameterDict({self.keys[n]: torch.nn.Parameter(v.clone())
                                              for n, v in log_scales.items()})

    @staticmethod
    def _shaped(v: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
        if axis is None:
            return v.reshape(())
        shape = [1] * ndim
        shape[axis] = -1
        return v.reshape(shape)

    def scale(self, name: str, axis: int | None = None, ndim: int = 0) -> torch.Tensor:
        # Trained as the log of a factor on the quantizer's scale: untrained, exactly its value.
        found = self.constants[name].float()
        if name in self.keys and self.keys[name] in self.scales:
            found = found * self.scales[self.keys[name]].exp()
        return self._shaped(found, axis, ndim) if axis is not None else found

    def quantized_weight(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(integer values, scale, zero point) of a weight: its trainable values rounded (straight
        through) and clipped at its trainable scale, as its DequantizeLinear reads them."""
        w = self.weights[name]
        steps = self.values[self.keys[name]]
        scale = self.scale(w.scale, w.axis, steps.dim()).reshape(self.step0[name].shape)
        zero = self._shaped(self.constants[w.zero_point].float(), w.axis, steps.dim())
        return round_through(torch.clamp(steps * self.step0[name] / scale + zero, w.low, w.high)), scale, zero

    def weight(self, name: str) -> torch.Tensor:
        """A weight as its DequantizeLinear gives it."""
        q, scale, zero = self.quantized_weight(name)
        return (q - zero) * scale

    def forward(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = dict(feeds)
        for node in self.nodes:
            if node.op_type == "DequantizeLinear" and node.output[0] in self.weights:
                values[node.output[0]] = self.weight(node.output[0])
                continue
            if node.op_type == "DequantizeLinear" and node.output[0] in self.bias:
                values[node.output[0]] = self.bias_values[node.output[0]]
                continue
            args = [None if not name else values[name] if name in values else self.constants[name]
                    for name in node.input]
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                x, _, zero = args
                axis = _attr(node, "axis", 1) if zero.dim() == 1 and zero.numel() > 1 else None
                scale = self.scale(node.input[1], axis, x.dim())
                zero_f = zero.float() if axis is None else self._shaped(zero.float(), axis, x.dim())
                if node.op_type == "QuantizeLinear":
                    low, high = INT_RANGES[np.dtype(zero.numpy().dtype)]
                    # Clipped before rounding (the same for integer bounds): an infinite x saturates, as in ONNX Runtime.
                    out = round_through(torch.clamp(x / scale + zero_f, low, high))
                else:
                    out = (x - zero_f) * scale
            else:
                out = OPS[node.op_type](node, *args)
            for name, value in zip(node.output, out if isinstance(out, list) else [out]):
                values[name] = value
        return {name: values[name] for name in self.output_names}

    def export(self) -> onnx.ModelProto:
        """The graph with the trained int8 weights, scales and int32 biases (at input scale times
        weight scale, as ONNX Runtime's int8 kernels read them)."""
        model = copy.deepcopy(self.model)
        arrays: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for name, key in self.keys.items():
                if key in self.scales:
                    arrays[name] = self.scale(name).numpy().astype(np.float32)
            for name, w in self.weights.items():
                arrays[w.values] = self.quantized_weight(name)[0].numpy().astype(self.constants[w.values].numpy().dtype)
            producer = {out: node for node in self.nodes for out in node.output}
            for node in self.nodes:
                bias = next((b for b in node.input[2:3] if b in self.bias), None)
                if bias is None or node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
                    continue  # another op's int32 input (a BatchNormalization's) keeps its own scale
                x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
                if x_dq is None or w_dq is None or w_dq.output[0] not in self.weights:
                    continue
                b_dq = producer[bias]
                scale = (arrays.get(x_dq.input[1], self.constants[x_dq.input[1]].numpy()).astype(np.float64)
                         * arrays.get(w_dq.input[1], self.constants[w_dq.input[1]].numpy()).astype(np.float64))
                float_bias = self.bias_values[bias].numpy().astype(np.float64)
                scale = np.broadcast_to(scale, float_bias.shape) if scale.size == 1 else scale.reshape(float_bias.shape)
                limits = np.iinfo(np.int32)
                arrays[self.bias[bias]] = np.clip(np.round(float_bias / scale), limits.min, limits.max).astype(np.int32)
                arrays[b_dq.input[1]] = scale.astype(np.float32).reshape(
                    self.constants[b_dq.input[1]].numpy().shape)
        for tensor in model.graph.initializer:
            if tensor.name in arrays:
                tensor.CopyFrom(numpy_helper.from_array(arrays[tensor.name], tensor.name))
        return model


def squared_error(produced: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                  energy: dict[str, float]) -> torch.Tensor:
    """Each float output's squared error over `energy`, its mean energy per sample over the
    training samples, summed: over a set of samples, the inverse of the SNR int8 is judged by."""
    return sum(((produced[n] - t) ** 2).sum() / energy[n] for n, t in target.items() if n in energy)


@dataclass(frozen=True)
class DistillSettings:
    epochs: int
    max_seconds: float
    batch: int = 8
    weight_lr: float = 0.01  # in weight steps per Adam step
    scale_lr: float = 0.002  # of log scale: 0.2% per step
    reduce_range: bool = False  # 7-bit weights (QdqModule)
    seed: int = 0


def distill_int8(int8: Path, feeds: list[dict], targets: list[dict], dst: Path, settings: DistillSettings,
                 progress: Callable[[str], None] = lambda _: None) -> dict:
    """Train `int8` (a QDQ model) to reproduce `targets` (the float model's outputs, one dict per
    feed) on `feeds`; write it to `dst`. A fifth of the feeds is kept back: the weights and scales
    of the epoch with the lowest error on it are kept (epoch 0 is post-training int8 itself), so
    training that over-fits a small sample never ships. The learning rates decay to zero along a
    cosine over the planned steps. Returns what was done: {"epochs", "best_epoch", "steps",
    "seconds", "samples", "error_db": {"before", "after"} on the kept-back fifth, ...}."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    module = QdqModule(onnx.load(str(int8)), settings.reduce_range)
    pairs = [({k: torch.from_numpy(np.asarray(v)) for k, v in feed.items()},
              {k: torch.from_numpy(np.asarray(v)) for k, v in target.items()}) for feed, target in zip(feeds, targets)]
    order = rng.permutation(len(pairs))
    kept_back = max(1, len(pairs) // 5) if len(pairs) > 1 else 0
    check = [pairs[i] for i in order[:kept_back]] or pairs
    train = [pairs[i] for i in order[kept_back:]] or pairs
    energy = {name: max(float(np.mean([(t[name].double() ** 2).sum().item() for _, t in train])), 1e-12)
              for name, value in pairs[0][1].items() if value.is_floating_point()}
    optimizer = torch.optim.Adam([{"params": list(module.values.values()), "lr": settings.weight_lr},
                                  {"params": list(module.scales.values()), "lr": settings.scale_lr}])
    planned = settings.epochs * math.ceil(len(train) / settings.batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / planned)))

    def check_error() -> float:
        with torch.no_grad():
            return float(np.mean([squared_error(module(feed), target, energy).item() for feed, target in check]))

    best_error, best_epoch, best_state = check_error(), 0, copy.deepcopy(module.state_dict())
    if not math.isfinite(best_error):
        raise QuantizeError(f"{int8.name} computes non-finite outputs in its trainable form on the calibration "
                            "samples", "leave out --distill")
    before, start, steps, epoch = best_error, time.monotonic(), 0, 0
    progress(f"  int8 distillation: {len(train)} samples, {len(check)} kept back at {_as_db(before)} dB")
    for epoch in range(1, settings.epochs + 1):
        for first in range(0, len(train), settings.batch):
            optimizer.zero_grad()
            chosen = train[first:first + settings.batch]
            for feed, target in chosen:  # one sample at a time: a graph may hold its batch size in a Reshape
                (squared_error(module(feed), target, energy) / len(chosen)).backward()
            for group in optimizer.param_groups:  # an all-zero channel's tiny scale overflows its gradient
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.nan_to_num_(0.0, 0.0, 0.0)
            optimizer.step()
            schedule.step()
            steps += 1
            if time.monotonic() - start > settings.max_seconds:
                break
        error = check_error()
        if error < best_error:
            best_error, best_epoch, best_state = error, epoch, copy.deepcopy(module.state_dict())
        progress(f"  int8 distillation epoch {epoch}/{settings.epochs}: kept-back error {_as_db(error)} dB "
                 f"(best {_as_db(best_error)} dB, epoch {best_epoch}), {time.monotonic() - start:.0f} s")
        if time.monotonic() - start > settings.max_seconds:
            progress(f"  stopped at quantize.distill_max_seconds ({settings.max_seconds:g} s)")
            break
        train = [train[i] for i in rng.permutation(len(train))]
    module.load_state_dict(best_state)
    onnx.save(module.export(), str(dst))
    return {"epochs": epoch, "best_epoch": best_epoch, "steps": steps, "seconds": round(time.monotonic() - start, 1),
            "samples": len(train), "kept_back": len(check),
            "error_db": {"before": _as_db(before), "after": _as_db(best_error),
                         "on": "the kept-back calibration samples: 10 log10(energy / error), errors summed over outputs"},
            "weights": len(module.weights), "scales": len(module.scales)}


def _as_db(loss: float) -> float | None:
    return None if loss <= 0 else round(-10 * math.log10(loss), 2)
