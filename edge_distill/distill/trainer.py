"""One training loop for both the teacher (labels only) and the student (KD on teacher logits)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_distill.distill.losses import kd_loss


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    temperature: float = 4.0
    alpha: float = 0.0  # 0: plain cross-entropy; the teacher is trained this way


@dataclass
class FitHistory:
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def best_val_accuracy(self) -> float:
        return self.val_accuracy[self.best_epoch - 1]


def fit(
    model: nn.Module,
    x_train: np.ndarray,  # (N, C, H, W)
    y_train: np.ndarray,  # (N,)
    x_val: np.ndarray,
    y_val: np.ndarray,
    settings: FitSettings,
    teacher_logits: np.ndarray | None = None,  # (N, K): KD when given
    progress: Callable[[str], None] = lambda _: None,
    label: str = "train",
) -> FitHistory:
    """Train in place with AdamW and a cosine schedule; keep the weights of the best val epoch.

    Teacher logits are computed once by the caller: inputs are not augmented, so the teacher's
    outputs are the same every epoch and recomputing them would only cost time.
    """
    torch.manual_seed(settings.seed)
    shuffle = torch.Generator().manual_seed(settings.seed)
    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train)
    soft = torch.from_numpy(teacher_logits) if teacher_logits is not None else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(x) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=settings.epochs * steps_per_epoch
    )
    history = FitHistory()
    best_state = None
    for epoch in range(1, settings.epochs + 1):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=shuffle).split(settings.batch_size):
            logits = model(x[idx])
            if soft is None:
                loss = F.cross_entropy(logits, y[idx])
            else:
                loss = kd_loss(logits, soft[idx], y[idx], settings.temperature, settings.alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        val_acc = accuracy(model, x_val, y_val)
        history.train_loss.append(total / len(x))
        history.val_accuracy.append(val_acc)
        if best_state is None or val_acc >= history.best_val_accuracy:
            history.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        progress(f"{label} epoch {epoch}/{settings.epochs}  loss {total / len(x):.4f}  val acc {val_acc:.4f}")
    model.load_state_dict(best_state)
    model.eval()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(N, C, H, W) -> (N, K) float32 logits, in eval mode."""
    model.eval()
    parts = [model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict_logits(model, x).argmax(1) == y).mean())
