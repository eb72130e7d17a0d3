"""Weight-only and dynamic quantization of a KV-cache decoder, each variant judged by measured
quality and speed, and the one to ship chosen by a stated rule.

Variants (ONNX Runtime's own tools, as recipes export/quantize.py applies: RECIPES):
- fp32: the export;
- int8_weights / int4_weights: MatMulNBits (onnxruntime.quantization.matmul_nbits_quantizer, RTN,
  symmetric, blocks of 32), weights 8 or 4 bits, activations fp32 (accuracy level 4 lets the
  kernel run int8 dot products on them, as onnxruntime-genai's CPU models do). Its other 4-bit
  algorithms lost more on the default SmolLM2 student (benchmarks/llm_weight_only.py: perplexity
  +10.8% RTN symmetric, +16.2% k-quant, +17.8% RTN asymmetric, +119.5% HQQ);
- int8_dynamic: quantize_dynamic, MatMul and the embedding Gather int8, activations quantized per
  run.

Quality: held-out perplexity over the teacher's whole vocabulary, and next-token top-1 agreement
with the teacher and with fp32. Speed: time to first token and decode tokens/s at batch 1, every
variant timed side by side in interleaved rounds in one process of its own (device/decoder.py, as
on a device); memory: each variant's peak in a process of its own, generating after the longest
prompt.

The rule (measure/speed.quickest_beyond_noise, the one speed rule of every pipeline): among the
variants whose perplexity is within `max_perplexity_increase` of fp32's, the quickest decode, where
it was quicker in every interleaved round; otherwise the variants it did not beat are tied with it,
and a tie goes to the smaller file (a generator's memory is the device's scarcest resource).
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

VARIANTS = ("fp32", "int8_weights", "int4_weights", "int8_dynamic")
PROMPT_LENGTHS = (64, 256)
NEW_TOKENS = 32
# Each variant's recipe (export/quantize.py applies them, and counts their quantized nodes).
RECIPES = {"int8_weights": QuantRecipe("weight_only", bits=8, block_size=32),
           "int4_weights": QuantRecipe("weight_only", bits=4, block_size=32),
           "int8_dynamic": QuantRecipe("dynamic", per_channel=False, op_types=("MatMul", "Gather"))}


def make_variant(name: str, fp32: Path, out: Path) -> dict[str, Any]:
    """Write variant `name` of the fp32 decoder to `out`; returns its recipe, op counts and
    quantized nodes."""
    from edge_distill.export.quantize import apply_recipe

    return apply_recipe(RECIPES[name], fp32, out)


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


def time_side_by_side(models: dict[str, Path], threads: int, prompt_lengths=PROMPT_LENGTHS,
                      new_tokens: int = NEW_TOKENS) -> dict[str, list[dict[str, Any]]]:
    """device/decoder.py run as a script (as on a device) timing every model in interleaved rounds:
    {name: its timing rows, one per prompt length, with each round's decode tokens/s}."""
    first, *others = models.values()
    result = _decoder_script([first, "--versus", *others, "--prompt-ids", "1", "--new-tokens", str(new_tokens),
                              "--threads", str(threads), "--time", ",".join(map(str, prompt_lengths))],
                             f"timing {', '.join(models)}")
    return {name: result["side_by_side"][path.name] for name, path in models.items()}


def peak_memory_in_own_process(model: Path, threads: int, prompt_length: int = max(PROMPT_LENGTHS),
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


def choose_variant(rows: dict[str, dict[str, Any]], max_perplexity_increase: float) -> tuple[str, str]:
    """(the variant to ship, why), by the rule in this module's docstring. Each row: perplexity,
    size_bytes, decode_tokens_per_s and round_decode_tokens_per_s (at the shortest prompt)."""
    from edge_distill.measure.speed import quickest_beyond_noise

    limit = rows["fp32"]["perplexity"] * (1 + max_perplexity_increase)
    within = {name: row for name, row in rows.items() if row["perplexity"] <= limit}
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
           f"within {max_perplexity_increase:.0%} of fp32's {rows['fp32']['perplexity']:.2f}" + tie
           + (f"; {', '.join(outside)} beyond the perplexity budget" if outside else ""))
    return chosen, why
