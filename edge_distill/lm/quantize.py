"""Weight-only quantization of a KV-cache decoder, each variant judged by measured quality and
speed, and the one to ship chosen by a stated rule.

Variants, each written by onnxruntime-genai's model builder from the same transformers folder
(lm/export.build_decoder), so every one has the same fused graph:
- fp32;
- int8_weights / int4_weights: MatMulNBits (RTN, symmetric, blocks of 32), weights 8 or 4 bits,
  activations fp32 (accuracy level 4 lets the kernel run int8 dot products on them); a tied
  embedding quantized once, read by GatherBlockQuantized and shared with the output layer.
  ORT's other 4-bit algorithms lost more on the default SmolLM2 student
  (benchmarks/llm_weight_only.py: perplexity +10.8% RTN symmetric, +16.2% k-quant, +17.8% RTN
  asymmetric, +119.5% HQQ).
The dynamic int8 variant of earlier versions (quantize_dynamic on MatMul and Gather) is gone: on
the traced graph it was slower than int4 and worse than int8 weights, and the builder's fused
graph has no plain MatMul weights left for it.

Quality: held-out perplexity over the teacher's whole vocabulary, and next-token top-1 agreement
with the teacher and with fp32. Speed: time to first token and decode tokens/s at batch 1, every
variant timed side by side in interleaved rounds in one process of its own (device/decoder.py, as
on a device); memory: each variant's peak in a process of its own, generating after the longest
prompt.

The candidates are the student's variants and the teacher itself at 8 and 4 bits (the same
builder, the teacher's whole vocabulary): a user's simplest alternative, which a student must beat
to ship. The rule (measure/speed.quickest_beyond_noise, the one speed rule of every pipeline):
among the candidates whose perplexity is within `max_ratio` times the teacher's fp32 perplexity,
the quickest decode, where it was quicker in every interleaved round; otherwise the candidates it
did not beat are tied with it, and a tie goes to the smaller file (a generator's memory is the
device's scarcest resource). Where none is within, the closest to the teacher ships, with a warning.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.errors import QuantizeError
from edge_distill.export.recipe import QuantRecipe

VARIANTS = ("fp32", "int8_weights", "int4_weights")  # the student's
TEACHER_VARIANTS = ("teacher_int8_weights", "teacher_int4_weights")
NEW_TOKENS = 32
# What the builder does for each quantized variant, as the recipe that names and checks it.
RECIPES = {"int8_weights": QuantRecipe("weight_only", bits=8, block_size=32),
           "int4_weights": QuantRecipe("weight_only", bits=4, block_size=32)}
BUILDER_PRECISION = {"fp32": "fp32", "int8_weights": "int8", "int4_weights": "int4"}


def make_variant(name: str, folder: Path, tokenizer: Path, out: Path, kept: np.ndarray | None = None,
                 vocab_size: int | None = None) -> dict[str, Any]:
    """Write variant `name` (of VARIANTS or TEACHER_VARIANTS) of the transformers model in `folder` to
    `out`; returns its recipe, op counts, quantized nodes (a variant without any is refused) and the
    builder's genai_config.json for it."""
    from edge_distill.export.quantize import recipe_report
    from edge_distill.lm.export import build_decoder

    kind = name.removeprefix("teacher_")
    config = build_decoder(folder, tokenizer, out, BUILDER_PRECISION[kind], kept, vocab_size)
    return recipe_report(RECIPES[kind], out) | {"genai_config": config}


def held_out_quality(model: Path, held_out: np.ndarray, teacher_top1: np.ndarray, threads: int,
                     batch_size: int = 8) -> tuple[dict[str, float], np.ndarray]:
    """({perplexity, agreement with the teacher's top-1}, this model's top-1 per position) on the
    held-out windows (N, context + 1), each read in one prefill."""
    from edge_distill.device.decoder import Decoder
    from edge_distill.sessions import open_session

    decoder = Decoder(open_session(model, model.name, threads=threads))
    nll, top1 = [], []
    for start in range(0, len(held_out), batch_size):
        batch = held_out[start:start + batch_size].astype(np.int64)
        logits = decoder.logits(batch[:, :-1])
        shifted = logits - logits.max(-1, keepdims=True)
        logsum = np.log(np.exp(shifted).sum(-1))
        nll.append(logsum - np.take_along_axis(shifted, batch[:, 1:, None], -1)[..., 0])
        top1.append(logits.argmax(-1).astype(np.int32))
    predicted = np.concatenate(top1)
    return {"perplexity": float(np.exp(np.concatenate(nll).mean())),
            "agreement_with_teacher": float((predicted == teacher_top1).mean())}, predicted


def time_side_by_side(models: dict[str, Path], threads: int, lengths: tuple[int, ...], new_tokens: int = NEW_TOKENS,
                      rounds: int = 5) -> dict[str, list[dict[str, Any]]]:
    """device/decoder.py run as a script (as on a device) timing every model in `rounds` interleaved
    rounds: {name: its timing rows, one per prompt length, with each round's decode tokens/s}."""
    first, *others = models.values()
    result = _decoder_script([first, "--versus", *others, "--prompt-ids", "1", "--new-tokens", str(new_tokens),
                              "--threads", str(threads), "--time", ",".join(map(str, lengths)), "--rounds", str(rounds)],
                             f"timing {', '.join(models)}")
    return {name: result["side_by_side"][path.name] for name, path in models.items()}


def peak_memory_in_own_process(model: Path, threads: int, prompt_length: int,
                               new_tokens: int = NEW_TOKENS) -> float | None:
    """The peak resident memory (MB) of device/decoder.py generating `new_tokens` after a
    `prompt_length`-token prompt with `model`, in a process of its own: what an app holds."""
    prompt = ",".join(str(1 + i % 50) for i in range(prompt_length))
    return _decoder_script([model, "--prompt-ids", prompt, "--new-tokens", str(new_tokens), "--threads", str(threads)],
                           f"running {model.name}")["peak_rss_mb"]


def _decoder_script(args: list, what: str) -> dict[str, Any]:
    from edge_distill.device import decoder

    done = subprocess.run([sys.executable, decoder.__file__, *map(str, args), "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise QuantizeError(f"{what} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def choose_variant(rows: dict[str, dict[str, Any]], teacher_perplexity: float, max_ratio: float) -> tuple[str, str]:
    """(the candidate to ship, why), by the rule in this module's docstring. Each row: perplexity,
    size_bytes, decode_tokens_per_s and round_decode_tokens_per_s (at the shortest prompt)."""
    from edge_distill.measure.speed import quickest_beyond_noise

    limit = teacher_perplexity * max_ratio
    within = {name: row for name, row in rows.items() if row["perplexity"] <= limit}
    if not within:  # nothing keeps enough: the closest to the teacher, said so (a warning in the manifest)
        closest = min(rows, key=lambda name: rows[name]["perplexity"])
        return closest, (f"no candidate within {max_ratio:g}x the teacher's perplexity {teacher_perplexity:.2f}: "
                         f"the closest, at {rows[closest]['perplexity'] / teacher_perplexity:.2f}x")
    # As time per decoded token, lower is better, the shape quickest_beyond_noise compares.
    timed = [{"variant": name, "threads": 0, "size_bytes": row["size_bytes"],
              "p50": 1e3 / row["decode_tokens_per_s"],
              "round_p50s": [1e3 / rate for rate in row.get("round_decode_tokens_per_s", [])]}
             for name, row in within.items()]
    best, quickest = quickest_beyond_noise(timed, prefer=lambda row: row["size_bytes"])
    chosen = best["variant"]
    outside = sorted(set(rows) - set(within))
    tie = "" if best is quickest else (
        f"; tied with {quickest['variant']} ({rows[quickest['variant']]['decode_tokens_per_s']:.0f} tokens/s), "
        "which was not quicker in every interleaved round: the smaller file wins a tie")
    why = (f"{rows[chosen]['decode_tokens_per_s']:.0f} tokens/s, perplexity {rows[chosen]['perplexity']:.2f} "
           f"({rows[chosen]['perplexity'] / teacher_perplexity:.2f}x the teacher's fp32 {teacher_perplexity:.2f}, "
           f"within {max_ratio:g}x)" + tie + (f"; {', '.join(outside)} beyond the perplexity budget" if outside else ""))
    return chosen, why
