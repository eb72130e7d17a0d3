"""Train a text student to reproduce the teacher's sentence embeddings: 1 - cosine plus the mean
squared error, on the teacher's embeddings of unlabeled text computed once (the teacher never runs
during training). Batches hold texts of similar length (less padding), in a seeded order.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_distill.text.teacher import Pooling, batch_ids, pool


@dataclass(frozen=True)
class TextDistillSettings:
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    mse_weight: float = 1.0  # beside 1 - cosine; MSE also matches the embedding's length
    seed: int = 0
    threads: int = 2


def embedding_loss(student, teacher):
    """1 - cosine + mean squared error, each averaged over the batch: (B, H), (B, H) torch."""
    import torch

    cosine = torch.nn.functional.cosine_similarity(student, teacher, dim=-1)
    return (1 - cosine).mean() + ((student - teacher) ** 2).sum(dim=-1).mean()


def distill_embeddings(student, tokenizer, pooling: Pooling, texts: list[str], targets: np.ndarray,
                       settings: TextDistillSettings, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Train `student` (a torch encoder) in place on (texts, teacher embeddings); returns the
    loss per epoch and the time spent."""
    import torch

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    rng = np.random.default_rng(settings.seed)
    by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [by_length[i : i + settings.batch_size] for i in range(0, len(texts), settings.batch_size)]
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.learning_rate)
    steps = settings.epochs * len(batches)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(steps, 1))
    student.train()
    losses, started = [], time.perf_counter()
    for epoch in range(settings.epochs):
        total = 0.0
        for number, batch in enumerate(rng.permutation(len(batches))):
            rows = batches[batch]
            ids, mask = (torch.from_numpy(a) for a in batch_ids(tokenizer, [texts[i] for i in rows]))
            embedded = pool(student(input_ids=ids, attention_mask=mask).last_hidden_state, mask, pooling)
            loss = embedding_loss(embedded, torch.from_numpy(targets[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(rows)
            if number % 50 == 0:
                progress(f"epoch {epoch + 1}/{settings.epochs}, batch {number + 1}/{len(batches)}: loss {loss.item():.4f}")
        losses.append(total / len(texts))
        progress(f"epoch {epoch + 1}/{settings.epochs}: mean loss {losses[-1]:.4f}")
    student.eval()
    return {"loss_per_epoch": losses, "seconds": time.perf_counter() - started, "steps": steps,
            "texts": len(texts), **dataclasses.asdict(settings)}
