"""Building, loading and checking models: a factory's or a family's module, a state_dict checkpoint
(weights_only), the output-size check every teacher and student passes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from edge_distill.config import StudentConfig, TeacherConfig
from edge_distill.errors import InputFileError, ModelError, describe
from edge_distill.models.factory import import_factory
from edge_distill.models.families import FAMILIES
from edge_distill.models.formats import sniff_format


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


def build_from_config(cfg: TeacherConfig | StudentConfig, role: str, seed: int, input_shape: tuple[int, ...],
                      num_classes: int) -> nn.Module:
    """The configured model (factory, or family x width x depth), seeded, checked against the data."""
    torch.manual_seed(seed)  # the initial weights depend on the seed alone
    model = build_model(cfg.factory, cfg.family, input_shape, num_classes, cfg.width, cfg.depth, role)
    check_output_size(model, input_shape, num_classes, role)
    return model


def load_checkpoint(model: nn.Module, path: Path, role: str) -> None:
    """Load a state_dict (or {"state_dict": ...}) with weights_only=True: no pickled code runs."""
    if not path.is_file():
        raise InputFileError(f"{role}.checkpoint: {path} not found", "check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        kind = sniff_format(path)
        hint = (f"it is a whole {kind} model: pass it with --teacher-file (teacher.file) instead"
                if kind in ("torchscript", "torch.export") else "save it with torch.save(model.state_dict(), path)")
        raise InputFileError(f"{path}: not a loadable PyTorch checkpoint ({type(e).__name__})", hint) from None
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
