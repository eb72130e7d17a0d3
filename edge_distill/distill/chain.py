"""Training a student through a chain: teacher -> assistants -> student (progressive distillation)
-> more generations of the student (born-again). A chain of one link is plain distillation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edge_distill.config import DistillConfig
from edge_distill.distill.augment import Augment, augmentation_kind
from edge_distill.distill.losses import combine_teachers
from edge_distill.distill.teachers import TeacherEnsemble, from_module
from edge_distill.distill.distributed import world
from edge_distill.distill.trainer import Distillation, FitHistory, FitSettings, fit
from edge_distill.models.loading import count_params


@dataclass(frozen=True)
class Link:
    label: str  # "assistant 1 (32x2)", "student", "student generation 2"
    build: Callable[[], nn.Module]  # a freshly, reproducibly initialized model


@dataclass
class ChainResult:
    student: nn.Module  # the last link, trained
    teachers: TeacherEnsemble  # what taught it
    history: FitHistory  # its training
    report: list[dict]  # one entry per link
    soft_targets: np.ndarray | None  # (N, K) what it learned from, when teacher outputs were cached


def combined_soft_targets(per_teacher: np.ndarray, teachers: TeacherEnsemble, temperature: float) -> np.ndarray:
    """(M, N, K) per-teacher logits -> (N, K) logits to distill from at `temperature`."""
    if len(per_teacher) == 1:
        return per_teacher[0]
    return combine_teachers(torch.from_numpy(np.array(per_teacher)), teachers.weights, temperature).numpy()


def train_chain(
    links: list[Link],
    teachers: TeacherEnsemble,
    cached: np.ndarray | None,  # (M, N, K) the teachers' logits on x_train, or None: teachers run per batch
    x_train,  # an array or data.samples files
    y_train: np.ndarray,  # -1 for transfer samples
    x_val,
    y_val: np.ndarray,
    input_shape: tuple[int, ...],
    cfg: DistillConfig,
    seed: int,
    progress: Callable[[str], None],
) -> ChainResult:
    """Train each link from the one before it (the first from `teachers`), with the configured
    objective; feature hints apply where the teacher is the configured one, auxiliary heads to
    the last link only."""
    rank = world()[0]
    kind = augmentation_kind(input_shape)
    report: list[dict] = []
    student = history = soft = None
    for step, link in enumerate(links):
        if step > 0:  # the model trained last teaches the next one
            teachers = TeacherEnsemble([from_module(student, links[step - 1].label)])
            cached = teachers.logits(x_train, cfg.temperature)[None] if cached is not None else None
        student = link.build()
        soft = None if cached is None else combined_soft_targets(cached, teachers, cfg.temperature)
        objective = Distillation(
            student, teachers, input_shape, cfg.temperature, cfg.alpha, cached=soft,
            hint_layers=cfg.hint_layers if step == 0 else None, hint_weight=cfg.hint_weight,
            attention_weight=cfg.attention_weight, self_heads=cfg.self_heads if step == len(links) - 1 else (),
            self_head_weight=cfg.self_head_weight)
        augment = Augment(kind, seed + 1000 * step + 7919 * rank) if cfg.augment else None
        progress(f"training {link.label}")
        history = fit(student, x_train, y_train, x_val, y_val, FitSettings(cfg.epochs, cfg.batch_size, cfg.lr, seed + step),
                      objective, augment, progress, link.label)
        report.append({"model": link.label, "params": count_params(student), "best_epoch": history.best_epoch,
                       "val_accuracy": history.best_val_accuracy, "train_loss": history.train_loss,
                       "epoch_seconds_median": float(np.median(history.epoch_seconds)),
                       "samples_per_second": history.samples_per_second})
    return ChainResult(student, teachers, history, report, soft)
