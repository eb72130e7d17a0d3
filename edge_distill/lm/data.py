"""The text a language-model student learns from, as token windows, and the teacher's targets on it.

Passages (the user's --text or the embedded default corpus, split by a hash of each passage,
text/corpus.py) are tokenized with the teacher's tokenizer and joined with its end-of-sequence
token into one stream per split, cut into windows of `context + 1` tokens: the first `context`
are read, each predicts the next.

Token-level KD needs the teacher's next-token distribution at every training position; the whole
49k-way distribution per token does not fit, so its top-k log-probabilities are written to disk
(memory-mapped, a batch at a time) and the student reads them back the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_distill.errors import DataError
from edge_distill.files import allocated_memmap
from edge_distill.progress import Progress, progress_bar


def token_stream(tokenizer, passages: list[str], eos_id: int) -> np.ndarray:
    """The passages' tokens, each passage followed by the end-of-sequence token (int32)."""
    from edge_distill.bundle.reader import tokenizer_errors

    with tokenizer_errors("tokenizing the text"):
        encoded = tokenizer.encode_batch(passages, add_special_tokens=False)
    parts = [np.asarray([*e.ids, eos_id], dtype=np.int32) for e in encoded]
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def windows(stream: np.ndarray, context: int, limit: int | None = None, bos: int | None = None) -> np.ndarray:
    """(N, context + 1) non-overlapping windows of the stream, at most `limit` of them, spread evenly
    over it when there are more (so a capped run still sees every part of the text). With `bos`, each
    window is that token then `context` tokens of the stream: a model whose tokenizer starts every
    text with it (Gemma) reads nothing well without it (Gemma 3 270M: held-out perplexity 5,450
    on the default text without, against its usual tens with)."""
    span = context if bos is not None else context + 1
    count = (len(stream) - (span - context)) // context
    starts = np.arange(max(count, 0)) * context
    if limit is not None and count > limit:
        starts = starts[np.linspace(0, count - 1, limit).round().astype(int)]
    if not len(starts):
        return np.zeros((0, context + 1), np.int32)
    head = [np.asarray([bos], np.int32)] if bos is not None else []
    return np.stack([np.concatenate([*head, stream[s:s + span]]) for s in starts])


def leading_token(tokenizer) -> int | None:
    """The token the tokenizer puts before every text (BOS), if it puts one."""
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    marked = tokenizer.encode("a", add_special_tokens=True).ids
    return marked[0] if len(marked) > len(plain) and marked[1:] == plain else None


def split_windows(tokenizer, train: list[str], held_out: list[str], eos_id: int, context: int, train_limit: int,
                  held_out_limit: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(training windows, held-out windows); a text too small for either is one DataError."""
    bos = leading_token(tokenizer)
    train_w = windows(token_stream(tokenizer, train, eos_id), context, train_limit, bos)
    held_w = windows(token_stream(tokenizer, held_out, eos_id), context, held_out_limit, bos)
    for name, found, share in (("training", train_w, "80%"), ("held-out", held_w, "10%")):
        if len(found) < 2:
            raise DataError(f"{where}: too little text for {name} windows of {context} tokens "
                            f"({len(found)}; the {name} split is about {share} of the passages, by a hash of each)",
                            "give more text (--text), or a smaller --context")
    return train_w, held_w


def write_teacher_targets(model, train: np.ndarray, top_k: int, batch_size: int, ids_path: Path,
                          logprobs_path: Path, progress: Progress) -> None:
    """The teacher's top-k next-token log-probabilities at every position of the training windows:
    ids (N, context, k) int32 and log-probabilities (N, context, k) float16, written a batch at a time
    into memory-mapped .npy files."""
    import torch

    from edge_distill.distill.distributed import autocast

    device = model.device  # a GPU's where the teacher is on one (lm/build.score_with_teacher)
    n, context = train.shape[0], train.shape[1] - 1
    ids = allocated_memmap(ids_path, np.int32, (n, context, top_k))
    logprobs = allocated_memmap(logprobs_path, np.float16, (n, context, top_k))
    with progress_bar(progress, n * context, "teacher targets (tokens)") as bar, torch.no_grad():
        for start in range(0, n, batch_size):
            batch = torch.from_numpy(train[start:start + batch_size, :-1].astype(np.int64)).to(device)
            with autocast(device):
                logits = model(batch).logits
            values, indices = logits.float().log_softmax(-1).topk(top_k, dim=-1)
            ids[start:start + len(batch)] = indices.cpu().numpy()
            logprobs[start:start + len(batch)] = values.cpu().numpy()
            bar.update(batch.numel())
            if not bar.active:
                progress(f"teacher targets: {min(start + batch_size, n)}/{n} windows")
    ids.flush()
    logprobs.flush()
    del ids, logprobs


def write_teacher_continuations(model, train: np.ndarray, prompt_tokens: int, top_k: int, batch_size: int,
                                seed: int, paths: tuple[Path, Path, Path], progress: Progress) -> None:
    """Sequence-level KD's text: each training window's first `prompt_tokens` continued by the
    teacher's own samples to the window's length, and its top-k targets along it, written as
    `paths` (windows int32, top-k ids int32, top-k log-probabilities float16) in the layout of the
    text's (write_teacher_targets), a batch at a time."""
    import torch

    from edge_distill.lm.student import sample_continuation

    n, width = train.shape
    files = [allocated_memmap(path, dtype, shape) for path, dtype, shape in zip(
        paths, (np.int32, np.int32, np.float16), ((n, width), (n, width - 1, top_k), (n, width - 1, top_k)))]
    from edge_distill.distill.distributed import autocast

    device = model.device
    generator = torch.Generator(device).manual_seed(seed)
    with progress_bar(progress, n * (width - prompt_tokens), "teacher continuations (tokens)") as bar:
        for start in range(0, n, batch_size):
            prompt = torch.from_numpy(train[start:start + batch_size, :prompt_tokens].astype(np.int64)).to(device)
            with autocast(device):
                tokens, (logprobs, ids) = sample_continuation(model, prompt, width - prompt_tokens, generator,
                                                              top_k=top_k)
            for file, values in zip(files, (tokens, ids, logprobs)):
                file[start:start + len(prompt)] = values.cpu().numpy()
            bar.update(len(prompt) * (width - prompt_tokens))
            if not bar.active:
                progress(f"teacher continuations: {min(start + batch_size, n)}/{n} windows")
    for file in files:
        file.flush()


def teacher_held_out(model, held_out: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
    """(the teacher's perplexity on the held-out windows, its top-1 next token at each position), in
    fp32 on any device: the yardstick every candidate's perplexity is a multiple of."""
    import torch

    nll, top1 = [], []
    with torch.no_grad():
        for start in range(0, len(held_out), batch_size):
            batch = torch.from_numpy(held_out[start:start + batch_size].astype(np.int64)).to(model.device)
            logprobs = model(batch[:, :-1]).logits.float().log_softmax(-1)
            nll.append(-logprobs.gather(-1, batch[:, 1:, None])[..., 0].cpu().numpy())
            top1.append(logprobs.argmax(-1).cpu().numpy().astype(np.int32))
    return float(np.exp(np.concatenate(nll).mean())), np.concatenate(top1)
