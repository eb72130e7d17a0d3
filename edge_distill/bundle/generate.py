"""`edge-distill generate BUNDLE "prompt"`: text from a generator bundle (edge-distill llm), streamed
as it is decoded. Needs numpy, onnxruntime and tokenizers; no torch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_distill.bundle.reader import Bundle, inside
from edge_distill.errors import BundleError, ConfigError, InputFileError, describe
from edge_distill.files import read_json


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None


def chat_prompt(template: str | None, prompt: str, where: Path) -> str:
    """`prompt` as the user's one message, rendered by the bundle's chat template (jinja2 in its
    sandbox, as transformers renders it) with the assistant's turn opened."""
    if not template:
        raise BundleError(f"{where}: generation.json has no chat_template: the teacher is not a chat model",
                          "drop --chat and give the text to continue")
    try:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ConfigError("--chat renders the bundle's chat template with jinja2, which is not installed",
                          "pip install jinja2") from None

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    try:
        return environment.from_string(template).render(messages=[{"role": "user", "content": prompt}],
                                                        add_generation_prompt=True)
    except jinja2.TemplateError as e:
        raise BundleError(f"{where}: generation.json's chat_template does not render ({describe(e, 200)})") from None


def generate_text(path: Path, prompt: str, sampling: Sampling = Sampling(), threads: int | None = None,
                  chat: bool = False) -> Iterator[str]:
    """The text after `prompt` (with `chat`, the assistant's answer to it as the user's message),
    piece by piece as tokens are chosen. The bundle, the prompt and the settings are checked before
    this returns; the model runs as the pieces are taken."""
    from tokenizers import Tokenizer

    from edge_distill.device.decoder import Decoder
    from edge_distill.sessions import open_session

    bundle = Bundle.open_checked(path)
    if not bundle.generates:
        raise BundleError(f"{path}: not a text generator bundle (its golden kind is "
                          f"{bundle.manifest['golden'].get('kind', 'classifier')!r})", "build one with edge-distill llm")
    section = bundle.section("generation")
    settings = read_json(inside(path, section["settings"]) or path / "missing", "generation settings", error=BundleError)
    tokenizer = Tokenizer.from_file(str(inside(path, section["tokenizer"])))
    if chat:
        prompt = chat_prompt(settings.get("chat_template"), prompt, path / section["settings"])
    ids = tokenizer.encode(prompt, add_special_tokens=bool(settings.get("add_special_tokens", True))).ids
    room = section["max_length"] - len(ids)
    if not ids:
        raise InputFileError("the prompt is empty after tokenizing", "give some text to continue")
    if room < 1:
        raise InputFileError(f"the prompt is {len(ids)} tokens; the bundle generates at most {section['max_length']} "
                             "in all (generation.max_length)", "give a shorter prompt")
    if sampling.max_new_tokens < 1 or sampling.temperature < 0 or not 0 < sampling.top_p <= 1:
        raise ConfigError("--max-new-tokens must be at least 1, --temperature at least 0, --top-p in (0, 1]")
    threads = threads or bundle.manifest.get("runtime", {}).get("intra_op_threads")
    decoder = Decoder(open_session(bundle.model_path, bundle.model_path.name, threads=threads))
    tokens = decoder.generate(ids, min(sampling.max_new_tokens, room), tuple(section["eos_token_ids"]),
                              sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed)
    return _pieces(tokens, tokenizer, bundle.model_path)


def _pieces(tokens: Iterator[int], tokenizer, model: Path) -> Iterator[str]:
    """The text of `tokens` as it grows: whole characters only (a token that ends inside a UTF-8
    sequence waits for the next)."""
    chosen, shown = [], ""
    try:
        for token in tokens:
            chosen.append(token)
            text = tokenizer.decode(chosen)
            if not text.endswith("\ufffd") and len(text) > len(shown):
                yield text[len(shown):]
                shown = text
    except Exception as e:  # onnxruntime's own error types
        raise BundleError(f"{model}: generation failed ({describe(e, 300)})") from None
