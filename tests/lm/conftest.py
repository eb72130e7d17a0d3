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


# Every architecture edge-distill llm exports (lm/teacher.ARCHITECTURES), as a tiny random model:
# the settings each needs beyond the shared ones (Llama 3's rotary scaling on the llama one; the
# sliding windows, soft-capping and scaled queries of the Gemmas; Qwen2's q/k/v biases come with it).
ARCHITECTURE_SETTINGS = {
    "llama": {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
    "mistral": {"sliding_window": 64},
    "qwen2": {},
    "qwen3": {"head_dim": 16},
    "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8, "final_logit_softcapping": 30.0,
               "attn_logit_softcapping": 50.0},
    "gemma3_text": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8},
    "phi3": {"original_max_position_embeddings": 256},
}


def tiny_model_folder(folder: Path, model_type: str, layers: int = 4, seed: int = 0) -> Path:
    """A random `model_type` causal LM with heads of 16, saved as save_pretrained saves a real one,
    with the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = AutoConfig.for_model(model_type, vocab_size=tokenizer.get_vocab_size(), hidden_size=64,
                                  intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=0, **ARCHITECTURE_SETTINGS[model_type])
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # logits of a real model's scale, so greedy choices are clear
        model.get_output_embeddings().weight.mul_(14)
    model.save_pretrained(str(folder))
    folder.joinpath("generation_config.json").unlink(missing_ok=True)
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
