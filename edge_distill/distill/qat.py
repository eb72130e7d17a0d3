"""Quantization-aware distillation: fine-tune the student while it sees int8 rounding.

Every convolution and Linear is wrapped so that, in training and evaluation alike, its input goes
through an 8-bit fake quantizer (asymmetric, range tracked by an EMA of min/max: what MinMax
calibration measures) and its weight through a symmetric int8 one, per output channel or per
tensor as the profile's recipe. After fine-tuning the wrappers are removed and the float weights
go through the usual export and static quantization. Per-channel symmetric weight quantization is
unchanged by the per-channel scale that folding BatchNorm into the conv applies, so the int8 grid
the student trained on is the grid it is deployed on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edge_distill.config import DistillConfig, QuantizeConfig


class ActivationFakeQuant(nn.Module):
    """Asymmetric 8-bit fake quantization with an EMA min/max range (frozen in eval mode)."""

    def __init__(self, signed: bool, momentum: float = 0.05):
        super().__init__()
        self.qmin, self.qmax = (-128, 127) if signed else (0, 255)
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            low, high = x.detach().min(), x.detach().max()
            if not self.initialized:
                self.low.copy_(low)
                self.high.copy_(high)
                self.initialized.fill_(True)
            else:
                self.low.lerp_(low, self.momentum)
                self.high.lerp_(high, self.momentum)
        # The range must contain 0 so that zero (padding, ReLU output) is exact, as in ORT.
        low, high = torch.clamp(self.low, max=0.0), torch.clamp(self.high, min=0.0)
        scale = torch.clamp((high - low) / (self.qmax - self.qmin), min=1e-8)
        zero_point = int(torch.clamp(torch.round(self.qmin - low / scale), self.qmin, self.qmax))
        return torch.fake_quantize_per_tensor_affine(x, float(scale), zero_point, self.qmin, self.qmax)


def fake_quantize_weight(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Symmetric int8 (-127..127, zero point 0), as ORT quantizes QInt8 weights."""
    if per_channel:
        scale = weight.detach().abs().flatten(1).amax(dim=1).clamp(min=1e-8) / 127.0  # (C_out,)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)
    scale = float(weight.detach().abs().max().clamp(min=1e-8) / 127.0)
    return torch.fake_quantize_per_tensor_affine(weight, scale, 0, -127, 127)


class QuantAware(nn.Module):
    """A Conv1d, Conv2d or Linear whose input and weight are fake-quantized."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d | nn.Linear, per_channel: bool, signed_activations: bool):
        super().__init__()
        self.layer = layer
        self.per_channel = per_channel
        self.input_quant = ActivationFakeQuant(signed_activations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        weight = fake_quantize_weight(self.layer.weight, self.per_channel)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)


def prepare_qat(model: nn.Module, per_channel: bool, signed_activations: bool) -> nn.Module:
    """Wrap every Conv1d, Conv2d and Linear in place; returns the model."""
    for name, child in model.named_children():
        if isinstance(child, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            setattr(model, name, QuantAware(child, per_channel, signed_activations))
        else:
            prepare_qat(child, per_channel, signed_activations)
    return model


def strip_qat(model: nn.Module) -> nn.Module:
    """Undo `prepare_qat`: the plain layers with their fine-tuned float weights."""
    for name, child in model.named_children():
        if isinstance(child, QuantAware):
            setattr(model, name, child.layer)
        else:
            strip_qat(child)
    return model


def fine_tune_quant_aware(chain, dataset, x_train, y_train, cfg: DistillConfig, quantize: QuantizeConfig, seed: int,
                          progress: Callable[[str], None]) -> dict:
    """Fake-quant KD fine-tuning of a trained chain's student (`distill.chain.ChainResult`), from the
    teachers that taught it, in the profile's int8 scheme. Returns the report."""
    from edge_distill.distill.trainer import Distillation, FitSettings, fit

    student, teachers, kd_history = chain.student, chain.teachers, chain.history
    soft = chain.soft_targets if chain.soft_targets is not None else teachers.logits(x_train, cfg.temperature)
    prepare_qat(student, quantize.per_channel, signed_activations=quantize.activation_type == "QInt8")
    objective = Distillation(student, teachers, dataset.input_shape, cfg.temperature, cfg.alpha, cached=soft)
    settings = FitSettings(cfg.qat_epochs, cfg.batch_size, cfg.qat_lr, seed)
    history = fit(student, x_train, y_train, dataset.x["val"], dataset.y["val"], settings, objective,
                  progress=progress, label="qat")
    strip_qat(student)
    return {
        "epochs": cfg.qat_epochs,
        "lr": cfg.qat_lr,
        "scheme": {"per_channel": quantize.per_channel, "activation_type": quantize.activation_type,
                   "weights": "symmetric int8"},
        "val_accuracy_before": kd_history.best_val_accuracy,
        "val_accuracy_fake_quant": history.best_val_accuracy,
    }
