"""Text generation with a KV-cache ONNX decoder (lm/export.py's layout): greedy and sampled
decoding, and its timing (time to first token, decode tokens per second).

Like device/runner.py this runs on a device: standard library, numpy and onnxruntime only, nothing
else from edge_distill but the runner. `python3 decoder.py model.onnx --prompt-ids 1,2,3 --json` generates and
times there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from edge_distill.device.runner import create_session, describe_host, peak_rss_mb
except ImportError:  # on a device, beside runner.py (targets/remote.py copies both)
    from runner import create_session, describe_host, peak_rss_mb

PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)$")
PROMPT_LENGTHS = (64, 256)  # the prompts a generator is timed at


def prompt_lengths(max_length: int, new_tokens: int) -> tuple[int, ...]:
    """PROMPT_LENGTHS that leave room for `new_tokens` within `max_length` (the decoder's rotary
    table ends at its context length), or the longest prompt that does."""
    room = max(max_length - new_tokens, 1)
    return tuple(length for length in PROMPT_LENGTHS if length <= room) or (room,)


@dataclass
class State:
    """Where a generation stands: the last step's logits for the next token, the cache, the mask."""
    logits: np.ndarray  # batch x vocabulary
    past: list[np.ndarray]
    mask: np.ndarray  # batch x total_sequence


class Decoder:
    """A session of a KV-cache decoder, read off its inputs: layers, kv heads, head size."""

    def __init__(self, session):
        self.session = session
        inputs = {spec.name: spec for spec in session.get_inputs()}
        past = sorted((int(m[1]), m[2] == "value", name) for name in inputs if (m := PAST.match(name)))
        missing = {"input_ids", "attention_mask"} - set(inputs)
        if missing or not past:
            raise ValueError(f"not a KV-cache decoder: no {', '.join(sorted(missing)) or 'past_key_values.*'} input")
        self.past_names = [name for *_, name in past]
        self.layers = len(past) // 2
        shape = inputs[self.past_names[0]].shape
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        # Each present in the order of its past (the builder lists all keys, then all values).
        self.output_names = ["logits", *(name.replace("past_key_values.", "present.") for name in self.past_names)]
        # onnxruntime-genai's builder computes positions from the mask inside the graph; a graph
        # traced from transformers takes them as an input.
        self.takes_positions = "position_ids" in inputs
        self.vocab_size = int(next(o for o in session.get_outputs() if o.name == "logits").shape[-1])

    def start(self, ids: np.ndarray) -> State:
        """The prefill: `ids` (batch x sequence, int64), every row as long (no padding)."""
        return self._run(ids, np.ones_like(ids), self._empty_past(ids.shape[0]))

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Every position's next-token logits (batch x sequence x vocabulary) of one prefill."""
        return self.session.run(["logits"], self.prefill_feed(ids))[0]

    def prefill_feed(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The inputs of a prefill of unpadded `ids` (batch x sequence, int64)."""
        return self._feed(ids, np.ones_like(ids), self._empty_past(ids.shape[0]))

    def _feed(self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray]) -> dict[str, np.ndarray]:
        feed = {"input_ids": ids, "attention_mask": mask, **dict(zip(self.past_names, past))}
        if self.takes_positions:
            feed["position_ids"] = np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, -ids.shape[1]:].astype(np.int64)
        return feed

    def _empty_past(self, batch: int) -> list[np.ndarray]:
        """Past keys and values of length 0: what a prefill feeds."""
        return [np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32)] * len(self.past_names)

    def advance(self, state: State, ids: np.ndarray) -> State:
        """One step: `ids` (batch x 1) the tokens just chosen."""
        return self._run(ids, np.concatenate([state.mask, np.ones_like(ids)], axis=1), state.past)

    def _run(self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray]) -> State:
        logits, *present = self.session.run(self.output_names, self._feed(ids, mask, past))
        return State(logits[:, -1], present, mask)

    def generate(self, prompt: list[int], max_new_tokens: int, eos_ids: tuple[int, ...] = (),
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 repetition_penalty: float = 1.0) -> Iterator[int]:
        """The next tokens after `prompt`, one at a time, until an end-of-sequence token (not yielded)
        or `max_new_tokens`: greedy at temperature 0, else sampled (top-k, then nucleus top-p); with
        `repetition_penalty` above 1, every token already in the prompt or the text made less likely
        (penalize_repeats)."""
        rng = np.random.default_rng(seed)
        state = self.start(np.asarray([prompt], dtype=np.int64))
        seen = np.unique(np.asarray(prompt, dtype=np.int64))
        for _ in range(max_new_tokens):
            logits = penalize_repeats(state.logits[0], seen, repetition_penalty)
            token = choose(logits, temperature, top_k, top_p, rng)
            if token in eos_ids:
                return
            yield token
            seen = np.union1d(seen, [token])
            state = self.advance(state, np.asarray([[token]], dtype=np.int64))


def penalize_repeats(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """The repetition penalty of CTRL (Keskar et al. 2019), as transformers and onnxruntime-genai
    apply it: each seen token's logit divided by `penalty` where positive, multiplied where negative."""
    if penalty == 1.0 or not len(seen):
        return logits
    logits = logits.copy()
    picked = logits[seen]
    logits[seen] = np.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def choose(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
    """The next token: the most likely at temperature 0; else drawn from softmax(logits / T) cut to
    the `top_k` most likely (0: all) and then to the smallest set holding `top_p` of the mass."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    order = np.argsort(-scaled, kind="stable")[: top_k or None]
    p = np.exp(scaled[order] - scaled[order[0]])
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), top_p) + 1) if top_p < 1.0 else len(p)
    p = p[:keep] / p[:keep].sum()
    return int(order[rng.choice(keep, p=p)])


def greedy(decoder: Decoder, prompt: list[int], new_tokens: int) -> tuple[list[int], np.ndarray]:
    """(the `new_tokens` greedy tokens after `prompt`, end-of-sequence tokens included, the
    first step's logits): a bundle's golden generation."""
    state = decoder.start(np.asarray([prompt], dtype=np.int64))
    first, tokens = state.logits[0].copy(), []
    for _ in range(new_tokens):
        tokens.append(int(np.argmax(state.logits[0])))
        state = decoder.advance(state, np.asarray([[tokens[-1]]], dtype=np.int64))
    return tokens, first


def follow(decoder: Decoder, prompt: list[int], expected: list[int], atol: float) -> dict:
    """`prompt` decoded along `expected` (a bundle's golden greedy tokens), each step fed the expected
    token: at every step the most likely token must be the expected one, or beat it by at most `atol`
    in logit (a near tie, which another CPU's kernels may break the other way). {"same", "exact",
    "first_logits"}, and at the first step beyond tolerance {"step", "margin", "chosen", "expected"}."""
    state = decoder.start(np.asarray([prompt], dtype=np.int64))
    first, exact = state.logits[0].copy(), True
    for step, token in enumerate(expected):
        logits = state.logits[0]
        top = int(np.argmax(logits))
        if top != token:
            margin = float(logits[top]) - float(logits[token]) if 0 <= token < len(logits) else float("inf")
            if not margin <= atol:
                return {"same": False, "exact": False, "first_logits": first, "step": step, "margin": margin,
                        "chosen": top, "expected": int(token)}
            exact = False
        if step + 1 < len(expected):
            state = decoder.advance(state, np.asarray([[token]], dtype=np.int64))
    return {"same": True, "exact": exact, "first_logits": first}


def describe_divergence(index: int, row: dict, atol: float) -> str:
    """One golden prompt's failure as `follow` reports it, for a person."""
    return (f"prompt {index + 1} step {row['step'] + 1}: token {row['chosen']} instead of {row['expected']}, "
            f"ahead by {row['margin']:.3g} in logit (tolerance {atol:.3g})")


def time_generation(decoder: Decoder, prompt_length: int, new_tokens: int, rounds: int = 3) -> dict[str, Any]:
    """Time to first token (the prefill of a `prompt_length`-token prompt) and decode tokens/s over
    `new_tokens` greedy steps after it, at batch 1: the median of `rounds` (after one warm-up)."""
    return time_side_by_side([decoder], prompt_length, new_tokens, rounds)[0]


def time_side_by_side(decoders: list[Decoder], prompt_length: int, new_tokens: int, rounds: int = 5
                      ) -> list[dict[str, Any]]:
    """time_generation's figures for each decoder, timed in interleaved rounds: one warm-up each,
    then each round visits every decoder in a rotated order, so a drift of the machine's speed hits
    all alike. round_decode_tokens_per_s: each round's figure, for a comparison that must hold round
    by round (measure/speed.quickest_beyond_noise)."""
    vocab = min(decoder.vocab_size for decoder in decoders)
    prompt = np.asarray([(np.arange(prompt_length) * 7919 + 11) % vocab], dtype=np.int64)

    def once(decoder: Decoder) -> tuple[float, float]:
        started = time.perf_counter()
        state = decoder.start(prompt)
        prefilled = time.perf_counter()
        for _ in range(new_tokens):
            state = decoder.advance(state, np.asarray([[int(np.argmax(state.logits[0]))]], dtype=np.int64))
        return (prefilled - started) * 1e3, new_tokens / (time.perf_counter() - prefilled)

    for decoder in decoders:  # warms each session up
        once(decoder)
    first, rates = [[] for _ in decoders], [[] for _ in decoders]
    for round_ in range(rounds):
        for index in [(round_ + k) % len(decoders) for k in range(len(decoders))]:
            ttft, rate = once(decoders[index])
            first[index].append(ttft)
            rates[index].append(rate)
    return [{"prompt_tokens": prompt_length, "time_to_first_token_ms": float(np.median(first[i])),
             "new_tokens": new_tokens, "decode_tokens_per_s": float(np.median(rates[i])),
             "round_decode_tokens_per_s": [float(rate) for rate in rates[i]]} for i in range(len(decoders))]


def main(argv: list[str] | None = None) -> int:
    """`python3 decoder.py model.onnx --prompt-ids 1,2,3`: greedy tokens and timings, on a device."""
    import argparse
    import json
    import sys

    import onnxruntime as ort

    parser = argparse.ArgumentParser(description="Generate with a KV-cache ONNX decoder (numpy + onnxruntime only).")
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompt-ids", required=True, help="comma list of token ids; prompts separated by ;")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's choice)")
    parser.add_argument("--time", type=str, default="", metavar="LEN[,LEN]",
                        help="also time prefills of these prompt lengths and decoding after them")
    parser.add_argument("--expect-ids", default="", help="each prompt's golden greedy tokens (as --prompt-ids): "
                        "decode along them and report where the model's choice differs beyond --atol")
    parser.add_argument("--atol", type=float, default=0.0, help="logit margin within which a different choice ties")
    parser.add_argument("--versus", type=Path, nargs="*", metavar="MODEL",
                        help="with --time: time these models too, side by side with the first in interleaved "
                             "rounds (--rounds), each by its file name under side_by_side")
    parser.add_argument("--rounds", type=int, default=5, help="with --versus: the interleaved rounds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        decoder = Decoder(create_session(args.model, threads=args.threads or None))
        prompts = [[int(t) for t in prompt.split(",")] for prompt in args.prompt_ids.split(";")]
        expected = [[int(t) for t in row.split(",")] for row in args.expect_ids.split(";")] if args.expect_ids else []
        # Given the stored tokens, decoding along them is the check; a free greedy run would repeat it.
        tokens = [] if expected else [greedy(decoder, prompt, args.new_tokens)[0] for prompt in prompts]
        golden = [{k: v for k, v in follow(decoder, prompt, row, args.atol).items() if k != "first_logits"}
                  for prompt, row in zip(prompts, expected)]
        lengths = [int(n) for n in args.time.split(",") if n]
        if args.versus is not None:
            others = [Decoder(create_session(path, threads=args.threads or None)) for path in args.versus]
            rows = [time_side_by_side([decoder, *others], n, args.new_tokens, args.rounds) for n in lengths]
            side_by_side = {path.name: [row[i] for row in rows] for i, path in enumerate([args.model, *args.versus])}
            timing = side_by_side[args.model.name]
        else:
            timing = [time_generation(decoder, n, args.new_tokens) for n in lengths]
    except Exception as e:  # one line, not a traceback: over SSH it is all the user sees
        print(f"decoder: {args.model.name}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}",
              file=sys.stderr)
        return 3
    result = {"tokens": tokens, **({"golden": golden} if expected else {}), "timing": timing,
              **({"side_by_side": side_by_side} if args.versus is not None else {}),
              "vocab_size": decoder.vocab_size, "layers": decoder.layers, "onnxruntime": ort.__version__, "peak_rss_mb": peak_rss_mb(),
              "host": describe_host(), "threads": args.threads or None}
    print(json.dumps(result) if args.json else "\n".join([" ".join(map(str, row)) for row in tokens]
                                                          + [str(t) for t in timing]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
