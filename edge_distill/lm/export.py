"""A causal language model to an ONNX decoder with a KV cache, in the layout transformers.js,
Optimum and onnxruntime-genai apps know:

  inputs   input_ids        int64  batch x sequence
           attention_mask   int64  batch x total_sequence (past + new; 0 marks padding)
           position_ids     int64  batch x sequence
           past_key_values.{i}.key / .value   float32  batch x kv_heads x past_sequence x head_dim
  outputs  logits           float32  batch x sequence x vocabulary (the teacher's whole vocabulary)
           present.{i}.key / .value           float32  batch x kv_heads x total_sequence x head_dim

A prefill feeds past tensors with past_sequence 0; each decode step feeds the presents back.

The forward is written here, on the model's own weights and modules (Llama's block: RMSNorm,
rotary positions, grouped-query attention, SiLU-gated MLP), rather than traced through
transformers' cache classes: a plain graph of past-in, present-out that any runtime runs.
A student with a cut vocabulary (lm/student.py) reads teacher ids through its map and writes the
teacher's whole vocabulary: the tokens it left out share its "other" row's probability evenly.
Checked against the transformers model on a prefill and on `steps` greedy decode steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge_distill.errors import ExportParityError, ModelError, describe

PAST, PRESENT = "past_key_values.{}.{}", "present.{}.{}"
PARITY_STEPS = 32
PARITY_ATOL = 1e-3  # largest |logit| difference, fp32 against PyTorch, on logits of magnitude ~10


def kv_decoder(model, kept: np.ndarray | None = None, vocab_size: int | None = None):
    """`model` (a transformers Llama-family ...ForCausalLM) as a torch module of
    (input_ids, attention_mask, position_ids, *past) -> (logits, *present); with `kept` (the teacher
    ids of the model's rows but the last, lm/student.py), reading and writing the teacher's
    `vocab_size` ids."""
    import torch

    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))

    class KVDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
            if kept is not None:
                unkept = vocab_size - len(kept)
                to_student = np.full(vocab_size, len(kept), dtype=np.int64)
                to_student[kept] = np.arange(len(kept))
                share = np.full(vocab_size, math.log(unkept) if unkept else 0.0, dtype=np.float32)
                share[kept] = 0.0
                self.register_buffer("to_student", torch.from_numpy(to_student))
                self.register_buffer("other_share", torch.from_numpy(share))  # log of the split, per teacher id

        def forward(self, input_ids, attention_mask, position_ids, *past):
            inner = self.model.model
            batch, length = input_ids.shape
            ids = self.to_student[input_ids] if kept is not None else input_ids
            x = inner.embed_tokens(ids)
            angles = position_ids[..., None].float() * self.inv_freq  # batch x sequence x head_dim/2
            cos = torch.cat([angles, angles], -1).cos()[:, None]
            sin = torch.cat([angles, angles], -1).sin()[:, None]
            total = attention_mask.shape[1]
            query_at = torch.arange(length) + (total - length)
            allowed = (torch.arange(total)[None, :] <= query_at[:, None])[None, None] & attention_mask[:, None, None, :].bool()
            bias = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, torch.finfo(x.dtype).min)
            presents = []
            for i, layer in enumerate(inner.layers):
                attention = layer.self_attn
                h = layer.input_layernorm(x)
                q = attention.q_proj(h).view(batch, length, heads, head_dim).transpose(1, 2)
                k = attention.k_proj(h).view(batch, length, kv_heads, head_dim).transpose(1, 2)
                v = attention.v_proj(h).view(batch, length, kv_heads, head_dim).transpose(1, 2)
                q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
                k, v = torch.cat([past[2 * i], k], 2), torch.cat([past[2 * i + 1], v], 2)
                presents += [k, v]
                k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
                scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim) + bias
                mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, heads * head_dim)
                x = x + attention.o_proj(mixed)
                x = x + layer.mlp(layer.post_attention_layernorm(x))
            logits = self.model.lm_head(inner.norm(x))
            if kept is not None:
                logits = logits.index_select(-1, self.to_student) - self.other_share
            return (logits, *presents)

    return KVDecoder().eval()


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], -1)


def cache_shape(model) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of the model's KV cache."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, config.num_key_value_heads, head_dim


def input_names(layers: int) -> list[str]:
    return ["input_ids", "attention_mask", "position_ids",
            *(PAST.format(i, kind) for i in range(layers) for kind in ("key", "value"))]


def output_names(layers: int) -> list[str]:
    return ["logits", *(PRESENT.format(i, kind) for i in range(layers) for kind in ("key", "value"))]


def export_decoder(model, path: Path, kept: np.ndarray | None = None, vocab_size: int | None = None,
                   opset: int = 18) -> None:
    """Write the KV-cache decoder of `model` to `path` (weights inside the file)."""
    import torch

    from edge_distill.export.onnx_io import quiet_libraries

    layers, kv_heads, head_dim = cache_shape(model)
    decoder = kv_decoder(model, kept, vocab_size)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    past = [torch.zeros(2, kv_heads, 2, head_dim) for _ in range(2 * layers)]
    example = (ids, torch.ones(2, 5, dtype=torch.int64), torch.tensor([[2, 3, 4]] * 2), *past)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes |= {name: {0: "batch", 2: "past_sequence"} for name in input_names(layers)[3:]}
    axes |= {name: {0: "batch", 2: "total_sequence"} for name in output_names(layers)[1:]}
    try:
        # The TorchScript exporter: the attention mask's length is past + new, a relation between
        # dynamic sizes torch.export cannot state for the dynamo one.
        with quiet_libraries(), torch.no_grad():
            torch.onnx.export(decoder, example, str(path), dynamo=False, input_names=input_names(layers),
                              output_names=output_names(layers), dynamic_axes=axes, opset_version=opset)
    except OSError:
        raise
    except Exception as e:
        raise ModelError(f"exporting the decoder failed: {describe(e)}",
                         "the model must be a Llama-family causal LM (llama, mistral, qwen2)") from None


def check_parity(model, path: Path, prompt: list[int], kept: np.ndarray | None = None,
                 steps: int = PARITY_STEPS) -> dict[str, float]:
    """The ONNX decoder against the transformers model (no cache, whole sequence each time): the
    prefill's logits, then `steps` greedy decode steps fed through the cache. Raises
    ExportParityError beyond PARITY_ATOL or on a different greedy token."""
    import torch

    from edge_distill.device.decoder import Decoder
    from edge_distill.sessions import open_session

    decoder = Decoder(open_session(path, "the exported decoder"))
    reference = kv_decoder(model, kept, decoder.vocab_size)
    sequence, worst = list(prompt), {"prefill": 0.0, "decode": 0.0}
    state = decoder.start(np.asarray([prompt], dtype=np.int64))
    for step in range(steps + 1):
        logits = state.logits[0]
        with torch.no_grad():
            ids = torch.tensor([sequence])
            expected = reference(ids, torch.ones_like(ids), torch.arange(len(sequence))[None],
                                 *[torch.zeros(1, decoder.kv_heads, 0, decoder.head_dim)] * (2 * decoder.layers)
                                 )[0][0, -1].numpy()
        diff = float(np.abs(logits - expected).max())
        key = "prefill" if step == 0 else "decode"
        worst[key] = max(worst[key], diff)
        if diff > PARITY_ATOL or int(logits.argmax()) != int(expected.argmax()):
            raise ExportParityError(f"the ONNX decoder differs from PyTorch at {key} step {step}: max |logit| diff "
                                    f"{diff:.2e} (tolerance {PARITY_ATOL:g})",
                                    "report this with the teacher's config.json")
        token = int(expected.argmax())
        sequence.append(token)
        state = decoder.advance(state, np.asarray([[token]], dtype=np.int64))
    # The reference itself against transformers' own forward, on the whole sequence.
    with torch.no_grad():
        ids = torch.tensor([sequence])
        own = model(input_ids=(reference.to_student[ids] if kept is not None else ids)).logits[0, -1]
        if kept is not None:
            own = own.index_select(-1, reference.to_student) - reference.other_share
        ours = reference(ids, torch.ones_like(ids), torch.arange(len(sequence))[None],
                         *[torch.zeros(1, decoder.kv_heads, 0, decoder.head_dim)] * (2 * decoder.layers))[0][0, -1]
    worst["transformers"] = float((own - ours).abs().max())
    if worst["transformers"] > PARITY_ATOL:
        raise ExportParityError(f"the decoder's forward differs from transformers' by {worst['transformers']:.2e}",
                                "report this with the teacher's config.json")
    return worst | {"steps": steps, "atol": PARITY_ATOL}
