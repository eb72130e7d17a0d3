"""The bundle of `edge-distill llm`: the chosen KV-cache decoder as model.onnx, tokenizer.json,
generation.json (end-of-sequence ids, maximum length, the teacher's chat template), golden
generations (held-out prompts, their ids, greedy tokens and first-step logits: `verify` re-runs
greedy decoding and requires the same ids) and the manifest with every variant's figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edge_distill import __version__
from edge_distill.lm.settings import LMBuildSettings, LMData

GENERATION_FILES = ("model.onnx", "tokenizer.json", "generation.json", "golden.npz", "golden.json")  # + README.md


def generation_settings(teacher: dict[str, Any], settings: LMBuildSettings) -> dict[str, Any]:
    return {"eos_token_ids": teacher["eos_ids"], "max_length": 2 * settings.context,
            "max_length_why": f"twice the {settings.context}-token windows the student learned on",
            "chat_template": teacher["chat_template"], "do_sample": False,
            "sampling": {"temperature": 0.7, "top_k": 50, "top_p": 0.9},
            "add_special_tokens": True}


def write_generator_bundle(inputs: dict[str, Path], settings: LMBuildSettings, data: LMData, out: Path) -> None:
    """The bundle's files in `out` from the llm stages' files (`inputs`)."""

    from edge_distill.bundle.kinds.generation import render_card, write_golden_generations
    from edge_distill.bundle.writer import finish_bundle, label_model, profile_section
    from edge_distill.device.runner import describe_host
    from edge_distill.hashing import sha256
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
                               "time to first token (a prefill) and decode tokens/s at batch 1: every variant "
                               "timed side by side in 5 interleaved rounds (medians) in one process of their own; "
                               "peak memory of each generating in a process of its own"},
    }
    finish_bundle(manifest, out, GENERATION_FILES, render_card)
