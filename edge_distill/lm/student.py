"""The language-model student: the teacher's architecture, smaller, and its distillation.

Smaller three ways (each a setting):
- fewer layers, taken from the teacher: its first ones and its last (measured on SmolLM2, 4 of 30
  layers, the same training: held-out perplexity 181 against 190 for layers spread evenly), or
  those with the largest block influence on the text (`layer_choice` "influence": 250 against 271
  for the first five and the last, 6 layers, on a small outside corpus; benchmarks/llm_small_corpus.py);
- a vocabulary cut to the tokens the training text uses: SmolLM2's embedding matrix alone is 28M
  of its 135M parameters. The tokens left out share one "other" row; the exported decoder gives
  each of them the other row's probability split evenly (lm/export.py), so the student still
  scores every token of the teacher's vocabulary and perplexities compare;
- optionally new random weights instead of the teacher's (the "without the teacher" baseline).

Distillation (`kd`):
- "token": the teacher's top-k next-token distribution at every position (lm/data.py), a
  cross-entropy against it (forward KL up to a constant) mixed with the true next token's
  cross-entropy by `alpha`;
- "sequence": sequence-level KD (Kim & Rush 2016; TinyStories): the same loss, on the teacher's
  own continuations of each window's opening instead of the text (lm/data.write_teacher_continuations);
- "token+sequence": the same loss on both, the text's windows and the teacher's continuations of
  them (twice the windows an epoch: the teacher's text added to the user's);
- "on-policy": GKD (Agarwal et al. 2024, trl's GKDTrainer): on a share `on_policy_share` of the
  batches the student samples its own continuation of the window's opening and the teacher scores
  it; the loss is the generalized JSD between the two distributions at each sampled position
  (`divergence`: forward KL, reverse KL as in MiniLLM, or the JSD between them); the other
  batches learn as "token" does;
- "none": the true next token only (the same student trained without the teacher).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.errors import ConfigError
from edge_distill.progress import Progress, progress_bar

KD_MODES = ("token", "sequence", "token+sequence", "on-policy", "none")
CONTINUING = ("sequence", "token+sequence")  # the kd modes that train on the teacher's continuations
INITS = ("teacher", "random")
LAYER_CHOICES = ("first-last", "influence")
INFLUENCE_WINDOWS = 16  # training windows the teacher reads to measure its layers' block influence
VALIDATION_SHARE = 0.05  # early stopping: training windows kept back to judge each epoch (at least 8)
DIVERGENCES = {"forward": 0.0, "jsd": 0.5, "reverse": 1.0}  # the generalized JSD's beta (trl's convention)


@dataclass(frozen=True)
class LMTrainingSettings:
    layers: int = 6  # of SmolLM2's 30: the student at about 1/5.2 of its parameters (README, "Language models")
    vocab: int = 8192  # at most this many of the teacher's tokens, the most frequent in the text; 0: all
    min_token_count: int = 2  # a token kept must occur this often in the training windows
    init: str = "teacher"  # or "random": the same architecture, new weights
    # Which teacher layers: "first-last" (the first layers - 1 and the last) or "influence" (the
    # `layers` with the largest block influence on the text, ShortGPT's measure: 1 - cos(in, out)).
    layer_choice: str = "first-last"
    # Early stopping: 0 trains every epoch; N > 0 judges the student after each epoch on training
    # windows kept back (VALIDATION_SHARE), keeps the best epoch's weights, and stops after N without gain.
    patience: int = 0
    kd: str = "token"  # or "sequence", "token+sequence", "on-policy", "none"
    alpha: float = 0.5  # weight of the teacher's distribution; 1 - alpha on the true next token
    prompt_tokens: int = 32  # kd "sequence"/"on-policy": the text's opening a continuation starts from
    divergence: str = "jsd"  # kd "on-policy": "forward", "reverse" or "jsd" (beta 0.5)
    on_policy_share: float = 0.5  # kd "on-policy": the share of batches the student samples (GKD's lambda)
    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 2e-3  # SmolLM2, 4 layers: held-out perplexity 181 at 3e-4, 119 at 1e-3, 101 at 2e-3 and 4e-3
    warmup_share: float = 0.05
    seed: int = 0
    threads: int = 2

    def key(self) -> dict[str, Any]:
        """The settings that shape the student (its stage's cache key): the on-policy ones only for
        kd "on-policy", the opening's length only where a continuation starts from it."""
        unused = () if self.kd == "on-policy" else ("divergence", "on_policy_share") + (
            () if self.kd in CONTINUING else ("prompt_tokens",))
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}

    def __post_init__(self):
        for key, allowed in (("kd", KD_MODES), ("init", INITS), ("divergence", tuple(DIVERGENCES)),
                             ("layer_choice", LAYER_CHOICES)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"--{key.replace('_', '-')} {getattr(self, key)!r}: unknown",
                                  f"choose one of {', '.join(allowed)}")
        if self.layers < 1:
            raise ConfigError(f"--layers {self.layers}: at least 1", "give the student's layer count, e.g. --layers 4")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha {self.alpha}: expected a weight from 0 to 1", "e.g. --alpha 0.5")
        if not 0.0 <= self.on_policy_share <= 1.0:
            raise ConfigError(f"--on-policy-share {self.on_policy_share}: expected a share from 0 to 1", "e.g. 0.5")
        if self.prompt_tokens < 1:
            raise ConfigError(f"--prompt-tokens {self.prompt_tokens}: at least 1", "e.g. --prompt-tokens 32")
        if self.patience < 0:
            raise ConfigError(f"--patience {self.patience}: 0 (off) or more epochs", "e.g. --patience 1")
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


def other_share(kept: np.ndarray, vocab_size: int) -> float:
    """The log of how many teacher ids share the "other" row: what each of them loses from that
    row's log-probability, the row's probability being split evenly among them."""
    left_out = vocab_size - len(kept)
    return math.log(left_out) if left_out else 0.0


def layer_choice(teacher_layers: int, layers: int, influence: np.ndarray | None = None) -> list[int]:
    """Which teacher layers the student starts from, ascending: the first `layers - 1` and the last
    (each kept layer then reads what it read in the teacher, but at the one seam before the last);
    or, given each layer's block `influence`, the `layers` most influential."""
    if layers > teacher_layers:
        raise ConfigError(f"--layers {layers}: the teacher has {teacher_layers}", f"use --layers {teacher_layers} or less")
    if influence is not None:
        return sorted(int(i) for i in np.argsort(-influence, kind="stable")[:layers])
    return [*range(layers - 1), teacher_layers - 1] if layers > 1 else [0]


def block_influence(teacher, windows: np.ndarray) -> np.ndarray:
    """Each teacher layer's block influence on `windows` (ShortGPT, Men et al. 2024): 1 - the mean
    cosine similarity between the hidden state a layer reads and the one it writes, over every
    position. A layer that barely turns its input matters little."""
    import torch

    cosines: list[list[float]] = [[] for _ in teacher.model.layers]

    def hook(index):
        def measure(module, args, kwargs, output):
            read = args[0] if args else kwargs["hidden_states"]  # (B, T, H)
            written = output[0] if isinstance(output, tuple) else output
            cosines[index].append(torch.nn.functional.cosine_similarity(read.float(), written.float(), -1).mean().item())
        return measure

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(teacher.model.layers)]
    try:
        with torch.no_grad():
            teacher(input_ids=torch.from_numpy(np.asarray(windows, dtype=np.int64)))
    finally:
        for handle in handles:
            handle.remove()
    return 1.0 - np.asarray([np.mean(per_batch) for per_batch in cosines])


def make_student(teacher, kept: np.ndarray, settings: LMTrainingSettings, layers: list[int] | None = None):
    """The student model (same class as the teacher's), its rows for `kept` plus one "other" row,
    its layers copied from the teacher's `layers` (default: layer_choice's first and last), or
    random (init "random")."""
    import torch

    torch.manual_seed(settings.seed)
    if layers is None:  # before a model of that size is made
        layers = layer_choice(teacher.config.num_hidden_layers, settings.layers)
    config = teacher.config.to_dict()
    config.pop("quantization_config", None)  # a GGUF teacher's: the student is plain fp32
    config.update(num_hidden_layers=settings.layers, vocab_size=len(kept) + 1)
    if isinstance(config.get("layer_types"), list):  # Qwen's, Gemma 2's and 3's: sliding or full, per layer
        config["layer_types"] = [config["layer_types"][i] for i in layers]
    student = type(teacher)(type(teacher.config).from_dict(config))
    if settings.init == "random":
        return student.train()
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


def sample_continuation(model, prompt, length: int, generator, banned: int | None = None, top_k: int = 0):
    """`prompt` (B, P) continued by `length` tokens sampled from `model` (temperature 1, through its
    KV cache), never the id `banned`. Returns ((B, P + length) ids, and with `top_k` the model's top-k
    (log-probabilities, ids), each (B, P + length - 1, k): its next-token distribution at every
    position but the last, the prompt's included)."""
    import torch

    top = []

    def forward(ids, cache=None):
        """(the next token's log-probabilities, the cache); the top-k at each position kept."""
        # positional: transformers 5 renamed past_key_values (4th argument, and in the output) to cache
        out = model(ids, None, None, cache, use_cache=True)
        logprobs = out.logits.float().log_softmax(-1)
        if top_k:
            top.append(logprobs.topk(top_k, dim=-1))
        return logprobs[:, -1], out["cache"] if "cache" in out else out["past_key_values"]

    with torch.no_grad():
        logprobs, cache = forward(prompt)
        tokens = prompt
        for step in range(length):
            if banned is not None:
                logprobs = logprobs.index_fill(-1, torch.tensor([banned], device=logprobs.device), float("-inf"))
            chosen = torch.multinomial(logprobs.exp(), 1, generator=generator)
            tokens = torch.cat([tokens, chosen], 1)
            if step < length - 1:
                logprobs, cache = forward(chosen, cache)
    if not top_k:
        return tokens, None
    return tokens, (torch.cat([values for values, _ in top], 1), torch.cat([ids for _, ids in top], 1))


def generalized_jsd(student_logq, teacher_logp, beta: float):
    """Mean over positions of the generalized JSD (GKD, Agarwal et al. 2024, trl's convention):
    beta 0 the forward KL(teacher || student), 1 the reverse KL(student || teacher), between them
    beta KL(teacher || m) + (1 - beta) KL(student || m), m = beta teacher + (1 - beta) student."""
    import torch

    def kl(log_a, log_b):
        return (log_a.exp() * (log_a - log_b)).sum(-1)

    if beta == 0.0:
        return kl(teacher_logp, student_logq).mean()
    if beta == 1.0:
        return kl(student_logq, teacher_logp).mean()
    beta_ = torch.tensor(beta)
    mixture = torch.logsumexp(torch.stack([teacher_logp + beta_.log(), student_logq + torch.log1p(-beta_)]), 0)
    return (beta * kl(teacher_logp, mixture) + (1 - beta) * kl(student_logq, mixture)).mean()


def teacher_in_student_space(teacher_logp, kept, unkept):
    """The teacher's log-probabilities over its whole vocabulary as the student's: the kept tokens,
    then the "other" row holding every token left out (floored at e^-30, so that a vocabulary with
    none left out gives a finite divergence)."""
    import torch

    other = teacher_logp[..., unkept].logsumexp(-1, keepdim=True) if len(unkept) else \
        teacher_logp.new_full((*teacher_logp.shape[:-1], 1), -30.0)
    return torch.cat([teacher_logp[..., kept], other], -1).clamp_min(-30.0)


def held_back_windows(windows: int, settings: LMTrainingSettings) -> int:
    """How many of the last training windows early stopping keeps back to judge each epoch (0 without)."""
    return min(windows // 2, max(8, int(VALIDATION_SHARE * windows))) if settings.patience else 0


def student_perplexity(student, windows: np.ndarray, kept: np.ndarray, vocab_size: int, batch_size: int = 8) -> float:
    """The student's perplexity on `windows` of teacher ids over the teacher's whole vocabulary, as
    its exported decoder scores them: a token left out gets the "other" row's probability split evenly."""
    import torch

    mapping = torch.from_numpy(student_map(kept, vocab_size))
    device = next(student.parameters()).device
    share = other_share(kept, vocab_size)
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            ids = mapping[torch.from_numpy(np.asarray(windows[start:start + batch_size], dtype=np.int64))].to(device)
            logq = student(input_ids=ids[:, :-1]).logits.float().log_softmax(-1)
            picked = -logq.gather(-1, ids[:, 1:, None])[..., 0] + (ids[:, 1:] == len(kept)) * share
            nll, count = nll + picked.sum().item(), count + picked.numel()
    return math.exp(nll / count)


def train_student(student, train: np.ndarray, targets: tuple[np.ndarray, np.ndarray] | None, kept: np.ndarray,
                  vocab_size: int, settings: LMTrainingSettings, progress: Progress, teacher=None) -> dict[str, Any]:
    """Train in place on the windows (N, context + 1) of teacher ids; `targets` the teacher's top-k
    (ids, log-probabilities) per position, memory-mapped (every kd but "none"); `teacher` the model
    itself (kd "on-policy"). With `settings.patience`, the last held_back_windows are judged after
    each epoch instead of trained on, and the best epoch's weights are kept. Returns the report."""
    import torch
    import torch.nn.functional as F

    from edge_distill.distill.distributed import autocast, training_device, training_precision, world

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    rank, size = world()
    device = training_device()
    student.to(device)
    if teacher is not None:
        teacher.to(device)
    # Under torchrun each process takes its share of every global batch, and DistributedDataParallel
    # averages the gradients: the same steps and schedule as one process.
    net = student if size == 1 else torch.nn.parallel.DistributedDataParallel(
        student, device_ids=[device.index] if device.type == "cuda" else None)
    mapping = torch.from_numpy(student_map(kept, vocab_size)).to(device)
    kept_t = torch.from_numpy(kept).to(device)
    unkept = torch.from_numpy(np.setdiff1d(np.arange(vocab_size), kept)).to(device)
    beta = DIVERGENCES[settings.divergence]
    sampler = torch.Generator(device).manual_seed(settings.seed + rank)
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    held_back = held_back_windows(len(train), settings)
    trained_on = len(train) - held_back
    per_epoch = math.ceil(trained_on / settings.batch_size)
    total = per_epoch * settings.epochs
    warmup = max(1, int(settings.warmup_share * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / total))))
    order = np.random.default_rng(settings.seed)
    losses, on_policy_batches, started = [], 0, time.perf_counter()
    judged, best = [], None  # early stopping: each epoch's held-back perplexity; the best weights
    with progress_bar(progress, total, "student (batches)") as bar:
        for epoch in range(settings.epochs):
            shuffled = order.permutation(trained_on)
            for step, start in enumerate(range(0, trained_on, settings.batch_size)):
                on_policy = settings.kd == "on-policy" and order.random() < settings.on_policy_share
                # This process's share, ascending (memory-mapped reads); a last batch too small to
                # give every process a window is dropped by all of them.
                global_batch = shuffled[start:start + settings.batch_size]
                if len(global_batch) < size:
                    bar.update(1)
                    continue
                batch = np.sort(global_batch)[rank::size]
                text = torch.from_numpy(train[batch].astype(np.int64)).to(device)
                window = mapping[text]
                if on_policy:
                    prompt = settings.prompt_tokens
                    with autocast(device):
                        sampled, _ = sample_continuation(student, window[:, :prompt], window.shape[1] - prompt,
                                                         sampler, banned=len(kept))
                        with torch.no_grad():  # the teacher reads the text's own opening: its ids left out too
                            read = torch.cat([text[:, :prompt], kept_t[sampled[:, prompt:-1]]], 1)
                            scored = teacher(input_ids=read).logits.float().log_softmax(-1)
                        logq = net(input_ids=sampled[:, :-1]).logits.float().log_softmax(-1)
                    loss = generalized_jsd(logq[:, prompt - 1:], teacher_in_student_space(
                        scored[:, prompt - 1:], kept_t, unkept), beta)
                    on_policy_batches += 1
                else:
                    with autocast(device):
                        logq = net(input_ids=window[:, :-1]).logits.float().log_softmax(-1)
                    loss = F.nll_loss(logq.flatten(0, 1), window[:, 1:].flatten())
                    if settings.kd != "none" and settings.alpha > 0:
                        ids = mapping[torch.from_numpy(targets[0][batch].astype(np.int64)).to(device)]
                        p = torch.from_numpy(targets[1][batch].astype(np.float32)).to(device).exp()
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
            if held_back:
                student.eval()
                judged.append(student_perplexity(student, train[trained_on:], kept, vocab_size))
                student.train()
                if judged[-1] == min(judged):
                    best = {k: v.detach().clone() for k, v in student.state_dict().items()}
                progress(f"student: epoch {epoch + 1}: perplexity {judged[-1]:.2f} on {held_back} held-back windows")
                if epoch - int(np.argmin(judged)) >= settings.patience:
                    bar.update(per_epoch * (settings.epochs - epoch - 1))
                    break
    if best is not None:
        student.load_state_dict(best)
    student.eval().to("cpu")
    if teacher is not None:
        teacher.to("cpu")
    return {"steps": total, "on_policy_steps": on_policy_batches, "first_loss": losses[0] if losses else None,
            "final_loss": float(np.mean(losses[-20:])),
            "seconds": round(time.perf_counter() - started, 1), "tokens_per_epoch": int(train[:, 1:].size),
            "processes": size, "device": device.type,
            **({"early_stopping": {"held_back_windows": held_back, "perplexity_per_epoch": judged,
                                   "best_epoch": int(np.argmin(judged)) + 1, "epochs_run": len(judged)}}
               if held_back else {}),
            "precision": training_precision(device)}


def save_student(student, kept: np.ndarray, folder: Path) -> None:
    """The student as a transformers folder (config.json, model.safetensors) and its kept ids."""
    student.save_pretrained(str(folder), safe_serialization=True)
    (folder / "generation_config.json").unlink(missing_ok=True)  # the bundle states its own (generation.json)
    np.save(folder / "vocab.npy", kept)


def load_vocabulary(folder: Path) -> np.ndarray:
    """The kept teacher ids of a student saved by save_student."""
    return np.load(folder / "vocab.npy")


def load_student(folder: Path):
    """(the student saved by save_student, its kept teacher ids)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                                 dtype=torch.float32).eval()
    return model, load_vocabulary(folder)


def parameter_count(model) -> int:
    """Distinct parameters (a tied embedding counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
