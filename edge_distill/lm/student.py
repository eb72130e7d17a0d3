"""The language-model student: the teacher's architecture, smaller, and its distillation.

Smaller three ways (each a setting):
- fewer layers, taken from the teacher: its first ones and its last (measured on SmolLM2, 4 of 30
  layers, the same training: held-out perplexity 181 against 190 for layers spread evenly);
- a vocabulary cut to the tokens the training text uses: SmolLM2's embedding matrix alone is 28M
  of its 135M parameters. The tokens left out share one "other" row; the exported decoder gives
  each of them the other row's probability split evenly (lm/export.py), so the student still
  scores every token of the teacher's vocabulary and perplexities compare;
- optionally new random weights instead of the teacher's (the "without the teacher" baseline).

Distillation (`kd`):
- "token": the teacher's top-k next-token distribution at every position (lm/data.py), a
  cross-entropy against it (forward KL up to a constant) mixed with the true next token's
  cross-entropy by `alpha`;
- "none": the true next token only (the same student trained without the teacher).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.errors import ConfigError
from edge_distill.progress import Progress, progress_bar

KD_MODES = ("token", "none")
INITS = ("teacher", "random")


@dataclass(frozen=True)
class LMTrainingSettings:
    layers: int = 6  # of SmolLM2's 30: the student at about 1/5.5 of its parameters (README, "Language models")
    vocab: int = 8192  # at most this many of the teacher's tokens, the most frequent in the text; 0: all
    min_token_count: int = 2  # a token kept must occur this often in the training windows
    init: str = "teacher"  # or "random": the same architecture, new weights
    kd: str = "token"  # or "none"
    alpha: float = 0.5  # weight of the teacher's distribution; 1 - alpha on the true next token
    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 2e-3  # SmolLM2, 4 layers: held-out perplexity 181 at 3e-4, 119 at 1e-3, 101 at 2e-3 and 4e-3
    warmup_share: float = 0.05
    seed: int = 0
    threads: int = 2

    def __post_init__(self):
        for key, allowed in (("kd", KD_MODES), ("init", INITS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"--{key} {getattr(self, key)!r}: unknown", f"choose one of {', '.join(allowed)}")
        if self.layers < 1:
            raise ConfigError(f"--layers {self.layers}: at least 1", "give the student's layer count, e.g. --layers 4")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha {self.alpha}: expected a weight from 0 to 1", "e.g. --alpha 0.5")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError("--epochs, --batch-size and --learning-rate must be positive")


def kept_vocabulary(train: np.ndarray, vocab_size: int, keep: int, min_count: int, always: tuple[int, ...]) -> np.ndarray:
    """The teacher token ids the student keeps, ascending: those the training windows use at least
    `min_count` times, the most frequent `keep` of them (0: no cap), and `always` (end of sequence)."""
    counts = np.bincount(train.ravel(), minlength=vocab_size)
    used = np.flatnonzero(counts >= min_count)
    if keep and len(used) > keep:
        used = used[np.argsort(-counts[used], kind="stable")[:keep]]
    return np.union1d(used, np.asarray(always, dtype=np.int64)).astype(np.int64)


def student_map(kept: np.ndarray, vocab_size: int) -> np.ndarray:
    """Teacher id -> the student's row: its place in `kept`, or len(kept) (the shared "other" row)."""
    to_student = np.full(vocab_size, len(kept), dtype=np.int64)
    to_student[kept] = np.arange(len(kept))
    return to_student


def layer_choice(teacher_layers: int, layers: int) -> list[int]:
    """Which teacher layers the student starts from: the first `layers - 1` and the last. Each kept
    layer then reads what it read in the teacher, but at the one seam before the last."""
    if layers > teacher_layers:
        raise ConfigError(f"--layers {layers}: the teacher has {teacher_layers}", f"use --layers {teacher_layers} or less")
    return [*range(layers - 1), teacher_layers - 1] if layers > 1 else [0]


def make_student(teacher, kept: np.ndarray, settings: LMTrainingSettings):
    """The student model (same class as the teacher's), its rows for `kept` plus one "other" row,
    its layers copied from the teacher's (or random, init "random")."""
    import torch

    torch.manual_seed(settings.seed)
    config = teacher.config.to_dict()
    config.pop("quantization_config", None)  # a GGUF teacher's: the student is plain fp32
    config.update(num_hidden_layers=settings.layers, vocab_size=len(kept) + 1)
    student = type(teacher)(type(teacher.config).from_dict(config))
    if settings.init == "random":
        return student.train()
    layers = layer_choice(teacher.config.num_hidden_layers, settings.layers)
    source, target = teacher.model, student.model
    with torch.no_grad():
        rows = torch.from_numpy(kept)
        pairs = [(teacher.get_input_embeddings(), student.get_input_embeddings())]
        if not student.config.tie_word_embeddings:  # tied: the output embedding is the input one
            pairs.append((teacher.get_output_embeddings(), student.get_output_embeddings()))
        for src, dst in pairs:
            unkept = torch.ones(src.weight.shape[0], dtype=torch.bool)
            unkept[rows] = False
            dst.weight.copy_(torch.cat([src.weight[rows], src.weight[unkept].mean(0, keepdim=True)]))
        for k, index in enumerate(layers):
            target.layers[k].load_state_dict(source.layers[index].state_dict())
        target.norm.load_state_dict(source.norm.state_dict())
    return student.train()


def train_student(student, train: np.ndarray, targets: tuple[np.ndarray, np.ndarray] | None, to_student: np.ndarray,
                  settings: LMTrainingSettings, progress: Progress) -> dict[str, Any]:
    """Train in place on the windows (N, context + 1) of teacher ids; `targets` the teacher's top-k
    (ids, log-probabilities) per position, memory-mapped, for kd "token". Returns the report."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    mapping = torch.from_numpy(to_student)
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(train) / settings.batch_size)
    total = per_epoch * settings.epochs
    warmup = max(1, int(settings.warmup_share * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / total))))
    order = np.random.default_rng(settings.seed)
    losses, started = [], time.perf_counter()
    with progress_bar(progress, total, "student (batches)") as bar:
        for epoch in range(settings.epochs):
            shuffled = order.permutation(len(train))
            for step, start in enumerate(range(0, len(train), settings.batch_size)):
                batch = np.sort(shuffled[start:start + settings.batch_size])  # ascending: memory-mapped reads
                window = mapping[torch.from_numpy(train[batch].astype(np.int64))]
                logits = student(input_ids=window[:, :-1]).logits
                logq = logits.float().log_softmax(-1)
                loss = F.nll_loss(logq.flatten(0, 1), window[:, 1:].flatten())
                if settings.kd == "token" and settings.alpha > 0:
                    ids = mapping[torch.from_numpy(targets[0][batch].astype(np.int64))]
                    p = torch.from_numpy(targets[1][batch].astype(np.float32)).exp()
                    kd = -(p * logq.gather(-1, ids)).sum(-1) / p.sum(-1)
                    loss = settings.alpha * kd.mean() + (1 - settings.alpha) * loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                bar.update(1, loss=f"{np.mean(losses[-20:]):.3f}")
                if not bar.active and step % 50 == 0:
                    progress(f"student: epoch {epoch + 1}/{settings.epochs}, batch {step}/{per_epoch}, "
                             f"loss {np.mean(losses[-20:]):.3f}")
    student.eval()
    return {"steps": total, "final_loss": float(np.mean(losses[-20:])), "seconds": round(time.perf_counter() - started, 1),
            "tokens_per_epoch": int(train[:, 1:].size)}


def save_student(student, kept: np.ndarray, folder: Path) -> None:
    """The student as a transformers folder (config.json, model.safetensors) and its kept ids."""
    student.save_pretrained(str(folder), safe_serialization=True)
    (folder / "generation_config.json").unlink(missing_ok=True)  # the bundle states its own (generation.json)
    np.save(folder / "vocab.npy", kept)


def load_student(folder: Path):
    """(the student saved by save_student, its kept teacher ids)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                                 dtype=torch.float32).eval()
    return model, np.load(folder / "vocab.npy")


def parameter_count(model) -> int:
    """Distinct parameters (a tied embedding counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
