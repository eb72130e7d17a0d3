"""Sequence distillation: a small character-level GRU learns next-character distributions from a
larger one (token-level KD, Kim & Rush 2016), then ships as ONNX like the classifiers.

The default text is the dataset descriptions scikit-learn installs with itself
(sklearn/datasets/descr/*.rst): real English prose, on disk, nothing downloaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_distill.distill.losses import token_kd_loss
from edge_distill.distill.trainer import Optimization
from edge_distill.errors import DataError, ModelError
from edge_distill.export.onnx_export import check_export_parity, export_onnx
from edge_distill.distill.sequence_settings import SequenceSettings
from edge_distill.models.loading import count_params




def read_corpus(path: Path | None = None) -> str:
    """The user's UTF-8 text file, or the embedded default."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read as UTF-8 text ({e})", "give a plain text file") from None
    else:
        import sklearn

        descr = Path(sklearn.__file__).parent / "datasets" / "descr"
        text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(descr.glob("*.rst")))
    if len(text) < 1000:
        raise DataError(f"{path}: {len(text)} characters; sequence distillation needs at least 1000")
    return text


class CharGRU(nn.Module):
    """Embedding -> GRU -> linear: next-character logits at every position."""

    def __init__(self, vocab_size: int, hidden: int, layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, min(hidden, 64))
        self.rnn = nn.GRU(min(hidden, 64), hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) int64 -> (B, L, V)
        return self.out(self.rnn(self.embed(tokens))[0])


def encode(text: str) -> tuple[np.ndarray, list[str]]:
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return np.array([index[c] for c in text], dtype=np.int64), vocab


def train_char_model(
    model: nn.Module,
    tokens: np.ndarray,  # (N,) training text
    val_tokens: np.ndarray,  # held-out text for choosing the best step
    settings: SequenceSettings,
    teacher: nn.Module | None = None,
    progress: Callable[[str], None] = lambda _: None,
    label: str = "train",
) -> float:
    """Random windows, AdamW; token-level KD from `teacher` when given, else cross-entropy.
    Every 50 steps the model is scored on `val_tokens`; the best weights are kept (a small text
    is over-fitted quickly). Returns the best validation bits per character."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    # AdamW's default weight decay; gradients clipped (a GRU's can explode on long windows).
    optimization = Optimization(model.parameters(), settings.lr, settings.steps, weight_decay=0.01, clip_norm=1.0)
    for step in range(1, settings.steps + 1):
        model.train()
        starts = rng.integers(0, len(tokens) - settings.length - 1, settings.batch_size)
        window = torch.from_numpy(np.stack([tokens[s : s + settings.length + 1] for s in starts]))  # (B, L + 1)
        inputs, targets = window[:, :-1], window[:, 1:]
        logits = model(inputs)  # (B, L, V)
        if teacher is None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        else:
            with torch.no_grad():
                soft = teacher(inputs)
            loss = token_kd_loss(logits, soft, targets, settings.temperature, settings.alpha)
        optimization.step(loss)
        if step % 50 == 0 or step == settings.steps:
            bits = bits_per_character(model, val_tokens)
            optimization.keep_if_best(model, -bits, ties_win=False)  # fewer bits is better; the earlier wins a tie
            progress(f"{label} step {step}/{settings.steps}  loss {loss.item():.3f}  val {bits:.3f} bits/char")
    optimization.restore_best(model)
    return -optimization.best_score


@torch.no_grad()
def bits_per_character(model: nn.Module, tokens: np.ndarray, length: int = 256) -> float:
    """Cross-entropy of the next character in bits, over consecutive windows of held-out text."""
    model.eval()
    length = min(length, len(tokens) - 1)  # a short split is one window, not none (a mean of nothing is NaN)
    count = (len(tokens) - 1) // length
    window = torch.from_numpy(tokens[: count * length + 1])
    inputs = window[:-1].reshape(count, length)
    targets = window[1:].reshape(count, length)
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item() / math.log(2)


@torch.no_grad()
def kl_to_teacher_bits(student: nn.Module, teacher: nn.Module, tokens: np.ndarray, length: int = 256) -> float:
    """Mean KL(teacher || student) of the next-character distributions in bits, over held-out windows:
    how far the student's predictions are from the teacher's."""
    student.eval()
    teacher.eval()
    length = min(length, len(tokens) - 1)
    count = (len(tokens) - 1) // length
    inputs = torch.from_numpy(tokens[: count * length]).reshape(count, length)
    log_t, log_s = F.log_softmax(teacher(inputs), -1), F.log_softmax(student(inputs), -1)  # (B, L, V)
    return float((log_t.exp() * (log_t - log_s)).sum(-1).mean()) / math.log(2)


def export_char_model(model: nn.Module, path: Path, opset: int, length: int = 16) -> None:
    """ONNX with dynamic batch and sequence length; checked against PyTorch at another batch size
    and length than the example's."""
    vocab = model.out.out_features
    export_onnx(model, np.random.default_rng(0).integers(0, vocab, (2, length)), path, opset, input_name="tokens",
                dynamic=("batch", "length"))
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    if dims[1].dim_value:
        # Seen with torch 2.13: a second torch.export of a GRU in one process fixes the length.
        raise ModelError(f"the exporter fixed the sequence length of {path.name} at {dims[1].dim_value}",
                         "run the sequence distillation in a fresh process (one per run)")
    _free_output_length(path)
    check_export_parity(model, path, np.random.default_rng(1).integers(0, vocab, (3, 2 * length)), 1e-4, 1e-3)


def _free_output_length(path: Path) -> None:
    # The exporter records the example's length in the output's and some intermediate declared
    # shapes although the graph takes any length; ONNX Runtime then warns on every other length.
    # Declare the output's length free and drop the (optional) intermediate shape annotations.
    import onnx

    model = onnx.load(str(path))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "length"
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def distill_sequence(out: Path, settings: SequenceSettings, text_path: Path | None = None, opset: int = 18,
                     progress: Callable[[str], None] = lambda _: None) -> dict:
    """Teacher, scratch student and KD student on the same text; the KD student exported to ONNX.
    Writes sequence_settings.OUTPUTS into the folder `out`; returns the report. (`edge_distill.api` publishes them.)"""
    text = read_corpus(text_path)
    tokens, vocab = encode(text)
    # Contiguous 80/10/10 splits: validation picks each model's best step, the test text reports.
    train, val, held_out = np.split(tokens, [int(len(tokens) * 0.8), int(len(tokens) * 0.9)])
    report: dict = {"text": str(text_path) if text_path else "scikit-learn dataset descriptions (installed)",
                    "characters": len(text), "vocab_size": len(vocab), "settings": asdict(settings), "models": {}}
    models = {}
    for name, hidden, teacher in (("teacher", settings.teacher_hidden, None),
                                  ("student_scratch", settings.student_hidden, None),
                                  ("student_kd", settings.student_hidden, "teacher")):
        torch.manual_seed(settings.seed)
        model = CharGRU(len(vocab), hidden)
        val_bits = train_char_model(model, train, val, settings, models.get(teacher), progress, name)
        models[name] = model
        report["models"][name] = {"hidden": hidden, "params": count_params(model),
                                  "val_bits_per_char": val_bits,
                                  "held_out_bits_per_char": bits_per_character(model, held_out)}
        if name != "teacher":
            report["models"][name]["held_out_kl_to_teacher_bits"] = kl_to_teacher_bits(model, models["teacher"],
                                                                                        held_out)
    out.mkdir(parents=True, exist_ok=True)
    export_char_model(models["student_kd"], out / "student.onnx", opset)
    (out / "vocab.json").write_text(json.dumps(vocab) + "\n")
    (out / "sequence.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
