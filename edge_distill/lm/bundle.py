"""The bundle of `edge-distill llm`: the chosen KV-cache decoder as model.onnx, tokenizer.json,
generation.json (end-of-sequence ids, maximum length, the teacher's chat template), golden
generations (held-out prompts, their ids, greedy tokens and first-step logits: `verify` re-runs
greedy decoding and requires the same ids) and the manifest with every variant's figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill import __version__
from edge_distill.lm.settings import LMBuildSettings, LMData

GENERATION_FILES = ("model.onnx", "tokenizer.json", "generation.json", "golden.npz", "golden.json", "README.md")
# int4/int8 kernels differ across CPUs (accuracy level 4's int8 dot products, NEON against AVX):
# first-step logits are compared within this share of their largest magnitude; greedy ids exactly.
GOLDEN_ATOL_SHARE = 0.025


def generation_settings(teacher: dict[str, Any], settings: LMBuildSettings) -> dict[str, Any]:
    return {"eos_token_ids": teacher["eos_ids"], "max_length": 2 * settings.context,
            "max_length_why": f"twice the {settings.context}-token windows the student learned on",
            "chat_template": teacher["chat_template"], "do_sample": False,
            "sampling": {"temperature": 0.7, "top_k": 50, "top_p": 0.9},
            "add_special_tokens": True}


def write_golden_generations(model: Path, tokenizer_path: Path, prompts: list[str], new_tokens: int, out: Path,
                             threads: int) -> dict[str, Any]:
    """Each prompt's ids (tokenizer.json, special tokens as it adds them), greedy tokens and first-step
    logits from the shipped model, as golden.npz and its JSON copy; returns the manifest's `golden`."""
    from tokenizers import Tokenizer

    from edge_distill.device.decoder import Decoder, greedy
    from edge_distill.sessions import open_session

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ids = [tokenizer.encode(prompt).ids for prompt in prompts]
    decoder = Decoder(open_session(model, "the shipped model", threads=threads))
    runs = [greedy(decoder, row, new_tokens) for row in ids]
    longest = max(map(len, ids))
    arrays = {"prompt_ids": np.asarray([row + [-1] * (longest - len(row)) for row in ids], dtype=np.int64),
              "prompt_lengths": np.asarray([len(row) for row in ids], dtype=np.int64),
              "greedy_ids": np.asarray([tokens for tokens, _ in runs], dtype=np.int64),
              "first_logits": np.stack([logits for _, logits in runs]).astype(np.float32)}
    np.savez(out / "golden.npz", **arrays)
    (out / "golden.json").write_text(json.dumps({name: a.tolist() for name, a in arrays.items()}) + "\n")
    return {"kind": "generation", "npz": "golden.npz", "json": "golden.json", "count": len(prompts),
            "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.name} for name, a in arrays.items()},
            "prompts": prompts, "new_tokens": new_tokens,
            "tolerance": {"first_logits_atol": GOLDEN_ATOL_SHARE * float(np.abs(arrays["first_logits"]).max()),
                          "greedy_ids": "exact",
                          "why": f"{GOLDEN_ATOL_SHARE:.1%} of the largest |logit|: quantized kernels differ slightly "
                                 "across CPUs"},
            "source": "openings of held-out passages; prompt_ids padded with -1 to the longest; outputs from "
                      "ONNX Runtime's CPU provider on the build machine"}


def write_generator_bundle(inputs: dict[str, Path], settings: LMBuildSettings, data: LMData, out: Path) -> None:
    """The bundle's files in `out` from the llm stages' files (`inputs`)."""

    from edge_distill.bundle.reader import SCHEMA_VERSION
    from edge_distill.bundle.writer import label_model, profile_section, write_manifest
    from edge_distill.device.runner import describe_host
    from edge_distill.hashing import library_versions, sha256
    from edge_distill.measure.harness import measurement_note
    from edge_distill.onnx_model import load_onnx, model_tensors

    teacher = json.loads(inputs["teacher.json"].read_text())
    student = json.loads(inputs["student.json"].read_text())
    variants = json.loads(inputs["variants.json"].read_text())
    chosen = variants["chosen"]
    model = out / "model.onnx"
    label_model(inputs[f"decoder_{chosen}.onnx"], model, precision=chosen, task="text-generation")
    shutil.copyfile(inputs["tokenizer.json"], out / "tokenizer.json")
    generation = generation_settings(teacher, settings)
    (out / "generation.json").write_text(json.dumps(generation, indent=2, ensure_ascii=False) + "\n")
    golden = write_golden_generations(model, out / "tokenizer.json", data.prompts, settings.new_tokens, out,
                                      settings.threads)
    model_inputs, model_outputs = model_tensors(load_onnx(model), "the shipped model")
    host = describe_host()
    profile = profile_section(settings.profile) if settings.profile else {"name": None, "device": "any CPU"}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "edge-distill", "version": __version__, "command": "llm"},
        "task": "text-generation",
        "profile": profile,
        "runtime": {"intra_op_threads": settings.threads, "why": "the threads it was timed with here"},
        "model": {"file": "model.onnx", "sha256": sha256(model), "size_bytes": model.stat().st_size,
                  "precision": chosen, "why": variants["why"], "parameters": student["parameters"],
                  "teacher_parameters": teacher["parameters"], "layers": student["layers"],
                  "vocabulary": student["vocabulary"]},
        "inputs": [t.as_manifest() for t in model_inputs],
        "outputs": [t.as_manifest() for t in model_outputs],
        "labels": [],
        "generation": {"tokenizer": "tokenizer.json", "settings": "generation.json",
                       "max_length": generation["max_length"], "eos_token_ids": generation["eos_token_ids"],
                       "how": "tokenize the prompt with tokenizer.json; prefill with past tensors of length 0 "
                              "(attention_mask of ones, position_ids 0..n-1); then feed each chosen token with the "
                              "presents as the next pasts, until an end-of-sequence id or max_length "
                              "(docs/app-integration.md)"},
        "golden": golden,
        "teacher": teacher,
        "training": {"data": data.source, **student},
        "export": json.loads(inputs["export.json"].read_text()),
        "metrics": {"variants": variants["variants"], "teacher": {"perplexity": teacher["held_out"]["perplexity"]},
                    "held_out_tokens": teacher["held_out"]["tokens"], "threads": variants["threads"],
                    "max_perplexity_increase": variants["max_perplexity_increase"]},
        "measurement": {"host": host,
                        **({"measured_on": measurement_note(host, settings.profile.device)} if settings.profile else {}),
                        "how": "perplexity over the teacher's whole vocabulary on held-out windows; agreement: "
                               "the share of held-out positions where the top-1 next token is the teacher's; "
                               "time to first token (a prefill) and decode tokens/s at batch 1, medians of 3 "
                               "rounds in a process of its own"},
        "versions": library_versions(),
    }
    (out / "README.md").write_text(render_model_card(manifest))
    manifest["files"] = {name: {"sha256": sha256(out / name), "size_bytes": (out / name).stat().st_size}
                         for name in GENERATION_FILES}
    write_manifest(manifest, out / "manifest.json")


def render_model_card(manifest: dict[str, Any]) -> str:
    model, teacher = manifest["model"], manifest["teacher"]
    return "\n".join([
        f"# On-device text generator ({model['precision']} ONNX, {model['parameters']:,} parameters)",
        "",
        f"Distilled by edge-distill {manifest['generator']['version']} from {teacher['source']} "
        f"({teacher['parameters']:,} parameters) on {manifest['training']['data']}.",
        "",
        "## How to run it",
        manifest["generation"]["how"] + ".",
        "",
        f"Stop at any of the ids {manifest['generation']['eos_token_ids']}, or at {manifest['generation']['max_length']} "
        "tokens in all. `edge-distill generate . \"prompt\"` does it here.",
        "",
        "## Measured figures",
        "",
        render_variants(manifest),
        "",
        f"Shipped: {model['precision']}: {model['why']}.",
        "",
        f"`model.onnx` sha256: `{model['sha256']}`",
        "",
    ])


def render_variants(manifest: dict[str, Any]) -> str:
    """The table `edge-distill llm` prints: each variant's file, quality and speed."""
    metrics = manifest["metrics"]
    lines = [f"teacher perplexity on {metrics['held_out_tokens']:,} held-out tokens: "
             f"{metrics['teacher']['perplexity']:.2f}",
             f"{'variant':13s} {'file MB':>8s} {'ppl':>7s} {'agree':>6s} {'vs fp32':>7s} {'TTFT@64':>8s} "
             f"{'TTFT@256':>8s} {'tok/s':>7s} {'peak MB':>8s}"]
    for name, row in metrics["variants"].items():
        ttft = {t["prompt_tokens"]: t["time_to_first_token_ms"] for t in row["timing"]}
        lines.append(f"{name:13s} {row['size_bytes'] / 2**20:8.2f} {row['perplexity']:7.2f} "
                     f"{row['agreement_with_teacher']:6.3f} {row['agreement_with_fp32']:7.3f} "
                     + " ".join(f"{ttft.get(n, float('nan')):8.1f}" for n in (64, 256))
                     + f" {row['decode_tokens_per_s']:7.1f} {row['peak_rss_mb'] or 0:8.0f}")
    lines.append(f"agree: next-token top-1 agreement with the teacher; TTFT in ms; batch 1, {metrics['threads']} "
                 "thread(s)")
    return "\n".join(lines)
