"""One training loop for the teacher (labels only) and every student (distillation objectives).

The loop runs the same in one process or under `torchrun`: when torch.distributed is
initialized, each rank takes its share of every global batch and DistributedDataParallel
averages the gradients, so the schedule and the number of steps match the one-process run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from edge_distill.data.loader import read_batches
from edge_distill.device.runner import usable_cores
from edge_distill.distill.augment import Augment
from edge_distill.distill.distributed import world
from edge_distill.distill.losses import attention_loss, hard_loss, hint_loss, kd_loss
from edge_distill.distill.teachers import TeacherEnsemble, predict_batched
from edge_distill.errors import ConfigError, did_you_mean
from edge_distill.progress import progress_bar


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    lr: float
    seed: int


@dataclass
class FitHistory:
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    samples_per_epoch: int = 0
    best_epoch: int = 0

    @property
    def best_val_accuracy(self) -> float:
        return self.val_accuracy[self.best_epoch - 1]

    @property
    def samples_per_second(self) -> float:
        """Training throughput (all processes together), median over epochs."""
        return self.samples_per_epoch / float(np.median(self.epoch_seconds))


class Objective(nn.Module):
    """Cross-entropy on the labels. Subclasses add what the student learns from the teacher."""

    def loss(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return hard_loss(student(x), y)

    def close(self) -> None:
        """Remove forward hooks, so the trained student exports as a plain module."""


class Distillation(Objective):
    """KD on soft targets, plus optional feature hints, attention transfer and deep-head
    self-distillation.

    Soft targets come from `cached` logits (one row per training sample, computed once) or from
    the teachers called on each batch, which augmented inputs and feature hints need.
    """

    def __init__(
        self,
        student: nn.Module,
        teachers: TeacherEnsemble,
        input_shape: tuple[int, ...],
        temperature: float,
        alpha: float,
        cached: np.ndarray | None = None,  # (N, K)
        hint_layers: dict[str, str] | None = None,  # student layer -> teacher layer
        hint_weight: float = 1.0,
        attention_weight: float = 0.0,
        self_heads: Sequence[str] = (),  # student layers given an auxiliary head taught by the final one
        self_head_weight: float = 1.0,
    ):
        super().__init__()
        self.teachers, self.temperature, self.alpha = teachers, temperature, alpha
        self.cached = cached  # may be memory-mapped: rows are read per batch
        self.hint_layers = dict(hint_layers or {})
        self.hint_weight, self.attention_weight = hint_weight, attention_weight
        self.self_head_weight = self_head_weight
        self._student_features: dict[str, torch.Tensor] = {}
        self._teacher_features: dict[str, torch.Tensor] = {}
        self._hooks = []
        main = teachers.teachers[0]
        if self.hint_layers:
            if not main.hookable:
                raise ConfigError(f"distill.hint_layers needs a teacher built from Python code; {main.name} is a "
                                  f"{main.format} file, which gives only its outputs",
                                  "use teacher.factory + teacher.checkpoint, or drop distill.hint_layers")
            if self.cached is not None:
                raise ValueError("feature hints need the teacher on every batch, not cached logits")
            self._hook(main.module, self.hint_layers.values(), "teacher", self._teacher_features)
        self._hook(student, [*self.hint_layers, *self_heads], "student", self._student_features)
        # One dry run gives every hooked layer's shape, to size the adapters and heads.
        sample = torch.zeros(2, *input_shape)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            final = student(sample)
            if self.hint_layers:
                main.predict(sample)  # through the teacher's own input conversion, if any
        student.train(was_training)
        conv = nn.Conv2d if len(input_shape) == 3 else nn.Conv1d
        self.adapters = nn.ModuleDict()
        for s_name, t_name in self.hint_layers.items() if hint_weight else ():
            s_ch, t_ch = self._student_features[s_name].shape[1], self._teacher_features[t_name].shape[1]
            # FitNets' regressor where widths differ; the identity where they already match. (Only
            # with a hint term: an adapter without gradients would stall DistributedDataParallel.)
            self.adapters[_key(s_name)] = conv(s_ch, t_ch, 1) if s_ch != t_ch else nn.Identity()
        pool = nn.AdaptiveAvgPool2d if len(input_shape) == 3 else nn.AdaptiveAvgPool1d
        self.self_heads = list(self_heads)
        self.heads = nn.ModuleDict({
            _key(name): nn.Sequential(pool(1), nn.Flatten(), nn.Linear(self._student_features[name].shape[1],
                                                                        final.shape[1]))
            for name in self_heads
        })

    def _hook(self, module: nn.Module, names, role: str, into: dict[str, torch.Tensor]) -> None:
        layers = dict(module.named_modules())
        for name in names:
            if name not in layers:
                valid = [n for n in layers if n]
                shown = ", ".join(valid[:40]) + (", ..." if len(valid) > 40 else "")
                key = "distill.self_heads" if role == "student" and name not in self.hint_layers else "distill.hint_layers"
                raise ConfigError(f"{key}: the {role} has no layer '{name}'; valid layers: {shown}",
                                  did_you_mean(name, valid))

            def keep(_module, _inputs, output, name=name):
                # A copy: an in-place op after this layer (ReLU(inplace=True) after BatchNorm) would
                # otherwise change the kept values. clone() is differentiable, so gradients still flow.
                into[name] = output.clone()

            self._hooks.append(layers[name].register_forward_hook(keep))

    def close(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def loss(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        logits = student(x)  # (B, K)
        if self.cached is not None:
            soft = torch.from_numpy(np.ascontiguousarray(self.cached[index.numpy()]))
        else:
            soft = self.teachers.predict(x, self.temperature)
        loss = kd_loss(logits, soft, y, self.temperature, self.alpha)
        for s_name, t_name in self.hint_layers.items():
            s_feat, t_feat = self._student_features[s_name], self._teacher_features[t_name]
            if self.hint_weight:
                loss = loss + self.hint_weight * hint_loss(self.adapters[_key(s_name)](s_feat), t_feat)
            if self.attention_weight:
                loss = loss + self.attention_weight * attention_loss(s_feat, t_feat)
        for name in self.self_heads:
            aux = self.heads[_key(name)](self._student_features[name])
            loss = loss + self.self_head_weight * kd_loss(aux, logits.detach(), y, self.temperature, self.alpha)
        return loss


def _key(layer: str) -> str:
    return layer.replace(".", "/")  # ModuleDict keys may not contain dots


class _Trainee(nn.Module):
    """The student and the objective's own parameters (adapters, heads) as one module, so one
    optimizer and one DistributedDataParallel wrapper cover both."""

    def __init__(self, student: nn.Module, objective: Objective):
        super().__init__()
        self.student, self.objective = student, objective

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.objective.loss(self.student, x, y, index)


class Optimization:
    """What every training loop here shares (the teacher's, the students', the sequence models'):
    AdamW under a one-cycle schedule over `total_steps`, optional gradient clipping, and the best
    weights seen at the evaluations, restored at the end. The loops differ only in how they draw
    batches: epochs over a fixed set (`fit`), random text windows (`sequence.train_char_model`)."""

    def __init__(self, parameters, lr: float, total_steps: int, weight_decay: float, clip_norm: float | None = None):
        self.parameters = list(parameters)
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=lr, total_steps=total_steps)
        self.clip_norm = clip_norm
        self.best_score: float | None = None
        self.best_state: dict | None = None

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_norm is not None:
            nn.utils.clip_grad_norm_(self.parameters, self.clip_norm)
        self.optimizer.step()
        self.schedule.step()

    def keep_if_best(self, model: nn.Module, score: float, ties_win: bool) -> bool:
        """Keep `model`'s weights when `score` (higher is better) beats the best so far."""
        better = self.best_score is None or score > self.best_score or (ties_win and score == self.best_score)
        if better:
            self.best_score, self.best_state = score, copy.deepcopy(model.state_dict())
        return better

    def restore_best(self, model: nn.Module) -> None:
        model.load_state_dict(self.best_state)
        model.eval()


def set_torch_threads(requested: int, processes: int = 1) -> int:
    """Set torch's intra-op threads: `requested`, or (0) this machine's usable cores divided among
    `processes`. Returns the number set, for the report."""
    threads = requested or max(1, usable_cores() // processes)
    torch.set_num_threads(threads)
    return threads


def fit(
    model: nn.Module,
    x_train,  # (N, *input): an array or data.samples files
    y_train: np.ndarray,  # (N,), -1 for unlabeled transfer samples
    x_val,
    y_val: np.ndarray,
    settings: FitSettings,
    objective: Objective | None = None,
    augment: Augment | None = None,
    progress: Callable[[str], None] = lambda _: None,
    label: str = "train",
) -> FitHistory:
    """Train in place with AdamW and a one-cycle schedule; keep the weights of the best val epoch."""
    torch.manual_seed(settings.seed)
    rank, size = world()
    shuffle = torch.Generator().manual_seed(settings.seed)
    objective = objective if objective is not None else Objective()
    trainee = _Trainee(model, objective)
    net: nn.Module = trainee
    if size > 1:
        # BatchNorm running statistics stay per process (rank 0's are saved) instead of being
        # broadcast before every forward: one collective less per step, about 15% more samples/s here.
        net = nn.parallel.DistributedDataParallel(trainee, broadcast_buffers=False)
    y = torch.from_numpy(y_train)
    steps_per_epoch = -(-len(y) // settings.batch_size)
    optimization = Optimization(trainee.parameters(), settings.lr, settings.epochs * steps_per_epoch, weight_decay=1e-4)
    history = FitHistory(samples_per_epoch=len(y))
    say = progress if rank == 0 else (lambda _: None)  # one voice under torchrun
    with progress_bar(say, settings.epochs * steps_per_epoch, label) as bar:
        for epoch in range(1, settings.epochs + 1):
            model.train()
            total = torch.zeros(())
            start = time.perf_counter()
            global_batches = torch.randperm(len(y), generator=shuffle).split(settings.batch_size)
            # This process's share of each global batch; a last batch too small to give every
            # process a sample is dropped.
            shares = [batch[rank::size].numpy() for batch in global_batches if len(batch) >= size]
            bar.update(len(global_batches) - len(shares))
            for x_b, index in read_batches(x_train, shares):
                bar.update(1)
                y_b = y[index]
                if augment is not None:
                    x_b, y_b = augment(x_b, y_b)
                loss = net(x_b, y_b, index)
                optimization.step(loss)
                total += loss.detach() * len(index)
            if size > 1:
                dist.all_reduce(total)
            history.epoch_seconds.append(time.perf_counter() - start)
            val_acc = accuracy(model, x_val, y_val)
            history.train_loss.append(float(total) / len(y))
            history.val_accuracy.append(val_acc)
            if optimization.keep_if_best(model, val_acc, ties_win=True):  # a later epoch wins a tie
                history.best_epoch = epoch
            line = f"{label} epoch {epoch}/{settings.epochs}  loss {history.train_loss[-1]:.4f}  val acc {val_acc:.4f}"
            bar.update(0, loss=f"{history.train_loss[-1]:.4f}", val_acc=f"{val_acc:.4f}")
            if not bar.active or epoch == settings.epochs:  # with a bar, only the last epoch's line stays
                say(line + (f" (best epoch {history.best_epoch})" if bar.active else ""))
    objective.close()
    optimization.restore_best(model)
    return history


def accuracy(model: nn.Module, x, y: np.ndarray) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    return float((predict_batched(model, x).argmax(1) == y).mean())
