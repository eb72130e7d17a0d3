"""Train text models: one loop, three objectives.

- Embedding distillation: 1 - cosine plus the mean squared error to the teacher's sentence
  embeddings of unlabeled text, computed once (the teacher never runs during training).
- Logit distillation: Hinton's soft targets at a temperature, from the teacher's cached logits of
  labeled and unlabeled text, plus cross-entropy on the labeled part (distill/losses.kd_loss, as
  the image path trains).
- Fine-tuning: cross-entropy on labeled text, to make a classification teacher from an encoder.

Batches hold texts of similar length (less padding), in a seeded order; the learning rate decays
linearly to zero.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_distill.progress import progress_bar
from edge_distill.text.teacher import Pooling, batch_ids, pool


@dataclass(frozen=True)
class TextTrainingSettings:
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    mse_weight: float = 1.0  # embeddings: beside 1 - cosine; MSE also matches the embedding's length
    temperature: float = 2.0  # logits: the soft targets' temperature
    alpha: float = 0.5  # logits: the soft term's share; cross-entropy on the labeled texts has the rest
    seed: int = 0
    threads: int = 2


def embedding_loss(student, teacher, mse_weight: float = 1.0):
    """1 - cosine + mse_weight * squared error, each averaged over the batch: (B, H), (B, H) torch."""
    import torch

    cosine = torch.nn.functional.cosine_similarity(student, teacher, dim=-1)
    return (1 - cosine).mean() + mse_weight * ((student - teacher) ** 2).sum(dim=-1).mean()


def train_text_model(model, tokenizer, texts: list[str], loss_of: Callable, settings: TextTrainingSettings,
                     progress: Callable[[str], None] = lambda _: None) -> dict:
    """Train `model` (torch) in place; `loss_of(model, ids, mask, rows)` is a batch's loss, `rows`
    the batch's indices into `texts` (ids and mask on the training device, rows on the CPU). On a GPU where there is
    one (bf16 autocast where it has it); under torchrun each process takes its share of every batch
    and DistributedDataParallel averages the gradients. Returns the loss per epoch and the time spent."""
    import torch

    from edge_distill.distill.distributed import autocast, training_device, training_precision, world

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    rank, size = world()
    device = training_device()
    model.to(device)
    # find_unused_parameters: an encoder's pooler is not part of the embedding loss.
    net = model if size == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    rng = np.random.default_rng(settings.seed)
    by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [by_length[i : i + settings.batch_size] for i in range(0, len(texts), settings.batch_size)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    steps = settings.epochs * len(batches)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(steps, 1))
    model.train()
    losses, started = [], time.perf_counter()
    for epoch in range(settings.epochs):
        total, seen = 0.0, 0
        # A bar on a terminal; else a line every 50 batches, so a slow epoch is never silent.
        with progress_bar(progress, len(batches), f"epoch {epoch + 1}/{settings.epochs}") as bar:
            for number, batch in enumerate(rng.permutation(len(batches))):
                if len(batches[batch]) < size:  # too small to give every process a text: skipped by all
                    bar.update(1)
                    continue
                rows = batches[batch][rank::size]
                ids, mask = (torch.from_numpy(a).to(device) for a in batch_ids(tokenizer, [texts[i] for i in rows]))
                with autocast(device):
                    loss = loss_of(net, ids, mask, torch.as_tensor(rows))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total, seen = total + loss.item() * len(rows), seen + len(rows)
                bar.update(1, loss=f"{loss.item():.4f}")
                if number % 50 == 0 and not bar.active:
                    progress(f"epoch {epoch + 1}/{settings.epochs}, batch {number + 1}/{len(batches)}: "
                             f"loss {loss.item():.4f}")
        losses.append(total / max(seen, 1))
        progress(f"epoch {epoch + 1}/{settings.epochs}: mean loss {losses[-1]:.4f}")
    model.eval().to("cpu")
    return {"loss_per_epoch": losses, "seconds": time.perf_counter() - started, "steps": steps,
            "texts": len(texts), "processes": size, "device": device.type, "precision": training_precision(device),
            **dataclasses.asdict(settings)}


def distill_embeddings(student, tokenizer, pooling: Pooling, texts: list[str], targets: np.ndarray,
                       settings: TextTrainingSettings, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Train an encoder to reproduce the teacher's sentence embeddings `targets` (N, H) of `texts`."""
    import torch

    targets = torch.from_numpy(targets)

    def loss_of(model, ids, mask, rows):
        embedded = pool(model(input_ids=ids, attention_mask=mask).last_hidden_state.float(), mask, pooling)
        return embedding_loss(embedded, targets[rows].to(ids.device), settings.mse_weight)

    return train_text_model(student, tokenizer, texts, loss_of, settings, progress)


def distill_logits(student, tokenizer, texts: list[str], teacher_logits: np.ndarray, labels: np.ndarray,
                   settings: TextTrainingSettings, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Train a classifier on the teacher's logits (N, K) of `texts` and their `labels` (N,), -1
    where a text has none."""
    import torch

    from edge_distill.distill.losses import kd_loss

    teacher_logits, labels = torch.from_numpy(teacher_logits), torch.from_numpy(labels)

    def loss_of(model, ids, mask, rows):
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        return kd_loss(logits, teacher_logits[rows].to(ids.device), labels[rows].to(ids.device), settings.temperature,
                       settings.alpha)

    return train_text_model(student, tokenizer, texts, loss_of, settings, progress)


def fine_tune(model, tokenizer, texts: list[str], labels: np.ndarray, settings: TextTrainingSettings,
              progress: Callable[[str], None] = lambda _: None) -> dict:
    """Train a classifier (encoder and head) on labeled texts, cross-entropy alone."""
    import torch

    from edge_distill.distill.losses import hard_loss

    labels = torch.from_numpy(labels)

    def loss_of(model, ids, mask, rows):
        return hard_loss(model(input_ids=ids, attention_mask=mask).logits.float(), labels[rows].to(ids.device))

    return train_text_model(model, tokenizer, texts, loss_of, settings, progress)
