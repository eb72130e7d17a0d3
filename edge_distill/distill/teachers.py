"""Teachers of every kind behind one call: logits for a batch.

A teacher is a PyTorch module (built here, or the user's factory + checkpoint), a TorchScript
archive, a `torch.export` archive, or an ONNX model run with onnxruntime (a black box: only its
outputs are used). Several teachers make an ensemble whose softened distributions are averaged.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_distill.config import TeacherConfig, TeacherInputConfig
from edge_distill.distill.losses import combine_teachers
from edge_distill.errors import ConfigError, InputFileError, ModelError, describe
from edge_distill.models.formats import sniff_format
from edge_distill.models.loading import build_from_config, check_output_size, eval_mode, load_checkpoint

# What a torch.export archive may hold for us to load it (paths below its top-level folder): tensors as
# raw bytes described by JSON, the graph as JSON, sample inputs (tensors only). Everything else that
# torch.export.load understands is code or unpickled on load: pickled tensors and objects
# (use_pickle, custom_obj_*, opaque_obj_*), legacy .pt weight files, compiled AOTInductor libraries.
PT2_DATA_ENTRIES = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/[\w.]+|models/\w+\.json|extra/[\w./-]+"
    r"|data/weights/(weight_\d+|\w+_weights_config\.json)|data/constants/(tensor_\d+|\w+_constants_config\.json)"
    r"|data/sample_inputs/\w+\.pt)"
)


@dataclass
class Teacher:
    """One teacher: its logits for a batch, and its module unless it is an ONNX model."""

    name: str  # how errors name it: "teacher" or "teacher.ensemble[0] (b.onnx)"
    format: str  # "state_dict" | "torchscript" | "torch.export" | "onnx"
    predict: Callable[[torch.Tensor], torch.Tensor]  # (B, *input) -> (B, K), no gradient
    module: nn.Module | None = None  # for re-export to ONNX; None for an ONNX teacher
    prepare: nn.Module | None = None  # TeacherInput: the build's samples -> the teacher's own input

    @property
    def hookable(self) -> bool:
        """Only a Python module runs its own submodules, so only its layers can feed feature hints
        (an exported graph's submodules hold weights but are never called)."""
        return self.format == "state_dict"

    def logits(self, x: np.ndarray, advance: Callable[[int], None] = lambda _: None,
               out: np.ndarray | None = None) -> np.ndarray:
        """(N, *input) -> (N, K) float32; `advance(samples)` after each batch (a progress bar)."""
        return predict_batched(self.predict, x, advance=advance, out=out)


def predict_batched(predict: Callable[[torch.Tensor], torch.Tensor], x, advance: Callable[[int], None] = lambda _: None,
                    out: np.ndarray | None = None) -> np.ndarray:
    """`predict` on every sample of `x` (an array or data.samples files), a batch at a time, into
    `out` (e.g. a memory-mapped file) when given."""
    from edge_distill.data.loader import in_order

    outputs, done = [], 0
    with torch.no_grad():
        for batch in in_order(x):
            result = predict(batch).numpy()
            if out is None:
                outputs.append(result)
            else:
                out[done : done + len(result)] = result
            done += len(result)
            advance(len(result))
    return out if out is not None else np.concatenate(outputs)


def _without_grad(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fn(x)

    return call


def from_module(module: nn.Module, name: str = "teacher") -> Teacher:
    """A Python module as a teacher (put in eval mode)."""
    module.eval()
    return Teacher(name, "state_dict", _without_grad(module), module)


def load_teacher_file(path: Path, name: str, input_shape: tuple[int, ...], num_classes: int,
                      build_module: Callable[[], nn.Module] | None = None, prepare: TeacherInput | None = None) -> Teacher:
    """Load any teacher file and check that it maps the data's inputs to `num_classes` logits.
    A plain state_dict needs `build_module` (the configured architecture) to load into; `prepare`
    converts the data's samples to the teacher's own input first (`teacher.input`)."""
    if not path.is_file():
        raise InputFileError(f"{name}: {path} not found", "check the path")
    kind = sniff_format(path)
    if kind == "onnx":
        teacher = _onnx_teacher(path, name, prepare.output_shape if prepare is not None else input_shape, prepare)
    else:
        try:
            if kind == "torchscript":
                module = torch.jit.load(str(path), map_location="cpu")
            elif kind == "torch.export":
                module = load_export_archive(path, name).module()
            else:
                if build_module is None:
                    raise ModelError(f"{name}: {path} holds only weights (a state_dict)",
                                     "save the whole model with torch.jit.save, torch.export.save or as ONNX")
                module = build_module()
                try:
                    load_checkpoint(module, path, name)
                except ModelError:
                    raise ModelError(f"{name}: {path} holds only weights (a state_dict) that do not fit the "
                                     "configured teacher architecture",
                                     "give the architecture too (--teacher pkg.module:factory --teacher-checkpoint "
                                     "FILE), or save the whole model with torch.export.save or as ONNX") from None
        except (ModelError, InputFileError):
            raise
        except Exception as e:
            raise InputFileError(f"{name}: {path} is not a loadable {kind} file ({describe(e)})") from None
        eval_mode(module)
        teacher = Teacher(name, kind, _without_grad(module if prepare is None else WithInput(prepare, module)),
                          module, prepare)
    # An odd batch size: a graph exported with a fixed batch (often 1 or 2) fails here, not mid-training.
    check_output_size(teacher.predict, input_shape, num_classes, name, batch=3,
                      run_hint="if it takes another input than the data's, describe it in [teacher.input] (size, "
                               "channels, mean, std); with a fixed batch, export it with a dynamic batch axis, e.g. "
                               "dynamic_shapes=({0: torch.export.Dim('batch')},)")
    return teacher


def copy_teacher_file(src: Path, dst: Path, name: str) -> None:
    """The user's teacher file as one file: an ONNX model with external data (as
    `torch.onnx.export(dynamo=True)` writes by default: `m.onnx` + `m.onnx.data`) gets its
    weights inlined, so the copy does not depend on files beside the original."""
    if sniff_format(src) != "onnx":
        shutil.copyfile(src, dst)
        return
    import onnx

    try:
        model = onnx.load(str(src))  # reads the external data from beside `src`
        onnx.save(model, str(dst))
    except Exception as e:
        raise InputFileError(f"{name}: {src} (with its external data) cannot be copied as one file ({describe(e)})",
                             "keep the .onnx.data file beside the .onnx; models over 2 GB are not supported") from None


def load_export_archive(path: Path, name: str = "teacher"):
    """`torch.export.load` for archives that hold only data: refuse (naming the entry) anything it
    would unpickle or execute, and keep every torch.load inside it at weights_only=True."""
    with zipfile.ZipFile(path) as archive:
        for entry in archive.namelist():
            inner = entry.split("/", 1)[1] if "/" in entry else entry
            if not PT2_DATA_ENTRIES.fullmatch(inner):
                raise InputFileError(f"{name}: {path} holds '{entry}', which torch.export.load would unpickle or run",
                                     "re-save the model with torch.export.save from plain tensors, or export it to ONNX")
            if inner.endswith("_config.json"):
                _check_payload_config(archive.read(entry), entry, path, name)
    with _only_weights_unpickled():
        try:
            return torch.export.load(str(path))
        except pickle.UnpicklingError:
            raise InputFileError(f"{name}: {path} holds pickled objects other than plain tensors; loading them "
                                 "could run code", "save the model with plain tensors, or export it to ONNX") from None


def _check_payload_config(raw: bytes, entry: str, path: Path, name: str) -> None:
    try:
        payloads = json.loads(raw)["config"]
        pickled = [key for key, meta in payloads.items()
                   if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_"))]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputFileError(f"{name}: {path}: '{entry}' is not a torch.export payload table",
                             "re-save the model with torch.export.save") from None
    if pickled:
        raise InputFileError(f"{name}: {path} stores {', '.join(pickled[:3])} as pickled objects ('{entry}'); "
                             "loading them could run code", "save the model with plain tensors, or export it to ONNX")


@contextmanager
def _only_weights_unpickled():
    """torch.export.load retries a failed weights_only load without it; this makes torch.load refuse."""
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


def _onnx_teacher(path: Path, name: str, input_shape: tuple[int, ...], prepare: nn.Module | None = None) -> Teacher:
    from edge_distill.device.runner import create_session

    try:
        session = create_session(path)
    except Exception as e:
        raise InputFileError(f"{name}: {path} is not a loadable ONNX model ({describe(e)})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"{name}: {path} has {len(inputs)} inputs; a teacher takes one (the sample batch)")
    declared = inputs[0].shape  # e.g. ['batch', 1, 8, 8]; names or None for free axes
    fits = len(declared) == len(input_shape) + 1 and all(
        not isinstance(d, int) or d == e for d, e in zip(declared[1:], input_shape))
    if not fits:
        shown = "(" + ", ".join(str(d) if isinstance(d, int) else "?" for d in declared) + ")"
        given = "teacher.input gives" if prepare is not None else "the data gives"
        raise ModelError(f"{name}: {path} takes input '{inputs[0].name}' of shape {shown}, "
                         f"{given} (batch, {', '.join(map(str, input_shape))})",
                         "describe the teacher's own input ([teacher.input] size, channels, mean, std), or "
                         "resize the data (data.image_size)")
    if isinstance(declared[0], int):
        raise ModelError(f"{name}: {path} has a fixed batch size of {declared[0]}",
                         "export the teacher with a dynamic batch axis")
    if inputs[0].type != "tensor(float)":
        raise ModelError(f"{name}: {path} takes {inputs[0].type}, the data is float32", "export with a float32 input")
    input_name = inputs[0].name

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = prepare(x) if prepare is not None else x
        return torch.from_numpy(session.run(None, {input_name: x.detach().numpy()})[0])

    return Teacher(name, "onnx", predict, prepare=prepare)


class TeacherEnsemble:
    """The teachers' soft targets combined: a weighted mean of their distributions at T."""

    def __init__(self, teachers: Sequence[Teacher], weights: Sequence[float] = ()):
        if weights and len(weights) != len(teachers):
            raise ModelError(f"teacher.ensemble_weights has {len(weights)} weights for {len(teachers)} teachers",
                             "give one weight per teacher, the main teacher first, or none for a plain mean")
        if weights and (min(weights) < 0 or sum(weights) <= 0):
            raise ModelError(f"teacher.ensemble_weights {list(weights)} must be non-negative with a positive sum")
        raw = torch.tensor(weights or [1.0] * len(teachers), dtype=torch.float32)
        self.teachers = list(teachers)
        self.weights = raw / raw.sum()

    @property
    def single(self) -> Teacher | None:
        return self.teachers[0] if len(self.teachers) == 1 else None

    def predict(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """(B, *input) -> (B, K) logits to distill from at `temperature`."""
        if self.single is not None:
            return self.single.predict(x)
        return combine_teachers(torch.stack([t.predict(x) for t in self.teachers]), self.weights, temperature)

    def logits(self, x: np.ndarray, temperature: float) -> np.ndarray:
        """(N, *input) -> (N, K) soft-target logits at `temperature`."""
        return predict_batched(lambda batch: self.predict(batch, temperature), x)


def teacher_input(cfg: TeacherConfig, preprocessing: dict, input_shape: tuple[int, ...]) -> TeacherInput | None:
    """The conversion to the teacher's own input, or None when `teacher.input` is not given."""
    return TeacherInput(preprocessing, cfg.input, input_shape) if cfg.input.given else None


def load_ensemble_members(cfg: TeacherConfig, input_shape: tuple[int, ...], num_classes: int,
                          prepare: TeacherInput | None = None) -> list[Teacher]:
    """The teacher.ensemble files, each checked against the data."""
    return [load_teacher_file(Path(f), f"teacher.ensemble[{i}] ({f})", input_shape, num_classes, prepare=prepare)
            for i, f in enumerate(cfg.ensemble)]


def load_main_teacher(cfg: TeacherConfig, seed: int, input_shape: tuple[int, ...], num_classes: int,
                      teacher_model: Path, name: str = "teacher", prepare: TeacherInput | None = None) -> Teacher:
    """The teacher in `teacher_model`, of any format; a state_dict loads into the configured
    architecture, built for the teacher's own input shape."""
    own_shape = prepare.output_shape if prepare is not None else input_shape
    return load_teacher_file(teacher_model, name, input_shape, num_classes,
                             lambda: build_from_config(cfg, "teacher", seed, own_shape, num_classes), prepare)


def load_teachers(cfg: TeacherConfig, seed: int, input_shape: tuple[int, ...], num_classes: int, teacher_model: Path,
                  name: str = "teacher", members: Sequence[Teacher] | None = None,
                  prepare: TeacherInput | None = None) -> TeacherEnsemble:
    """The main teacher from `teacher_model` (see `load_main_teacher`), plus the ensemble files
    (`members` when already loaded), weighted as configured."""
    main = load_main_teacher(cfg, seed, input_shape, num_classes, teacher_model, name, prepare)
    if members is None:
        members = load_ensemble_members(cfg, input_shape, num_classes, prepare)
    return TeacherEnsemble([main, *members], cfg.ensemble_weights)


def member_accuracies(teachers: TeacherEnsemble, x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> list[dict]:
    """Each teacher's validation and test accuracy (`x`, `y`: split -> samples, labels)."""
    return [{"name": t.name, "format": t.format,
             **{f"{split}_accuracy": float((t.logits(x[split]).argmax(1) == y[split]).mean()) for split in ("val", "test")}}
            for t in teachers.teachers]


def accuracy_floor(cfg: TeacherConfig, num_classes: int) -> float:
    """The validation accuracy a teacher must reach: `teacher.min_accuracy`, or chance plus 15% of
    the way from chance to perfect (a teacher near chance has nothing to teach)."""
    chance = 1.0 / num_classes
    return cfg.min_accuracy or chance + 0.15 * (1.0 - chance)


def check_teacher_accuracy(cfg: TeacherConfig, members: list[dict], num_classes: int) -> None:
    """Stop before distillation when a teacher (`member_accuracies`) scores below the floor."""
    if not cfg.check_accuracy:
        return
    floor = accuracy_floor(cfg, num_classes)
    for member in members:
        if member["val_accuracy"] < floor:
            raise ModelError(
                f"{member['name']} reaches {member['val_accuracy']:.4f} validation accuracy on this data, below the "
                f"floor {floor:.3f} (chance is {1 / num_classes:.3f}): it has nothing to teach",
                "check what it receives: this build's normalization (dataset.json preprocessing), the label order, "
                "the input size; or set teacher.min_accuracy / teacher.check_accuracy = false")


class TeacherInput(nn.Module):
    """This build's preprocessed samples -> what a pretrained teacher was trained on (`teacher.input`):
    back to raw pixels with the data's statistics, channels converted, the teacher's own scale, mean
    and std, then a bilinear resize. All of it is ONNX-exportable, so the exported teacher takes the
    build's inputs like every other variant."""

    def __init__(self, data: dict, cfg: TeacherInputConfig, sample_shape: tuple[int, ...]):
        super().__init__()
        channels = 3 if cfg.channels == "gray_to_rgb" else sample_shape[0]
        if cfg.channels == "gray_to_rgb" and sample_shape[0] != 1:
            raise ConfigError(f"teacher.input.channels = 'gray_to_rgb' needs one-channel data, it has {sample_shape[0]}")
        for key in ("mean", "std"):
            given = getattr(cfg, key)
            if given and len(given) != channels:
                raise ConfigError(f"teacher.input.{key} has {len(given)} value(s), the teacher takes {channels} channel(s)")
        if cfg.size and len(sample_shape) != 3:
            raise ConfigError("teacher.input.size resizes images; this data is 1-D signals")
        per_channel = (1, -1) + (1,) * (len(sample_shape) - 1)

        def stats(values, fallback):
            chosen = values or ([fallback[0]] * channels if len(fallback) == 1 and channels == 3 else fallback)
            return torch.tensor(chosen, dtype=torch.float32).reshape(per_channel)

        self.register_buffer("data_mean", torch.tensor(data["mean"], dtype=torch.float32).reshape(per_channel))
        self.register_buffer("data_std", torch.tensor(data["std"], dtype=torch.float32).reshape(per_channel))
        self.data_scale = float(data["pixel_scale"])
        self.teacher_scale = cfg.pixel_scale or self.data_scale
        self.register_buffer("teacher_mean", stats(cfg.mean, data["mean"]))
        self.register_buffer("teacher_std", stats(cfg.std, data["std"]))
        self.channels, self.size = cfg.channels, tuple(cfg.size)
        self.output_shape = (channels, *(self.size or sample_shape[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C_t, H_t, W_t)
        pixels = (x * self.data_std + self.data_mean) / self.data_scale
        if self.channels == "reversed":
            pixels = pixels.flip(1)
        elif self.channels == "gray_to_rgb":
            pixels = pixels.repeat(1, 3, *([1] * (pixels.ndim - 2)))
        x = (pixels * self.teacher_scale - self.teacher_mean) / self.teacher_std
        if self.size:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


class WithInput(nn.Module):
    """A teacher module behind its TeacherInput: what the export stage writes for the benchmark."""

    def __init__(self, prepare: TeacherInput, teacher: nn.Module):
        super().__init__()
        self.prepare, self.teacher = prepare, teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(self.prepare(x))

