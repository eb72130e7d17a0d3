"""Students on a small corpus: which ways of making and training the `edge-distill llm` student earn
their place against the user's simplest alternative, the teacher itself at 4 or 8 bits.

Every row is the llm stages up to the fp32 decoder (lm/build.py) on the same text, judged on the
same held-out windows: perplexity over the teacher's whole vocabulary (a multiple of the teacher's
fp32 one: the build ships nothing past 1.5x) and next-token agreement with the teacher
(lm/quantize.held_out_quality). The teacher's own int8 and int4 graphs (llm-teacher-export) are
judged the same way. A row is a set of training settings that differ from the default's:

- the default: the first five layers and the last, 2 epochs, token-level KD;
- `--layer-choice influence`: the layers with the largest block influence on the text (ShortGPT);
- more epochs with early stopping on held-back training windows (`--patience`);
- sequence-level KD on the teacher's own continuations of the text, instead of it or added to it;
- fewer and more layers (4, 10, and 15: half the teacher's).

The corpus is yours (`--text`, a passage per line), or, with none given, the embedded default. The
one this was run on, which nothing here was tuned on, is the Debian package `fortunes` (fortune-mod's
quotations), its literature, wisdom, science and politics files, 1,585 passages of 12 words or more,
58,815 words:

    apt-get install fortunes
    python benchmarks/llm_small_corpus.py --fortunes --json benchmarks/results/llm_small_corpus.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from edge_distill.device.runner import describe_host  # noqa: E402
from edge_distill.lm.quantize import TEACHER_VARIANTS, held_out_quality  # noqa: E402
from edge_distill.lm.settings import LMBuildSettings  # noqa: E402
from edge_distill.lm.student import LMTrainingSettings  # noqa: E402

FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_FILES = ("literature", "wisdom", "science", "politics")

ROWS = {  # name: the training settings that differ from the default's (6 layers, first five + last, 2 epochs)
    "default": {},
    "influence": {"layer_choice": "influence"},
    "early-stopping": {"epochs": 8, "patience": 1},
    "influence+early-stopping": {"layer_choice": "influence", "epochs": 8, "patience": 1},
    "sequence-kd": {"kd": "sequence"},
    "token+sequence-kd": {"kd": "token+sequence"},
    "4-layers": {"layers": 4},
    "10-layers+early-stopping": {"layers": 10, "epochs": 8, "patience": 1},
    "15-layers": {"layers": 15},
}


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def fortunes_text(out: Path) -> Path:
    """The fortunes corpus as a --text file: one passage (a quotation of 12 words or more) per line."""
    passages = []
    for name in FORTUNE_FILES:
        text = (FORTUNES / name).read_text(encoding="utf-8", errors="replace")
        passages += [" ".join(p.split()) for p in text.split("\n%\n") if len(p.split()) >= 12]
    out.write_text("\n".join(passages) + "\n", encoding="utf-8")
    return out


def judged(path: Path, files: dict, threads: int) -> dict:
    quality, _ = held_out_quality(path, np.load(files["held_out.npy"]), np.load(files["teacher_top1.npy"]), threads)
    return quality


def student_row(name: str, args, text: Path | None, cache: Path) -> tuple[dict, dict]:
    """One set of training settings through the llm stages up to the fp32 decoder, judged."""
    from edge_distill.lm.teacher import default_teacher
    from edge_distill.lm.settings import LMData
    from edge_distill.pipeline.runner import run_stages
    from edge_distill.pipeline.stages.llm import llm_stages

    training = LMTrainingSettings(threads=args.threads, **ROWS[name])
    settings = LMBuildSettings(text=text, train_windows=args.train_windows, threads=args.threads, training=training)
    stages = [s for s in llm_stages(settings, default_teacher(), LMData(text))
              if s.name not in ("llm-quantize", "llm-package")]
    run = run_stages(stages, cache, progress=lambda line: log(f"{name}: {line}") if "running" in line else None)
    files = run.artifacts
    report = json.loads(files["student.json"].read_text())
    seconds = {step.stage: step.seconds for step in run.steps}
    row = {"row": name, **ROWS[name], **judged(files["decoder_fp32.onnx"], files, args.threads),
           "parameters": report["parameters"], "layers_from_teacher": report["layers_from_teacher"],
           "steps": report["steps"], "training_s": report["seconds"],
           "teacher_continuations_s": seconds.get("llm-teacher-text"),
           "early_stopping": report.get("early_stopping")}
    log(f"{name}: perplexity {row['perplexity']:.2f}, agreement {row['agreement_with_teacher']:.3f}")
    return row, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, help="Your corpus, a passage per line (default: the embedded text).")
    parser.add_argument("--fortunes", action="store_true", help="The Debian package fortunes' quotations as the text.")
    parser.add_argument("--train-windows", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default=",".join(ROWS), help="Which rows, comma-separated names.")
    parser.add_argument("--work", type=Path, help="Folder for the cache (default: a temporary one).")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        text = fortunes_text(work / "fortunes.txt") if args.fortunes else args.text
        rows, files = [], None
        for name in args.rows.split(","):
            row, files = student_row(name, args, text, work / "cache")
            rows.append(row)
        teacher_rows = [{"row": f"teacher {name.removeprefix('teacher_')}",
                         **judged(files[f"decoder_{name}.onnx"], files, args.threads)} for name in TEACHER_VARIANTS]
        teacher = json.loads(files["teacher.json"].read_text())
        train_windows = len(np.load(files["train.npy"], mmap_mode="r"))
    results = {"host": describe_host(), "threads": args.threads,
               "text": "fortunes (Debian): " + ", ".join(FORTUNE_FILES) if args.fortunes else str(text or "default"),
               "teacher_perplexity": teacher["held_out"]["perplexity"], "held_out_tokens": teacher["held_out"]["tokens"],
               "train_windows": train_windows, "rows": rows, "teacher_rows": teacher_rows}
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict) -> None:
    print(f"{results['host']['cpu']}, {results['threads']} thread(s); {results['text']}: {results['train_windows']} "
          f"training windows of 128 tokens; teacher fp32 perplexity {results['teacher_perplexity']:.2f} on "
          f"{results['held_out_tokens']:,} held-out tokens")
    print(f"{'row':30s} {'ppl':>8s} {'x teacher':>9s} {'agree':>6s} {'params':>11s} {'epochs':>6s} {'train s':>8s}")
    for r in results["rows"] + results["teacher_rows"]:
        stopped = r.get("early_stopping")
        epochs = f"{stopped['best_epoch']}/{stopped['epochs_run']}" if stopped else ""
        print(f"{r['row']:30s} {r['perplexity']:8.2f} {r['perplexity'] / results['teacher_perplexity']:9.2f} "
              f"{r['agreement_with_teacher']:6.3f} {r.get('parameters', 0):11,d} {epochs:>6s} "
              f"{r.get('training_s', 0):8.0f}")


if __name__ == "__main__":
    main()
