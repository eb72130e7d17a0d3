"""The teacher stage: the teacher ready to distill from, and every teacher's logits on the training
and transfer samples, computed once so that builds changing only how the student learns reuse them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edge_distill.errors import ConfigError
from edge_distill.pipeline.stages.base import ConfiguredStage, factory_files, teacher_files, write_json


class TeacherStage(ConfiguredStage):
    """Trained here, loaded from factory + checkpoint, or the user's TorchScript / torch.export /
    ONNX file as it is."""

    name = "teacher"
    trains = True
    description = "Load the user's teacher or train the built-in one."
    version = 2
    inputs = ("dataset.npz",)
    # teacher.model: a state_dict, TorchScript, torch.export or ONNX file (read by its contents).
    outputs = ("teacher.model", "teacher.json", "teacher_logits.npy")

    def params(self):
        return {"teacher": dataclasses.asdict(self.config.teacher), "seed": self.config.seed}

    def check(self):
        cfg = self.config.teacher
        if cfg.input.given and not (cfg.file or cfg.checkpoint):
            raise ConfigError("teacher.input describes a pretrained teacher's own preprocessing, but the teacher "
                              "is trained here, on this build's data", "drop [teacher.input], or give teacher.file "
                              "or teacher.checkpoint")
        if cfg.file and (cfg.checkpoint or cfg.factory):
            given = " and ".join(f"teacher.{k}" for k in ("factory", "checkpoint") if getattr(cfg, k))
            raise ConfigError(f"teacher.file and {given} both name a teacher", "give either a whole-model file "
                              "(teacher.file) or a factory and its checkpoint")

    def external_files(self):
        return factory_files(("teacher", self.config.teacher.factory)) | teacher_files(self.config)

    def run(self, inputs, out, progress):
        import numpy as np
        import torch

        from edge_distill.data.dataset import Dataset
        from edge_distill.data.loader import set_loader_workers
        from edge_distill.distill.teachers import (check_teacher_accuracy, copy_teacher_file, load_ensemble_members,
                                                   load_teachers, member_accuracies, teacher_input)
        from edge_distill.distill.trainer import FitSettings, fit, set_torch_threads
        from edge_distill.models.loading import build_from_config, count_params, load_checkpoint
        from edge_distill.progress import progress_bar

        cfg, seed = self.config.teacher, self.config.seed
        report: dict[str, Any] = {"torch_threads": set_torch_threads(self.config.distill.threads),
                                  "loader_workers": set_loader_workers(self.config.distill.loader_workers)}
        dataset = Dataset.load(inputs["dataset.npz"])
        shape, classes = dataset.input_shape, dataset.num_classes
        prepare = teacher_input(cfg, dataset.preprocessing, shape)
        if prepare is not None:
            report["input"] = dataclasses.asdict(cfg.input) | {"shape": list(prepare.output_shape)}
        members = load_ensemble_members(cfg, shape, classes, prepare)  # a bad ensemble file costs no training
        if cfg.file:
            progress(f"loading the teacher from {cfg.file}")
            teachers = load_teachers(cfg, seed, shape, classes, Path(cfg.file), "teacher.file", members, prepare)
            copy_teacher_file(Path(cfg.file), out / "teacher.model", "teacher.file")
            report |= {"source": cfg.file, "format": teachers.teachers[0].format, "trained_here": False}
        else:
            model = build_from_config(cfg, "teacher", seed, prepare.output_shape if prepare else shape, classes)
            report["source"] = cfg.factory or f"built-in {cfg.family}(width={cfg.width}, depth={cfg.depth})"
            if cfg.checkpoint:
                progress(f"loading teacher weights from {cfg.checkpoint}")
                load_checkpoint(model, Path(cfg.checkpoint), "teacher")
                report["trained_here"] = False
            else:
                history = fit(model, dataset.x["train"], dataset.y["train"], dataset.x["val"], dataset.y["val"],
                              FitSettings(cfg.epochs, cfg.batch_size, cfg.lr, seed), progress=progress, label="teacher")
                report |= {"trained_here": True, "epochs": cfg.epochs, "best_epoch": history.best_epoch}
            torch.save(model.state_dict(), out / "teacher.model")
            report |= {"format": "state_dict", "params": count_params(model)}
            teachers = load_teachers(cfg, seed, shape, classes, out / "teacher.model", members=members, prepare=prepare)
        report["members"] = member_accuracies(teachers, dataset.x, dataset.y)
        check_teacher_accuracy(cfg, report["members"], classes)  # before the long part: outputs, distillation
        progress(f"computing the outputs of {len(teachers.teachers)} teacher(s) on "
                 f"{len(dataset.x['train'])} labeled + {len(dataset.x['transfer'])} transfer samples")
        x_train, _ = dataset.training_set()
        # Written to disk a batch at a time; the distill stage memory-maps it.
        from edge_distill.files import allocated_memmap

        logits = allocated_memmap(out / "teacher_logits.npy", np.float32,
                                  (len(teachers.teachers), len(x_train), classes))  # (M, N, K)
        with progress_bar(progress, len(teachers.teachers) * len(x_train), "teacher outputs") as bar:
            for member, teacher in enumerate(teachers.teachers):
                teacher.logits(x_train, advance=bar.update, out=logits[member])
        logits.flush()
        del logits
        report |= {key: report["members"][0][key] for key in ("val_accuracy", "test_accuracy")}
        write_json(out / "teacher.json", report)
