"""Benchmark the default build: `edge-distill build --profile PROFILE` on the embedded digits data.

Runs the real command in a subprocess (so the times are what a user waits for): a cold build in an
empty cache, then a no-op rebuild. Prints the build's table and the acceptance ratios, and writes
everything as JSON. With several --seeds, each seed gets its own cold build and accuracies are
reported as mean and spread.

    python benchmarks/default_build.py --profile rpi4 --seeds 0 1 2 --json benchmarks/results/default_build.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Goals from the spine issue; checked here, never in tests.
GOALS = {
    "teacher_accuracy": ">= 0.98",
    "int8_accuracy_vs_teacher": ">= 0.99",
    "teacher_params_over_student": ">= 30",
    "teacher_file_over_int8_file": ">= 100",
    "teacher_p50_over_int8_p50": ">= 5",
    "cold_build_s": "<= 120",
    "noop_rebuild_s": "<= 5",
}


def timed_build(profile: str, out: Path, cache: Path, seed: int) -> tuple[float, dict]:
    command = [sys.executable, "-m", "edge_distill.cli", "build", "--profile", profile, "--out", str(out),
               "--cache-dir", str(cache), "--set", f"seed={seed}", "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"build failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def ratios(metrics: dict[str, dict]) -> dict[str, float]:
    teacher, int8 = metrics["teacher_fp32"], metrics["student_int8"]
    return {
        "teacher_accuracy": teacher["accuracy"],
        "int8_accuracy_vs_teacher": int8["accuracy"] / teacher["accuracy"],
        "teacher_params_over_student": teacher["params"] / int8["params"],
        "teacher_file_over_int8_file": teacher["size_bytes"] / int8["size_bytes"],
        "teacher_p50_over_int8_p50": teacher["latency_ms"]["p50"] / int8["latency_ms"]["p50"],
    }


def meets(value: float, goal: str) -> bool:
    op, bound = goal.split()
    return value >= float(bound) if op == ">=" else value <= float(bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="rpi4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/default_build.json"))
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cache, out = Path(tmp) / f"cache{seed}", Path(tmp) / f"dist{seed}"
            cold_s, payload = timed_build(args.profile, out, cache, seed)
            noop_s, again = timed_build(args.profile, out, cache, seed)
            assert all(step["cached"] for step in again["steps"]), "the no-op rebuild ran a stage"
            metrics = {m["variant"]: m for m in payload["metrics"]}
            runs.append({"seed": seed, "cold_build_s": cold_s, "noop_rebuild_s": noop_s, "metrics": metrics,
                         "ratios": ratios(metrics), "measured_on": payload["measured_on"]})
            print(f"seed {seed}: cold build {cold_s:.1f} s, no-op rebuild {noop_s:.2f} s", file=sys.stderr)

    first = runs[0]
    print(f"\nedge-distill build --profile {args.profile} (seed {first['seed']})\n{first['measured_on']}\n")
    header = f"{'variant':<14}{'params':>11}{'size B':>10}{'accuracy':>10}{'agree':>8}{'cold ms':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
    print(header)
    for name, m in first["metrics"].items():
        lat = m["latency_ms"]
        print(f"{name:<14}{m['params']:>11,}{m['size_bytes']:>10,}{m['accuracy']:>10.4f}{m['teacher_agreement']:>8.4f}"
              f"{lat['cold_start']:>9.3f}{lat['p50']:>9.3f}{lat['p90']:>9.3f}{lat['p99']:>9.3f}")

    print(f"\n{'acceptance':<30}{'goal':>8}" + "".join(f"{'seed ' + str(r['seed']):>10}" for r in runs))
    summary = {}
    for name, goal in GOALS.items():
        values = [r["ratios"][name] if name in r["ratios"] else r[name] for r in runs]
        summary[name] = {"goal": goal, "values": values, "all_met": all(meets(v, goal) for v in values)}
        cells = "".join(f"{v:>9.3f}{'' if meets(v, goal) else '!'}" + (" " if meets(v, goal) else "") for v in values)
        print(f"{name:<30}{goal:>8}{cells}")
    accuracy = {variant: [r["metrics"][variant]["accuracy"] for r in runs] for variant in first["metrics"]}
    if len(runs) > 1:
        print("\naccuracy over seeds (mean ± std): " + ", ".join(
            f"{v} {statistics.mean(a):.4f} ± {statistics.stdev(a):.4f}" for v, a in accuracy.items()))
    print("('!' marks a missed goal)")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"profile": args.profile, "goals": GOALS, "summary": summary, "runs": runs}, indent=2))
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
