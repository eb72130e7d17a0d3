"""Distillation when labels are scarce, the teacher-output cache, and one vs two processes.

1. Label scarcity, per seed: a strong teacher (the built-in one, trained on every label of the
   train split, then handed over as a checkpoint as a user would) and a student that sees only
   `--labeled` labels, the rest of the train split being unlabeled transfer data:
   - scratch:  the student on the labels alone (distill.alpha = 0: the same steps and schedule as
               KD, without the teacher's signal);
   - kd:       logit KD on labeled + transfer samples (teacher outputs cached);
   - kd_aug:   KD with consistent augmentation (the teacher labels each augmented batch);
   - teacher:  the teacher itself.
   Test accuracy mean ± std over the seeds; gap closure = (best student - scratch) / (teacher - scratch).
2. Epoch time of KD with the teacher outputs cached vs computed on every batch (no augmentation).
3. Training samples/s with 1 and 2 processes (torchrun, DDP over gloo).

    python benchmarks/distillation.py --seeds 0 1 2 --json benchmarks/results/distillation.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from default_build import meets  # this folder is on sys.path when a benchmark script runs

from edge_distill.device.runner import describe_host
from edge_distill.config import load_config
from edge_distill.pipeline.build import run_pipeline

GOALS = {"gap_closed": ">= 0.95", "cache_speedup": ">= 3"}
VARIANTS = {
    "scratch": ["distill.alpha=0"],
    "kd": [],
    "kd_aug": ["distill.augment=true"],
}
# --methods: the other methods on top of KD, same data. Layer pairs are the last pooling output of
# each network at the same 2x2 resolution (student 32 channels, teacher 128).
METHODS = {
    "kd_hints": ['distill.hint_layers={"features.13" = "features.13"}'],
    "kd_attention": ['distill.hint_layers={"features.13" = "features.13"}', "distill.hint_weight=0",
                     "distill.attention_weight=100"],
    "kd_self_heads": ['distill.self_heads=["features.6"]'],
    "kd_born_again": ["distill.generations=2"],
    "kd_assistant": ["distill.assistants=[{width = 32, depth = 2}]"],
}


def distill(cache: Path, seed: int, overrides: list[str]) -> dict:
    config = load_config("x86-avx512", None, [f"seed={seed}", *overrides])
    run = run_pipeline(config, cache, "distill")
    return json.loads(run.artifacts["distill.json"].read_text())


def label_scarcity(cache: Path, seeds: list[int], labeled: int, variants: dict[str, list[str]]) -> dict:
    rows: dict[str, list[float]] = {name: [] for name in [*variants, "teacher"]}
    for seed in seeds:
        # The teacher: trained on every label of this seed's train split; then a checkpoint.
        full = run_pipeline(load_config("x86-avx512", None, [f"seed={seed}"]), cache, "teacher")
        teacher = json.loads(full.artifacts["teacher.json"].read_text())
        rows["teacher"].append(teacher["test_accuracy"])
        scarce = [f"data.labeled_samples={labeled}", f"teacher.checkpoint={full.artifacts['teacher.model']}"]
        for name, extra in variants.items():
            report = distill(cache, seed, [*scarce, *extra])
            rows[name].append(report["test_accuracy"])
            print(f"seed {seed}  {name:8s} test accuracy {report['test_accuracy']:.4f}", flush=True)
    summary = {name: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": v}
               for name, v in rows.items()}
    scratch, teacher = summary["scratch"]["mean"], summary["teacher"]["mean"]
    best = max((n for n in variants if n != "scratch"), key=lambda n: summary[n]["mean"])
    summary["best_method"] = best
    summary["gap_closed"] = (summary[best]["mean"] - scratch) / (teacher - scratch) if teacher > scratch else None
    return summary


# The default teacher, and a larger one: the cache saves one teacher forward pass per batch, so
# its gain grows with the teacher's cost relative to the student's training step.
TIMING_TEACHERS = {"default (64x3)": [], "large (128x4)": ["teacher.width=128", "teacher.depth=4", "teacher.epochs=3"]}


def cache_speedup(cache: Path, seed: int, epochs: int) -> dict:
    rows = {}
    for teacher, extra in TIMING_TEACHERS.items():
        times = {}
        for mode in ("cached", "per_step"):
            report = distill(cache, seed, [*extra, f"distill.teacher_outputs={mode}", f"distill.epochs={epochs}"])
            times[mode] = report["chain"][-1]["epoch_seconds_median"]
        rows[teacher] = {"epoch_seconds": times, "speedup": times["per_step"] / times["cached"]}
    return {"teachers": rows, "epochs": epochs}


def processes(cache: Path, seed: int, epochs: int) -> dict:
    rates = {}
    for nproc in (1, 2):
        report = distill(cache, seed, [f"distill.nproc={nproc}", f"distill.epochs={epochs}"])
        rates[nproc] = {"samples_per_second": report["chain"][-1]["samples_per_second"],
                        "val_accuracy": report["val_accuracy"]}
    return {"by_processes": rates, "speedup": rates[2]["samples_per_second"] / rates[1]["samples_per_second"],
            "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labeled", type=int, default=100)
    parser.add_argument("--timing-epochs", type=int, default=5)
    parser.add_argument("--methods", action="store_true", help="Also hints, attention, self-distillation, assistants.")
    parser.add_argument("--cache-dir", type=Path, help="Stage cache (default: a fresh temporary one).")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        variants = VARIANTS | (METHODS if args.methods else {})
        scarcity = label_scarcity(cache, args.seeds, args.labeled, variants)
        speed = cache_speedup(cache, args.seeds[0], args.timing_epochs)
        procs = processes(cache, args.seeds[0], args.timing_epochs)
    results = {
        "machine": describe_host(),
        "labeled_samples": args.labeled,
        "seeds": args.seeds,
        "label_scarcity": scarcity,
        "teacher_cache": speed,
        "processes": procs,
        "goals": GOALS,
        "met": {"gap_closed": scarcity["gap_closed"] is not None and meets(scarcity["gap_closed"], GOALS["gap_closed"]),
                "cache_speedup": {t: meets(row["speedup"], GOALS["cache_speedup"]) for t, row in speed["teachers"].items()}},
    }
    print(f"\nDigits, {args.labeled} labeled training samples, the rest unlabeled; test accuracy over seeds {args.seeds}")
    print(f"{'variant':14s} {'mean':>7s} {'std':>7s}")
    for name in [*variants, "teacher"]:
        row = scarcity[name]
        print(f"{name:14s} {row['mean']:7.4f} {row['std']:7.4f}")
    gap = scarcity["gap_closed"]
    print(f"gap closed by {scarcity['best_method']}: {gap:.3f} (goal {GOALS['gap_closed']})" if gap is not None
          else "gap closed: n/a (scratch is as good as the teacher)")
    for teacher, row in speed["teachers"].items():
        print(f"epoch time, teacher {teacher}: cached {row['epoch_seconds']['cached']:.3f} s, per step "
              f"{row['epoch_seconds']['per_step']:.3f} s: {row['speedup']:.1f}x (goal {GOALS['cache_speedup']})")
    print(f"samples/s: 1 process {procs['by_processes'][1]['samples_per_second']:.0f}, "
          f"2 processes {procs['by_processes'][2]['samples_per_second']:.0f} ({procs['speedup']:.2f}x)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
