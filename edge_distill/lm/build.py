"""`edge-distill llm`: a pretrained causal language model distilled into a small on-device
generator: a KV-cache ONNX decoder, weight-only int8/int4 or fp32 chosen by measured quality,
with its tokenizer, generation settings and golden generations, in a bundle `verify` re-runs.

Its stages (pipeline/stages/llm.py, which also assembles and runs them) run on the one runner;
its settings and text are in lm/settings.py. What each stage calls is here:

  llm-teacher   train.npy, held_out.npy, teacher_topk_*.npy,   the text as token windows; the teacher's
                teacher_top1.npy, tokenizer.json, teacher.json    top-k targets, held-out perplexity
  llm-teacher-text  teacher_text*.npy                         kd "sequence", "token+sequence": the teacher's own
                                                                continuations of the windows' openings
  llm-teacher-export  decoder_teacher_int{8,4}_weights.onnx    the teacher at 8 and 4 bits (the same builder):
                teacher_genai_config.json                       the candidates a student must beat
  llm-student   student/{config.json, model.safetensors,       the student made from the teacher's
                vocab.npy}, student.json                        layers and the text's tokens, distilled
  llm-export    decoder_fp32.onnx, genai_config.json,          the KV-cache decoder (onnxruntime-genai's
                export.json                                     builder), checked against PyTorch
  llm-quantize  decoder_<variant>.onnx, variants.json          int8/int4 weights by the same builder; each
                                                                variant judged and timed; one chosen
  llm-package   the bundle's files                             write_generator_bundle
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge_distill.errors import ConfigError
from edge_distill.lm.settings import CONTINUATION_BATCH, CONTINUATION_FILES, LMBuildSettings, LMData
from edge_distill.lm.student import LMTrainingSettings
from edge_distill.lm.teacher import TeacherSource, teacher_facts

def check_teacher_and_text(source: TeacherSource, settings: LMBuildSettings, data: LMData) -> None:
    """The teacher is a causal LM edge-distill exports, with an end-of-sequence token and room for
    the context, and the text makes training and held-out windows: each a one-line error, raised
    before anything is written (read only when some stage will run: a GGUF header takes seconds)."""
    if settings.profile is not None:  # a cuda profile without CUDA in this onnxruntime: refused before any work
        from edge_distill.measure.harness import check_providers

        check_providers(settings.profile.benchmark.providers, settings.profile.benchmark.allow_cpu_fallback)
    facts = teacher_facts(source)
    if facts.layers and settings.training.layers > facts.layers:  # before anything is made of that size
        raise ConfigError(f"--layers {settings.training.layers}: the teacher has {facts.layers}",
                          f"use --layers {facts.layers} or less")
    if facts.context_length and settings.context > facts.context_length:  # 0: the teacher does not say
        raise ConfigError(f"--context {settings.context}: the teacher reads at most {facts.context_length} tokens",
                          f"use --context {facts.context_length} or less")
    text_windows(source, settings, data)


def text_windows(source: TeacherSource, settings: LMBuildSettings, data: LMData):
    """(training windows, held-out windows) of the text in the teacher's tokens (lm/data.py)."""
    from edge_distill.lm.data import split_windows
    from edge_distill.lm.teacher import load_tokenizer

    return split_windows(load_tokenizer(source), data.train, data.held_out, teacher_facts(source).eos_ids[0],
                         settings.context, settings.train_windows, settings.held_out_windows,
                         f"--text {settings.text}" if settings.text else data.source)


def score_with_teacher(source: TeacherSource, settings: LMBuildSettings, data: LMData, out: Path, progress) -> None:
    """llm-teacher: token windows of the text, the teacher's top-k targets on the training windows,
    and its held-out perplexity and top-1 tokens."""
    import numpy as np
    import torch

    from edge_distill.hashing import hash_path
    from edge_distill.lm.data import teacher_held_out, write_teacher_targets
    from edge_distill.lm.teacher import load_teacher, tokenizer_json

    from edge_distill.distill.distributed import training_device

    torch.set_num_threads(settings.threads)
    progress(f"llm: {data.source}: {len(data.train)} training passages, {len(data.held_out)} held-out passages")
    teacher = load_teacher(source)
    train, held_out = text_windows(source, settings, data)
    np.save(out / "train.npy", train)
    np.save(out / "held_out.npy", held_out)
    progress(f"teacher: scoring {train.size - len(train):,} training tokens (top {settings.top_k})")
    try:
        teacher.model.to(training_device())  # a GPU where there is one; the CPU again for later stages
        write_teacher_targets(teacher.model, train, settings.top_k, 8, out / "teacher_topk_ids.npy",
                              out / "teacher_topk_logprobs.npy", progress)
        perplexity, top1 = teacher_held_out(teacher.model, held_out, 8)
    finally:
        teacher.model.to("cpu")
    np.save(out / "teacher_top1.npy", top1)
    (out / "tokenizer.json").write_text(tokenizer_json(teacher.tokenizer), encoding="utf-8")
    facts = teacher.facts
    report = {"source": source.path.name, "format": "gguf" if source.gguf else "transformers folder",
              "sha256": hash_path(source.path), "architecture": facts.architecture, "layers": facts.layers,
              "parameters": teacher.parameters, "vocab_size": facts.vocab_size, "eos_ids": list(facts.eos_ids),
              "context_length": facts.context_length, "chat_template": facts.chat_template,
              "held_out": {"perplexity": perplexity, "tokens": int(held_out[:, 1:].size)},
              "train_tokens": int(train[:, 1:].size), "data": data.source}
    (out / "teacher.json").write_text(json.dumps(report, indent=2))


def write_continuations(source: TeacherSource, settings: LMBuildSettings, inputs, out: Path, progress) -> None:
    """llm-teacher-text (kd "sequence"): the teacher's own continuations of the training windows."""
    import numpy as np
    import torch

    from edge_distill.lm.data import write_teacher_continuations
    from edge_distill.lm.teacher import load_teacher

    from edge_distill.distill.distributed import training_device

    torch.set_num_threads(settings.threads)
    train = np.load(inputs["train.npy"], mmap_mode="r")
    progress(f"teacher: continuing {len(train):,} windows from their first {settings.training.prompt_tokens} tokens")
    teacher = load_teacher(source).model
    try:
        write_teacher_continuations(teacher.to(training_device()), train, settings.training.prompt_tokens,
                                    settings.top_k, CONTINUATION_BATCH, settings.training.seed,
                                    tuple(out / name for name in CONTINUATION_FILES), progress)
    finally:
        teacher.to("cpu")  # load_teacher's copy, shared with later stages


def distil_student(source: TeacherSource, training: LMTrainingSettings, inputs, out: Path, progress,
                   writer: bool = True) -> None:
    """llm-student: the student made from the teacher and the text's tokens, distilled on the text
    (or, kd "sequence", on the teacher's continuations of it). Under torchrun every process trains
    (the same weights, DistributedDataParallel) and the `writer` writes."""
    import numpy as np

    from edge_distill.lm.student import (INFLUENCE_WINDOWS, block_influence, kept_vocabulary, layer_choice,
                                         make_student, parameter_count, save_student, train_student)
    from edge_distill.lm.teacher import load_teacher

    teacher_report = json.loads(inputs["teacher.json"].read_text())
    text = np.load(inputs["train.npy"], mmap_mode="r")
    kept = kept_vocabulary(np.asarray(text), teacher_report["vocab_size"], training.vocab, training.min_token_count,
                           tuple(teacher_report["eos_ids"]))
    teacher = load_teacher(source).model
    influence = block_influence(teacher, text[:INFLUENCE_WINDOWS]) if training.layer_choice == "influence" else None
    layers = layer_choice(teacher.config.num_hidden_layers, training.layers, influence)
    student = make_student(teacher, kept, training, layers)
    progress(f"student: {training.layers} layer(s) of the teacher's ({', '.join(map(str, layers))}), {len(kept):,} of "
             f"{teacher_report['vocab_size']:,} tokens, {parameter_count(student):,} parameters")
    text_files = ("train.npy", "teacher_topk_ids.npy", "teacher_topk_logprobs.npy")
    train, *targets = (np.load(inputs[name], mmap_mode="r") for name in
                       (CONTINUATION_FILES if training.kd == "sequence" else text_files))
    if training.kd == "token+sequence":  # the teacher's text added to the user's (in memory: top-k, not logits)
        more = [np.load(inputs[name], mmap_mode="r") for name in CONTINUATION_FILES]
        # the user's text last: early stopping holds back the last windows (lm/student.held_back_windows)
        train, *targets = (np.concatenate([b, a]) for a, b in zip((train, *targets), more))
    report = train_student(student, train, tuple(targets), kept, teacher_report["vocab_size"], training, progress,
                           teacher=teacher if training.kd == "on-policy" else None)
    if not writer:
        return
    save_student(student, kept, out / "student")
    report |= {"trained_on": {"sequence": "the teacher's continuations",
                              "token+sequence": "the text and the teacher's continuations"}.get(training.kd, "the text"),
               "parameters": parameter_count(student), "layers": training.layers, "layers_from_teacher": layers,
               **({"block_influence": [round(float(v), 5) for v in influence]} if influence is not None else {}),
               "vocabulary": len(kept),
               "teacher_parameters": teacher_report["parameters"], "settings": dataclasses.asdict(training)}
    (out / "student.json").write_text(json.dumps(report, indent=2))


def distil_student_worker(spec: dict, progress, writer: bool) -> None:
    """One torchrun worker of llm-student (distill/distributed.WORKERS["llm-student"]): the node's
    threads shared among its processes."""
    from edge_distill.distill.distributed import threads_per_process

    training = LMTrainingSettings(**spec["training"])
    share = threads_per_process(training.threads)
    distil_student(TeacherSource(Path(spec["teacher"])), dataclasses.replace(training, threads=share),
                   {name: Path(path) for name, path in spec["inputs"].items()}, Path(spec["out"]), progress, writer)


def export_student(inputs, out: Path, progress) -> None:
    """llm-export: the student's fp32 KV-cache decoder by onnxruntime-genai's builder, with
    genai_config.json, checked against PyTorch on a held-out prompt."""
    import numpy as np

    from edge_distill.lm.export import build_decoder, check_parity
    from edge_distill.lm.settings import GENAI_CONFIG
    from edge_distill.lm.student import load_student

    vocab_size = json.loads(inputs["teacher.json"].read_text())["vocab_size"]
    folder = inputs["student/config.json"].parent
    student, kept = load_student(folder)
    genai = build_decoder(folder, inputs["tokenizer.json"], out / "decoder_fp32.onnx", "fp32", kept, vocab_size,
                          progress)
    (out / GENAI_CONFIG).write_text(json.dumps(genai, indent=2))
    prompt = np.load(inputs["held_out.npy"])[0, :16].tolist()
    parity = check_parity(student, out / "decoder_fp32.onnx", prompt, kept)
    progress(f"export: prefill and {parity['steps']} decode steps match PyTorch (max |logit| diff "
             f"{max(parity['prefill'], parity['decode']):.1e})")
    from importlib.metadata import version

    (out / "export.json").write_text(json.dumps(
        {"parity": parity, "exporter": f"onnxruntime-genai {version('onnxruntime-genai')} model builder"}, indent=2))


def export_teacher(source: TeacherSource, inputs, out: Path, progress) -> None:
    """llm-teacher-export: the teacher itself at 8 and 4 bits by the same builder, whole vocabulary:
    the user's simplest alternative, on the same table as the students (lm/quantize.choose_variant)."""
    import tempfile

    from edge_distill.lm.quantize import TEACHER_VARIANTS, make_variant
    from edge_distill.lm.settings import GENAI_CONFIG

    with tempfile.TemporaryDirectory(prefix=".teacher-", dir=out) as scratch:
        folder = plain_teacher_folder(source, Path(scratch))
        report = {}
        for name in TEACHER_VARIANTS:
            progress(f"teacher: {name} by onnxruntime-genai's builder")
            report[name] = make_variant(name, folder, inputs["tokenizer.json"], out / f"decoder_{name}.onnx")
    (out / f"teacher_{GENAI_CONFIG}").write_text(json.dumps(report[TEACHER_VARIANTS[0]].pop("genai_config"), indent=2))
    for name in TEACHER_VARIANTS[1:]:
        report[name].pop("genai_config")
    (out / "teacher_export.json").write_text(json.dumps(report, indent=2))


def plain_teacher_folder(source: TeacherSource, scratch: Path) -> Path:
    """The teacher as a transformers folder the builder reads: its own, or a GGUF teacher
    dequantized to fp32 and saved in `scratch`."""
    if not source.gguf:
        return source.path
    from edge_distill.lm.teacher import load_teacher

    model = load_teacher(source).model
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # dequantized from GGUF: saved as plain fp32 weights
    plain = type(model)(type(model.config).from_dict(config))
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(str(scratch / "teacher"), safe_serialization=True)
    return scratch / "teacher"


def quantize_and_judge(inputs, settings: LMBuildSettings, out: Path, progress) -> None:
    """llm-quantize: the student's int8/int4 variants made; every candidate (the student's variants
    and the teacher's) judged on the held-out windows, its peak memory measured, all timed side by
    side in interleaved rounds in a process of their own; the one to ship chosen (lm/quantize.py)."""
    import numpy as np

    from edge_distill.device.decoder import prompt_lengths
    from edge_distill.lm.quantize import (NEW_TOKENS, TEACHER_VARIANTS, VARIANTS, choose_variant, held_out_quality,
                                          make_variant, peak_memory_in_own_process, time_side_by_side)
    from edge_distill.lm.student import load_vocabulary

    held_out, teacher_top1 = np.load(inputs["held_out.npy"]), np.load(inputs["teacher_top1.npy"])
    teacher = json.loads(inputs["teacher.json"].read_text())
    vocab_size, lengths = teacher["vocab_size"], prompt_lengths(teacher["context_length"], NEW_TOKENS)
    folder = inputs["student/config.json"].parent
    paths = {"fp32": inputs["decoder_fp32.onnx"]} | {name: out / f"decoder_{name}.onnx" for name in VARIANTS[1:]} | {
        name: inputs[f"decoder_{name}.onnx"] for name in TEACHER_VARIANTS}
    made = {name: json.loads(inputs["teacher_export.json"].read_text())[name] for name in TEACHER_VARIANTS}
    rows, fp32_top1 = {}, None
    for name, path in paths.items():
        if name in VARIANTS[1:]:
            progress(f"quantize: {name} by onnxruntime-genai's builder")
            made[name] = make_variant(name, folder, inputs["tokenizer.json"], path, load_vocabulary(folder), vocab_size)
        quality, top1 = held_out_quality(path, held_out, teacher_top1, settings.threads)
        fp32_top1 = top1 if fp32_top1 is None else fp32_top1
        rows[name] = {"model": "teacher" if name in TEACHER_VARIANTS else "student", "size_bytes": path.stat().st_size,
                      **quality, "quantized_nodes": made.get(name, {}).get("quantized_nodes", 0),
                      **({} if name in TEACHER_VARIANTS else {"agreement_with_fp32": float((top1 == fp32_top1).mean())}),
                      "peak_rss_mb": peak_memory_in_own_process(path, settings.threads, max(lengths))}
        progress(f"judge: {name}: perplexity {quality['perplexity']:.2f}, peak memory "
                 f"{rows[name]['peak_rss_mb'] or 0:.0f} MB")
    progress(f"time: {', '.join(paths)} side by side in interleaved rounds")
    for name, timing in time_side_by_side(paths, settings.threads, lengths, rounds=settings.timing_rounds).items():
        rows[name] |= {"decode_tokens_per_s": timing[0]["decode_tokens_per_s"],
                       "round_decode_tokens_per_s": timing[0]["round_decode_tokens_per_s"], "timing": timing}
        progress(f"time: {name}: {rows[name]['decode_tokens_per_s']:.0f} tokens/s")
    teacher_perplexity = teacher["held_out"]["perplexity"]
    chosen, why = choose_variant(rows, teacher_perplexity, settings.max_perplexity_ratio)
    (out / "variants.json").write_text(json.dumps({"variants": rows, "chosen": chosen, "why": why,
                                                   "threads": settings.threads,
                                                   "teacher_perplexity": teacher_perplexity,
                                                   "max_perplexity_ratio": settings.max_perplexity_ratio},
                                                  indent=2))
