"""Training the student from a build's config: one plain function that the distill stage calls in
its own process and every torchrun worker calls in its (rank 0 writes the outputs)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from edge_distill.config import BuildConfig, DistillConfig
from edge_distill.errors import ConfigError

OUTPUTS = ("student.pt", "distill.json")
LOSS = "alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y) [+ the methods' terms]"


def teacher_outputs_mode(cfg: DistillConfig) -> tuple[str, str]:
    """("cached" | "per_step", why), resolving distill.teacher_outputs = "auto"."""
    live_reason = ("augmentation is on: the teacher labels each augmented batch" if cfg.augment else
                   "feature hints need the teacher's layers on each batch" if cfg.hint_layers else "")
    if cfg.teacher_outputs == "cached" and live_reason:
        raise ConfigError(f"distill.teacher_outputs = 'cached' cannot be used: {live_reason}",
                          "set distill.teacher_outputs = 'auto'")
    if cfg.teacher_outputs == "per_step":
        return "per_step", "distill.teacher_outputs = 'per_step'"
    if live_reason:
        return "per_step", live_reason
    return "cached", "inputs are not augmented: teacher outputs computed once by the teacher stage, reused every epoch"


def train_student(config: BuildConfig, dataset_path: Path, teacher_model: Path, teacher_logits: Path, out: Path,
                  progress: Callable[[str], None], writer: bool | None = None) -> None:
    """Train the configured chain (assistants, generations) from the teachers, optionally fine-tune
    it quantization-aware, and write `student.pt` and `distill.json` into `out` if `writer` (default:
    rank 0). Under torchrun every process ends with rank 0's student and report, so each node's
    writer writes the same files."""
    import numpy as np
    import torch

    from edge_distill.data.dataset import Dataset
    from edge_distill.data.loader import set_loader_workers
    from edge_distill.data.samples import is_lazy
    from edge_distill.distill.augment import augmentation_kind
    from edge_distill.distill.chain import Link, train_chain
    from edge_distill.distill.methods import describe_methods
    from edge_distill.distill.teachers import load_teachers, teacher_input
    from edge_distill.distill.distributed import world
    from edge_distill.distill.trainer import accuracy, set_torch_threads
    from edge_distill.models.loading import build_from_config, count_params

    cfg = config.distill
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", world()[1]))  # per node
    threads = set_torch_threads(cfg.threads, processes)
    workers = set_loader_workers(cfg.loader_workers, processes)
    dataset = Dataset.load(dataset_path)
    x_train, y_train = dataset.training_set()
    mode, why = teacher_outputs_mode(cfg)
    progress(f"teacher outputs: {mode} ({why})")
    prepare = teacher_input(config.teacher, dataset.preprocessing, dataset.input_shape)
    teachers = load_teachers(config.teacher, config.seed, dataset.input_shape, dataset.num_classes, teacher_model,
                             prepare=prepare)
    cached = np.load(teacher_logits, mmap_mode="r") if mode == "cached" else None  # (M, N, K), read per batch

    def build(size: dict | None, step: int):
        """The student (size None) or an assistant of the student's family; a fresh seed per link."""
        student = config.student if size is None else dataclasses.replace(config.student, factory="", **size)
        return build_from_config(student, "student", config.seed + step, dataset.input_shape, dataset.num_classes)

    # Each assistant, then the student once per born-again generation.
    sizes = [(f"assistant {i + 1} ({a['width']}x{a['depth']})", a) for i, a in enumerate(cfg.assistants)]
    sizes += [("student" if cfg.generations == 1 else f"student generation {g + 1}", None)
              for g in range(cfg.generations)]
    links = [Link(label, lambda size=size, step=step: build(size, step)) for step, (label, size) in enumerate(sizes)]
    result = train_chain(links, teachers, cached, x_train, y_train, dataset.x["val"], dataset.y["val"],
                         dataset.input_shape, cfg, config.seed, progress)
    student = result.student
    report = {}
    if cfg.qat_epochs:
        from edge_distill.distill.qat import fine_tune_quant_aware

        report["qat"] = fine_tune_quant_aware(result, dataset, x_train, y_train, cfg, config.quantize, config.seed,
                                              progress)
    if world()[1] > 1:  # BatchNorm statistics and the chosen epoch are per process: rank 0's are the student
        _broadcast_weights(student)
    student_cfg = config.student
    report |= {
        "methods": describe_methods(config),
        "loss": LOSS,
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "epochs": cfg.epochs,
        "best_epoch": result.history.best_epoch,
        "teacher_outputs": {"mode": mode, "why": why},
        "augmentation": augmentation_kind(dataset.input_shape) if cfg.augment else "none",
        "samples": {"labeled": len(dataset.y["train"]), "transfer": len(dataset.x["transfer"])},
        "processes": world()[1],
        "torch_threads": threads,
        "loader_workers": workers if is_lazy(x_train) else "none: samples held in memory",
        "chain": result.report,
        "student": student_cfg.factory
        or f"built-in {student_cfg.family}(width={student_cfg.width}, depth={student_cfg.depth})",
        "params": count_params(student),
        "val_accuracy": accuracy(student, dataset.x["val"], dataset.y["val"]),
        "test_accuracy": accuracy(student, dataset.x["test"], dataset.y["test"]),
    }
    if world()[1] > 1:
        report = _broadcast_report(report)
    if not (world()[0] == 0 if writer is None else writer):
        return
    torch.save(student.state_dict(), out / "student.pt")
    (out / "distill.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def _broadcast_weights(student) -> None:
    """Every process takes rank 0's weights and buffers, in place."""
    import torch.distributed as dist

    for tensor in student.state_dict().values():
        dist.broadcast(tensor, src=0)


def _broadcast_report(report: dict) -> dict:
    """Rank 0's report, in every process (its chain history is the one the student came from)."""
    import torch.distributed as dist

    shared = [report]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def train_student_worker(spec: dict, progress: Callable[[str], None], writer: bool) -> None:
    """One torchrun worker of the distill stage (distill/distributed.WORKERS["image-student"])."""
    from edge_distill.config import config_from_dict

    inputs = {k: Path(v) for k, v in spec["inputs"].items()}
    train_student(config_from_dict(spec["config"]), inputs["dataset.npz"], inputs["teacher.model"],
                  inputs["teacher_logits.npy"], Path(spec["out"]), progress, writer=writer)
