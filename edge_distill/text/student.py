"""A small transformer student made from the teacher, as DistilBERT made its own: some of the
teacher's layers, evenly spaced (DistilBERT took every other one), and a vocabulary cut to the
tokens the training text uses, which shrinks the embedding matrix (half of MiniLM-L6's
parameters); optionally that matrix factorized as ALBERT's is (vocabulary x rank, then rank x
hidden), and the position embeddings cut to the longest input it reads. The student keeps the
teacher's hidden size, so every weight it has starts as the teacher's (the factors from its
SVD); the tokenizer is the teacher's with the same vocabulary cut, its ids renumbered. A
classification teacher's head (pooler, classifier) is kept as it is.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass

from edge_distill.errors import ConfigError
from edge_distill.text.teacher import encode_texts


@dataclass(frozen=True)
class StudentShape:
    layers: int = 2  # of the teacher's, evenly spaced
    min_token_count: int = 1  # a token is kept when the training text uses it this often (special tokens always)
    embedding_rank: int | None = None  # factorize the word embeddings to this rank; None keeps them whole


def chosen_layers(teacher_layers: int, layers: int) -> list[int]:
    """`layers` of `teacher_layers`, evenly spaced, the first and the last included: 6 -> 2 is
    [0, 5], 6 -> 3 is [0, 2, 5] (rounded), 12 -> 6 is DistilBERT's every other layer, shifted."""
    if not 1 <= layers <= teacher_layers:
        raise ConfigError(f"student layers {layers}: the teacher has {teacher_layers}",
                          f"choose 1 to {teacher_layers}")
    if layers == 1:
        return [teacher_layers - 1]
    return sorted({round(i * (teacher_layers - 1) / (layers - 1)) for i in range(layers)})


def kept_tokens(tokenizer, texts: list[str], min_count: int) -> list[int]:
    """Teacher token ids the student keeps, ascending: the special and added tokens, and every
    token the texts use at least `min_count` times."""
    counts: Counter[int] = Counter()
    for encoding in encode_texts(tokenizer, texts):
        counts.update(encoding.ids)
    special = set(tokenizer.get_added_tokens_decoder())  # id -> AddedToken: [PAD], [UNK], [CLS], ...
    return sorted(special | {token for token, count in counts.items() if count >= min_count})


def pruned_tokenizer_json(tokenizer_json: dict, kept: list[int]) -> dict:
    """The teacher's tokenizer.json with only `kept` ids, renumbered 0.. in their order; a word
    whose pieces were cut falls back to other pieces or [UNK], as WordPiece does."""
    if tokenizer_json.get("model", {}).get("type") != "WordPiece":
        raise ConfigError(f"vocabulary cutting supports WordPiece tokenizers (BERT's); this one is "
                          f"{tokenizer_json.get('model', {}).get('type')}", "set the student's min_token_count to 0")
    new_id = {old: new for new, old in enumerate(kept)}
    pruned = copy.deepcopy(tokenizer_json)
    vocab = pruned["model"]["vocab"]
    pruned["model"]["vocab"] = {token: new_id[old] for token, old in sorted(vocab.items(), key=lambda kv: kv[1])
                                if old in new_id}
    for added in pruned.get("added_tokens", []):
        added["id"] = new_id[added["id"]]
    for special in (pruned.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    if pruned.get("padding"):
        pruned["padding"]["pad_id"] = new_id[pruned["padding"]["pad_id"]]
    return pruned


LAYER = re.compile(r"(^|\.)encoder\.layer\.(\d+)\.")


def student_from_teacher(teacher, texts: list[str], shape: StudentShape):
    """(student model, its tokenizer.json as a dict, report): a copy of the teacher's architecture
    (its head included) with `shape.layers` of its layers, the vocabulary `texts` use and the
    positions up to the teacher's max_length, every weight the teacher's."""
    import torch

    config = teacher.model.config
    if getattr(config, "model_type", "") not in ("bert", "roberta", "xlm-roberta", "electra"):
        raise ConfigError(f"student initialization needs a BERT-family teacher; this one is '{config.model_type}'",
                          "use a bert, roberta or electra model folder")
    encoder = teacher.model.base_model
    if not hasattr(encoder, "encoder") or not hasattr(encoder.encoder, "layer"):
        raise ConfigError(f"teacher {type(teacher.model).__name__}: no encoder.layer list to take layers from")
    layers = chosen_layers(config.num_hidden_layers, shape.layers)
    source_json = json.loads((teacher.folder / "tokenizer.json").read_text(encoding="utf-8"))
    kept = (kept_tokens(teacher.tokenizer, texts, shape.min_token_count) if shape.min_token_count
            else list(range(config.vocab_size)))
    tokenizer_json = pruned_tokenizer_json(source_json, kept) if shape.min_token_count else copy.deepcopy(source_json)
    # As the bundle's app reads it: cut at the length the student was trained to, never padded
    # (an app pads a batch itself, with a mask; MiniLM's file pads every text to 128).
    tokenizer_json["truncation"] = {"direction": "Right", "max_length": teacher.max_length,
                                    "strategy": "LongestFirst", "stride": 0}
    tokenizer_json["padding"] = None
    # RoBERTa numbers positions from padding_idx + 1.
    offset = config.pad_token_id + 1 if config.model_type in ("roberta", "xlm-roberta") else 0
    positions = min(config.max_position_embeddings, teacher.max_length + offset)
    student_config = copy.deepcopy(config)
    student_config.num_hidden_layers = len(layers)
    student_config.vocab_size = len(kept)
    student_config.max_position_embeddings = positions
    pad = getattr(config, "pad_token_id", None) or 0
    student_config.pad_token_id = kept.index(pad) if pad in kept else 0  # the same token, renumbered
    student = type(teacher.model)(student_config)
    renamed = {}
    for name, value in teacher.model.state_dict().items():
        layer = LAYER.search(name)
        if layer:
            if int(layer.group(2)) in layers:
                renamed[name[: layer.start(2)] + str(layers.index(int(layer.group(2)))) + name[layer.end(2):]] = value
        elif name.endswith("word_embeddings.weight"):
            renamed[name] = value[torch.as_tensor(kept)]
        elif name.endswith("position_embeddings.weight"):
            renamed[name] = value[:positions]
        else:
            renamed[name] = value
    missing, unexpected = student.load_state_dict(renamed, strict=False)
    if missing:
        raise ConfigError(f"student initialization left weights unset: {', '.join(missing[:5])}",
                          "the teacher's architecture is not one this initialization knows")
    if shape.embedding_rank:
        embeddings = student.base_model.embeddings
        embeddings.word_embeddings = factorized_embedding(embeddings.word_embeddings.weight.detach(), shape.embedding_rank)
    report = {"layers_from_teacher": layers, "vocabulary": len(kept), "teacher_vocabulary": config.vocab_size,
              "hidden_size": config.hidden_size, "embedding_rank": shape.embedding_rank, "positions": positions,
              "parameters": sum(p.numel() for p in student.parameters()),
              "teacher_parameters": sum(p.numel() for p in teacher.model.parameters())}
    return student.eval(), tokenizer_json, report


def factorized_embedding(weight, rank: int):
    """Word embeddings (V, H) as Embedding(V, rank) then Linear(rank, H), from the rank-`rank`
    truncated SVD of `weight`: the closest such pair in the least-squares sense."""
    import torch

    vocabulary, hidden = weight.shape
    if not 1 <= rank < hidden:
        raise ConfigError(f"student embedding_rank {rank}: must be 1 to {hidden - 1} (the hidden size is {hidden})",
                          "choose a smaller rank (--embedding-rank 0 keeps the embeddings whole)")
    u, singular, vh = torch.linalg.svd(weight, full_matrices=False)
    lookup = torch.nn.Embedding(vocabulary, rank)
    lookup.weight.data = (u[:, :rank] * singular[:rank]).contiguous()
    project = torch.nn.Linear(rank, hidden, bias=False)
    project.weight.data = vh[:rank].T.contiguous()
    return torch.nn.Sequential(lookup, project)
