"""Model families: the built-in ConvNet (teacher and student sizes) and users' factories."""

from __future__ import annotations

import importlib
from collections.abc import Callable
import inspect
import sys
from pathlib import Path

import torch
from torch import nn

from edge_distill.errors import InputFileError, ModelError, describe


class _Layers:
    """The 2-D layers for (C, H, W) images, the 1-D ones for (C, L) signals."""

    def __init__(self, input_shape: tuple[int, ...]):
        two_d = len(input_shape) == 3
        self.conv = nn.Conv2d if two_d else nn.Conv1d
        self.norm = nn.BatchNorm2d if two_d else nn.BatchNorm1d
        self.max_pool = nn.MaxPool2d if two_d else nn.MaxPool1d
        self.global_pool = nn.AdaptiveAvgPool2d if two_d else nn.AdaptiveAvgPool1d
        self.min_size = min(input_shape[1:])  # the smallest spatial side

    def conv_bn_relu(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
        return [self.conv(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                self.norm(c_out), nn.ReLU(inplace=True)]

    def head(self, channels: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(self.global_pool(1), nn.Flatten(), nn.Linear(channels, num_classes))


class ConvNet(nn.Module):
    """VGG-style blocks (conv-bn-relu x2, max-pool) and a global-pool linear head, in 2-D for
    images or 1-D for signals.

    `width` sets the first block's channels; each further block doubles them. One family serves
    both roles: the default teacher is width 64 / depth 3, the default student width 16 / depth 2.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        kind = _Layers(input_shape)
        size = kind.min_size
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for i in range(depth):
            out = width * 2**i
            layers += kind.conv_bn_relu(channels, out, 3) + kind.conv_bn_relu(out, out, 3)
            if size >= 2:  # pool while there is something left to pool
                layers.append(kind.max_pool(2))
                size //= 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = kind.head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) or (B, C, L) -> (B, num_classes)
        return self.head(self.features(x))


class MobileNet(nn.Module):
    """MobileNet-v1 style: a stride-2 stem, then `depth` stages of depthwise-separable blocks
    (3x3 depthwise + 1x1 pointwise), each stage halving the resolution and doubling the channels.
    Cheap in MACs, heavy in memory traffic: the kind of student int8 helps most on small CPUs."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        kind = _Layers(input_shape)
        stem_stride = 2 if kind.min_size >= 16 else 1
        layers = kind.conv_bn_relu(input_shape[0], width, 3, stem_stride)
        size = kind.min_size // stem_stride
        channels = width
        for i in range(depth):
            out = width * 2 ** (i + 1)
            stride = 2 if size >= 2 else 1
            size //= stride
            layers += kind.conv_bn_relu(channels, channels, 3, stride, groups=channels) + kind.conv_bn_relu(channels, out, 1)
            layers += kind.conv_bn_relu(out, out, 3, 1, groups=out) + kind.conv_bn_relu(out, out, 1)
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = kind.head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) or (B, C, L) -> (B, num_classes)
        return self.head(self.features(x))


FAMILIES = {"convnet": ConvNet, "mobilenet": MobileNet}


def build_model(
    factory: str, family: str, input_shape: tuple[int, int, int], num_classes: int, width: int, depth: int, role: str
) -> nn.Module:
    """The user's factory ("package.module:function") if given, else a built-in family sized by
    width and depth. A factory is called with whichever of `num_classes` and `input_shape` it accepts.
    """
    if not factory:
        return FAMILIES[family](input_shape, num_classes, width, depth)
    fn = import_factory(factory, role)
    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in {"num_classes": num_classes, "input_shape": input_shape}.items() if k in accepted}
    try:
        model = fn(**kwargs)
    except Exception as e:
        raise ModelError(f"{role}.factory '{factory}' raised {describe(e)}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"{role}.factory '{factory}' returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def import_factory(spec: str, role: str):
    """Resolve "package.module:function"; the working directory is importable, as for `python -m`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"{role}.factory '{spec}' is not of the form 'package.module:function'")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelError(f"{role}.factory: cannot import module '{module_name}' ({e})", "check the name and PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelError(f"{role}.factory: '{module_name}' has no callable '{attr}'")
    return fn


def factory_source(spec: str) -> Path | None:
    """The source file behind a factory, so a change to the user's code invalidates the cache."""
    if not spec:
        return None
    fn = import_factory(spec, "factory")
    source = inspect.getsourcefile(fn)
    return Path(source) if source else None


def load_checkpoint(model: nn.Module, path: Path, role: str) -> None:
    """Load a state_dict (or {"state_dict": ...}) with weights_only=True: no pickled code runs."""
    if not path.is_file():
        raise InputFileError(f"{role}.checkpoint: {path} not found", "check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputFileError(
            f"{path}: not a loadable PyTorch checkpoint ({type(e).__name__})",
            "save it with torch.save(model.state_dict(), path)",
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputFileError(f"{path}: holds a {type(state).__name__}, expected a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        # torch's message starts "Error(s) in loading state_dict..."; the next line names the keys.
        detail = [line.strip() for line in str(e).splitlines() if line.strip()][1:2] or [str(e)]
        raise ModelError(f"{path}: does not match the {role} model: {detail[0][:300]}", "check the factory and checkpoint pair") from None


def eval_mode(model: nn.Module) -> None:
    # A module unflattened from a torch.export archive refuses .eval(); it was traced in eval mode.
    if not isinstance(model, torch.fx.GraphModule):
        model.eval()


def check_output_size(model: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...], num_classes: int,
                      role: str, batch: int = 1, run_hint: str | None = None) -> None:
    """A model (a module, or any callable on a batch) must map (batch, *input_shape) to
    (batch, num_classes) logits. `run_hint` is the hint when it cannot run at all."""
    if isinstance(model, nn.Module):
        eval_mode(model)
    try:
        with torch.no_grad():
            out = model(torch.zeros(batch, *input_shape))
    except Exception as e:
        raise ModelError(f"{role} cannot run on inputs of shape {(batch, *input_shape)}: {describe(e)}", run_hint) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{role} outputs {shape} but the data has {num_classes} classes (expected ({batch}, {num_classes}))",
            "make the model's last layer produce one logit per class, in the data's label order",
        )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
