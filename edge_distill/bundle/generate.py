"""`edge-distill generate BUNDLE "prompt"`: text from a generator bundle (edge-distill llm), streamed
as it is decoded. Needs numpy, onnxruntime and tokenizers; no torch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_distill.bundle.kinds.generation import open_generator
from edge_distill.errors import BundleError, ConfigError, InputFileError, describe


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64  # at most the bundle's max_length (the model's context) less the prompt
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float = 1.0  # above 1: tokens already in the prompt or the text made less likely
    stop: tuple[str, ...] = ()  # the text ends before the first of these it would hold (not included)


def generate_text(path: Path, prompt: str, sampling: Sampling = Sampling(), threads: int | None = None,
                  chat: bool = False) -> Iterator[str]:
    """The text after `prompt` (with `chat`, the assistant's answer to it as the user's message),
    piece by piece as tokens are chosen. The bundle (its integrity and the generator kind's cheap
    checks, bundle/kinds/generation.py), the prompt and the settings are checked before this returns;
    the model runs as the pieces are taken."""
    from edge_distill.bundle.chat import render_chat
    from edge_distill.device.decoder import Decoder
    from edge_distill.sessions import open_session

    if sampling.max_new_tokens < 1 or not sampling.temperature >= 0 or not 0 < sampling.top_p <= 1 \
            or not 0 < sampling.repetition_penalty < float("inf"):
        raise ConfigError("--max-new-tokens must be at least 1, --temperature at least 0, --top-p in (0, 1], "
                          "--repetition-penalty above 0")
    if any(not stop for stop in sampling.stop):
        raise ConfigError("--stop: an empty string would stop before the first token", "give the text to stop at")
    generator = open_generator(path)
    if chat:
        prompt = render_chat(generator.chat_template(), prompt, generator.settings_path)
    ids = generator.encode(prompt)
    room = generator.max_length - len(ids)
    if not ids:
        raise InputFileError("the prompt is empty after tokenizing", "give some text to continue")
    if room < 1:
        raise InputFileError(f"the prompt is {len(ids)} tokens; the bundle generates at most {generator.max_length} "
                             "in all (generation.max_length)", "give a shorter prompt")
    threads = threads or generator.bundle.manifest.get("runtime", {}).get("intra_op_threads")
    model = generator.bundle.model_path
    decoder = Decoder(open_session(model, model.name, threads=threads))
    if decoder.vocab_size != generator.vocab_size:
        raise BundleError(f"{model}: its logits hold {decoder.vocab_size:,} tokens, the manifest says "
                          f"{generator.vocab_size:,}", f"edge-distill verify {path} lists every check")
    tokens = decoder.generate(ids, min(sampling.max_new_tokens, room), generator.eos_token_ids,
                              sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed,
                              sampling.repetition_penalty)
    return _pieces(tokens, generator, model, sampling.stop)


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could be the start of a stop string."""
    return max((n for s in stop for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])), default=0)


def _pieces(tokens: Iterator[int], generator, model: Path, stop: tuple[str, ...] = ()) -> Iterator[str]:
    """The text of `tokens` as it grows: whole characters only (a token that ends inside a UTF-8
    sequence waits for the next), and up to the first stop string (text that may begin one is held
    back until it does or does not)."""
    chosen, shown = [], ""
    try:
        for token in tokens:
            chosen.append(token)
            text = generator.decode(chosen)
            if text.endswith("\ufffd"):
                continue
            found = [text.find(s) for s in stop if s in text]
            if found:
                if min(found) > len(shown):
                    yield text[len(shown):min(found)]
                return
            ready = len(text) - _held_back(text, stop)
            if ready > len(shown):
                yield text[len(shown):ready]
                shown = text[:ready]
        if len(text := generator.decode(chosen)) > len(shown) and not text.endswith("\ufffd"):
            yield text[len(shown):]  # what was held back for a stop string that never came
    except BundleError:
        raise
    except Exception as e:  # onnxruntime's own error types
        raise BundleError(f"{model}: generation failed ({describe(e, 300)})") from None
