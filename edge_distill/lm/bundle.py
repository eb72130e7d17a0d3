"""The bundle of `edge-distill llm`: the chosen KV-cache decoder as model.onnx, tokenizer.json,
generation.json (end-of-sequence ids, maximum length, the teacher's chat template),
genai_config.json and tokenizer_config.json (what onnxruntime-genai's runtime and its Java,
Objective-C and C# APIs read), golden
generations (held-out prompts, their ids, greedy tokens and first-step logits: `verify` re-runs
greedy decoding and requires the same ids) and the manifest with every variant's figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill import __version__
from edge_distill.lm.settings import GENAI_CONFIG, GENAI_TOKENIZER_CONFIG, LMBuildSettings, LMData

GENAI_MAX_LENGTH = 1024
GENERATION_FILES = ("model.onnx", "tokenizer.json", "generation.json", GENAI_CONFIG, GENAI_TOKENIZER_CONFIG,
                    "golden.npz", "golden.json", "frontier.svg")  # + README.md


def generation_settings(teacher: dict[str, Any], settings: LMBuildSettings) -> dict[str, Any]:
    # The decoder's rotary table ends at the teacher's context length; a teacher that does not
    # state one gets twice the windows the student learned on.
    longest = teacher["context_length"] or 2 * settings.context
    return {"eos_token_ids": teacher["eos_ids"], "max_length": longest,
            "max_length_why": f"the teacher's context length (the student learned on {settings.context}-token windows, "
                              "so text far beyond them is weaker)" if teacher["context_length"] else
                              f"twice the {settings.context}-token windows the student learned on",
            "chat_template": teacher["chat_template"], "do_sample": False,
            "sampling": {"temperature": 0.7, "top_k": 50, "top_p": 0.9},
            "add_special_tokens": True}


def frontier(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The candidates no other beats on both perplexity and decode speed, quickest first."""
    def beaten(name: str) -> bool:
        mine = rows[name]
        return any(other["perplexity"] <= mine["perplexity"] and other["decode_tokens_per_s"] >= mine["decode_tokens_per_s"]
                   and (other["perplexity"], other["decode_tokens_per_s"]) != (mine["perplexity"], mine["decode_tokens_per_s"])
                   for other in rows.values())

    return sorted((name for name in rows if not beaten(name)), key=lambda name: -rows[name]["decode_tokens_per_s"])


def build_warnings(variants: dict[str, Any], teacher: dict[str, Any], settings: LMBuildSettings, kept,
                   tokenizer: Path, generation: dict[str, Any]) -> list[dict[str, str]]:
    """What a user must know before shipping: the model keeps too little of the teacher, the text
    filled fewer training windows than asked, the chat template needs tokens the student cut."""
    warnings = []
    chosen = variants["variants"][variants["chosen"]]
    ratio = chosen["perplexity"] / variants["teacher_perplexity"]
    if ratio > variants["max_perplexity_ratio"]:
        warnings.append({"kind": "quality", "message": (
            f"the shipped model keeps too little: held-out perplexity {chosen['perplexity']:.2f}, {ratio:.1f}x the "
            f"teacher's {variants['teacher_perplexity']:.2f} (budget {variants['max_perplexity_ratio']:g}x): no "
            "candidate met the budget; give more text, more --layers, or a larger --max-perplexity-ratio")})
    windows = teacher["train_tokens"] // settings.context
    if windows < settings.train_windows:
        warnings.append({"kind": "data", "message": (
            f"the text filled {windows:,} of the {settings.train_windows:,} training windows asked "
            f"({settings.context} tokens each): the student learned from {teacher['train_tokens']:,} tokens; give "
            "more text for a better student")})
    template = generation["chat_template"]
    if kept is not None and template:
        cut = chat_tokens_cut(template, tokenizer, kept)
        if cut:
            warnings.append({"kind": "chat", "message": (
                f"the chat template uses {len(cut)} token(s) the student cut from its vocabulary "
                f"({', '.join(map(repr, cut[:3]))}): --chat prompts read them as its shared 'other' token; train on "
                "chat-formatted text, or raise --vocab")})
    return warnings


def chat_tokens_cut(template: str | list, tokenizer: Path, kept) -> list[str]:
    """The tokens of a one-message chat, rendered by `template`, that are not among `kept`."""
    from tokenizers import Tokenizer

    from edge_distill.bundle.chat import render_chat
    from edge_distill.errors import EdgeDistillError

    text = template if isinstance(template, str) else next(
        (entry["template"] for entry in template if entry["name"] == "default"), None)
    try:
        rendered = render_chat(text, "Hello", tokenizer)
    except EdgeDistillError:  # a template that does not render is verify's and generate's to report
        return []
    encoded = Tokenizer.from_file(str(tokenizer)).encode(rendered, add_special_tokens=False)
    kept_ids = set(int(i) for i in kept)
    return list(dict.fromkeys(token for token, i in zip(encoded.tokens, encoded.ids) if i not in kept_ids))


def genai_settings(built: dict[str, Any], generation: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    """The builder's genai_config.json with the bundle's own generation settings: the same
    end-of-sequence ids, maximum length and greedy search that generation.json states."""
    model = built["model"] | {"eos_token_id": generation["eos_token_ids"], "pad_token_id": generation["eos_token_ids"][0],
                              "context_length": min(teacher["context_length"] or generation["max_length"],
                                                    built["model"]["context_length"])}
    # genai allocates the KV cache for search.max_length up front (past_present_share_buffer): at a
    # teacher's whole context that is 1.2 GB for Gemma 3 270M, so the default search stops at
    # GENAI_MAX_LENGTH and an app asks for more per request (context_length stays the model's).
    search = built["search"] | {"do_sample": False, "max_length": min(generation["max_length"], GENAI_MAX_LENGTH),
                                "top_k": 1, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0}
    return built | {"model": model, "search": search}


def write_generator_bundle(inputs: dict[str, Path], settings: LMBuildSettings, data: LMData, out: Path) -> None:
    """The bundle's files in `out` from the llm stages' files (`inputs`)."""

    from edge_distill.bundle.kinds.generation import frontier_svg, render_card, write_golden_generations
    from edge_distill.bundle.writer import finish_bundle, label_model, profile_section
    from edge_distill.device.runner import describe_host
    from edge_distill.hashing import sha256
    from edge_distill.measure.harness import measurement_note
    from edge_distill.onnx_model import load_onnx, model_tensors

    teacher = json.loads(inputs["teacher.json"].read_text())
    student = json.loads(inputs["student.json"].read_text())
    variants = json.loads(inputs["variants.json"].read_text())
    chosen = variants["chosen"]
    ships_teacher = variants["variants"][chosen]["model"] == "teacher"
    model = out / "model.onnx"
    label_model(inputs[f"decoder_{chosen}.onnx"], model, precision=chosen, task="text-generation")
    shutil.copyfile(inputs["tokenizer.json"], out / "tokenizer.json")
    generation = generation_settings(teacher, settings)
    (out / "generation.json").write_text(json.dumps(generation, indent=2, ensure_ascii=False) + "\n")
    built = inputs[f"teacher_{GENAI_CONFIG}" if ships_teacher else GENAI_CONFIG]
    genai = genai_settings(json.loads(built.read_text()), generation, teacher)
    (out / GENAI_CONFIG).write_text(json.dumps(genai, indent=2) + "\n")
    # genai's tokenizer opens tokenizer.json through this file; the chat template where it is one string.
    template = generation["chat_template"] if isinstance(generation["chat_template"], str) else None
    (out / GENAI_TOKENIZER_CONFIG).write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": generation["max_length"],
         **({"chat_template": template} if template else {})}, indent=2, ensure_ascii=False) + "\n")
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
                  "precision": chosen, "why": variants["why"], "source": "teacher" if ships_teacher else "student",
                  "parameters": teacher["parameters"] if ships_teacher else student["parameters"],
                  "teacher_parameters": teacher["parameters"],
                  "layers": teacher["layers"] if ships_teacher else student["layers"],
                  "vocabulary": teacher["vocab_size"] if ships_teacher else student["vocabulary"]},
        "inputs": [t.as_manifest() for t in model_inputs],
        "outputs": [t.as_manifest() for t in model_outputs],
        "labels": [],
        "generation": {"tokenizer": "tokenizer.json", "settings": "generation.json",
                       "max_length": generation["max_length"], "eos_token_ids": generation["eos_token_ids"],
                       "genai_config": GENAI_CONFIG,
                       "how": "tokenize the prompt with tokenizer.json; prefill with past tensors of length 0 "
                              "(attention_mask of ones); then feed each chosen token with the presents as the next "
                              "pasts, until an end-of-sequence id or max_length (docs/app-integration.md); or open "
                              "the folder with onnxruntime-genai (genai_config.json)"},
        "golden": golden,
        "teacher": teacher,
        "training": {"data": data.source, **student},
        "export": json.loads(inputs["export.json"].read_text()),
        "metrics": {"variants": variants["variants"], "teacher": {"perplexity": teacher["held_out"]["perplexity"]},
                    "held_out_tokens": teacher["held_out"]["tokens"], "threads": variants["threads"],
                    "max_perplexity_ratio": variants["max_perplexity_ratio"],
                    "frontier": frontier(variants["variants"])},
        "warnings": build_warnings(variants, teacher, settings, None if ships_teacher else
                                   np.load(inputs["student/vocab.npy"]), out / "tokenizer.json", generation),
        "measurement": {"host": host,
                        **({"measured_on": measurement_note(host, settings.profile.device)} if settings.profile else {}),
                        "how": "perplexity over the teacher's whole vocabulary on held-out windows; agreement: "
                               "the share of held-out positions where the top-1 next token is the teacher's; "
                               "time to first token (a prefill) and decode tokens/s at batch 1: every variant "
                               f"timed side by side in {settings.timing_rounds} interleaved rounds (medians) in one "
                               "process of their own; "
                               "peak memory of each generating in a process of its own"},
    }
    (out / "frontier.svg").write_text(frontier_svg(manifest), encoding="utf-8")
    finish_bundle(manifest, out, GENERATION_FILES, render_card)
