"""A tiny causal language model folder made here (no download): a byte-level BPE tokenizer trained
on a few sentences and a random two-head Llama, saved as save_pretrained saves a real one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers", reason='pip install -e ".[llm]"')

SENTENCES = [f"The {animal} {verb} over the {thing} number {n}." for n in range(40)
             for animal, verb, thing in [("fox", "jumps", "fence"), ("cat", "walks", "wall"), ("dog", "runs", "road")]]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return tokenizer


def tiny_llama_folder(folder: Path, layers: int = 4, eos: bool = True, seed: int = 0, hidden_size: int = 64) -> Path:
    """Heads of 16 (hidden_size 64, 4 heads): onnxruntime's CPU attention needs a multiple of 16."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=1,
                         eos_token_id=2 if eos else None)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # logits of a real model's scale, so greedy choices are clear
        model.lm_head.weight.mul_(20 * (32 / hidden_size) ** 0.5)
    model.save_pretrained(str(folder))
    folder.joinpath("generation_config.json").unlink(missing_ok=True)
    if not eos:
        config_json = json.loads((folder / "config.json").read_text())
        config_json.pop("eos_token_id", None)
        (folder / "config.json").write_text(json.dumps(config_json))
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A four-layer random Llama folder; copy it before changing anything in it."""
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> Path:
    """200 passages of three sentences each, one per line."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n".join(" ".join(rng.sample(SENTENCES, 3)) for _ in range(200)))
    return path


def tiny_settings(teacher: Path, text: Path, **training):
    """Build settings small enough for seconds: 16-token windows, a 2-layer student."""
    from edge_distill.lm.settings import LMBuildSettings
    from edge_distill.lm.student import LMTrainingSettings

    return LMBuildSettings(teacher=teacher, text=text, context=16, train_windows=64, held_out_windows=8, new_tokens=8,
                           training=LMTrainingSettings(**{"layers": 2, "vocab": 0, "epochs": 1, **training}))
