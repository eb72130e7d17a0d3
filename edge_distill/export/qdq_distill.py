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
from onnx import numpy_helper
from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

from edge_distill.errors import QuantizeError
from edge_distill.export.torch_ops import OPS, node_attribute

INT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def round_through(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


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
            axis = node_attribute(node, "axis", 1) if init[node.input[1]].ndim == 1 and init[node.input[1]].size > 1 else None
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
                axis = node_attribute(node, "axis", 1) if zero.dim() == 1 and zero.numel() > 1 else None
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
