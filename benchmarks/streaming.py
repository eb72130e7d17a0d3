"""Benchmark the image path at real size: memory and speed of the distill stage for 5,000 vs 50,000
96x96 RGB images, against a plain PyTorch loop.

For each size, a folder of generated JPEG images (10 classes: shapes on random backgrounds, with
noise) goes through the CLI as a user runs it, each command in its own process:
1. `edge-distill teacher` (data and teacher stages: the folder read once, the teacher's outputs
   written to disk), with a teacher checkpoint trained beforehand on the 5,000 images;
2. `edge-distill distill`, the stage measured: peak memory of its process tree (the training
   process and its data-loader workers), sampled every 50 ms as the sum of PSS (shared pages
   divided among the processes that share them); training images/s is the stage's own figure (distill.json);
3. a plain PyTorch loop over the same data loader, the same student and the same KD loss, one
   epoch, in its own process: images/s and the same memory figures;
4. `edge-distill build` for the remaining stages (export, simplify, quantize, benchmark, package).

Every stage's wall time comes from the commands' --json output.

    python benchmarks/streaming.py --json benchmarks/results/streaming.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

SIZES = (5_000, 50_000)
GOALS = {"peak_memory_ratio": "<= 1.2", "throughput_vs_plain_loop": ">= 0.85"}
STUDENT = ["student.family=mobilenet", "student.width=16", "student.depth=2"]
TEACHER = ["teacher.family=mobilenet", "teacher.width=32", "teacher.depth=3"]
COMMON = ["data.color_mode=rgb", "distill.epochs=1", "distill.batch_size=64", "benchmark.min_seconds=0.2"]

PLAIN_LOOP = r"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from edge_distill.config import load_config
from edge_distill.data.dataset import Dataset
from edge_distill.data.loader import read_batches, set_loader_workers
from edge_distill.distill.losses import kd_loss
from edge_distill.distill.trainer import set_torch_threads
from edge_distill.models.loading import build_from_config
from edge_distill.pipeline.build import run_pipeline

config = load_config(sys.argv[1], None, json.loads(sys.argv[2]))
run = run_pipeline(config, Path(sys.argv[3]), "teacher", progress=lambda _: None)
set_torch_threads(config.distill.threads)
set_loader_workers(config.distill.loader_workers)
dataset = Dataset.load(run.artifacts["dataset.npz"])
x, y = dataset.training_set()
y = torch.from_numpy(y)
soft = np.load(run.artifacts["teacher_logits.npy"], mmap_mode="r")[0]
torch.manual_seed(0)
student = build_from_config(config.student, "student", 0, dataset.input_shape, dataset.num_classes)
optimizer = torch.optim.AdamW(student.parameters(), lr=config.distill.lr, weight_decay=1e-4)
order = [b.numpy() for b in torch.randperm(len(y)).split(config.distill.batch_size)]
student.train()
start = time.perf_counter()
for x_b, index in read_batches(x, order):
    target = torch.from_numpy(np.ascontiguousarray(soft[index.numpy()]))
    loss = kd_loss(student(x_b), target, y[index], config.distill.temperature, config.distill.alpha)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
seconds = time.perf_counter() - start
print(json.dumps({"samples_per_second": len(y) / seconds, "epoch_seconds": seconds}))
"""


def make_images(root: Path, count: int, size: int = 96, seed: int = 0) -> Path:
    """`count` JPEGs in 10 class folders; made once per work folder (a marker says complete)."""
    import numpy as np
    from PIL import Image, ImageDraw

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        c = i % 10
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        r = int(rng.integers(12, 30))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = (cx - r, cy - r, cx + r, cy + r)
        shape = c % 5  # five shapes; classes 5-9 add a bar in the complementary colour
        if shape == 0:
            draw.ellipse(box, fill=color)
        elif shape == 1:
            draw.rectangle(box, fill=color)
        elif shape == 2:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
        elif shape == 3:
            draw.line([(cx - r, cy - r), (cx + r, cy + r)], fill=color, width=6)
            draw.line([(cx - r, cy + r), (cx + r, cy - r)], fill=color, width=6)
        else:
            draw.ellipse(box, outline=color, width=5)
        if c >= 5:
            draw.rectangle((0, 0, size, 8), fill=tuple(255 - v for v in color))
        noisy = np.asarray(image, np.int16) + rng.integers(-20, 21, (size, size, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(root / f"class{c}" / f"{i:06d}.jpg", quality=90)
    done.touch()
    return root


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(command: list[str]) -> tuple[str, dict]:
    """Run `command`; its stdout, and its process tree's peak PSS and process count."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"tree_pss": 0, "processes": 0}

    def sample() -> None:
        while process.poll() is None:
            pids = _tree(process.pid)
            peak["tree_pss"] = max(peak["tree_pss"], sum(_pss_bytes(p) for p in pids))
            peak["processes"] = max(peak["processes"], len(pids))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{err[-3000:]}")
    return out, peak


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_distill.cli", *args]


def settings(images: Path, teacher: Path | None) -> list[str]:
    extra = [f"teacher.checkpoint={teacher}"] if teacher else ["teacher.epochs=3"]
    return [f"data.source={images}", *COMMON, *STUDENT, *TEACHER, *extra]


def sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def one_size(count: int, work: Path, profile: str, teacher: Path, workers: int) -> dict:
    images = make_images(work / f"images-{count}", count)
    overrides = [*settings(images, teacher), f"distill.loader_workers={workers}"]
    cache = str(work / "cache")
    steps = {}
    out, _ = run_measured(cli("teacher", "-p", profile, *sets(overrides), "--cache-dir", cache, "--json", "-q"))
    steps |= {s["stage"]: s["seconds"] for s in json.loads(out)["steps"] if not s["cached"]}
    out, distill_memory = run_measured(cli("distill", "-p", profile, *sets(overrides), "--cache-dir", cache,
                                           "--json", "-q"))
    result = json.loads(out)
    steps |= {s["stage"]: s["seconds"] for s in result["steps"] if not s["cached"]}
    report = json.loads(Path(result["outputs"]["distill.json"]).read_text())
    out, plain_memory = run_measured([sys.executable, "-c", PLAIN_LOOP, profile, json.dumps(overrides), cache])
    plain = json.loads(out.strip().splitlines()[-1])
    out, _ = run_measured(cli("build", "-p", profile, *sets(overrides), "--cache-dir", cache,
                              "--out", str(work / f"bundle-{count}"), "--json", "-q"))
    built = json.loads(out)
    steps |= {s["stage"]: s["seconds"] for s in built["steps"] if not s["cached"]}
    shipped = next(m for m in built["metrics"] if m["variant"].startswith("student_int8"))
    return {
        "images": count,
        "stage_seconds": steps,
        "distill": {"samples_per_second": report["chain"][-1]["samples_per_second"],
                    "epoch_seconds": report["chain"][-1]["epoch_seconds_median"],
                    "loader_workers": report["loader_workers"], "torch_threads": report["torch_threads"],
                    "peak_tree_pss_mb": distill_memory["tree_pss"] / 2**20,
                    "processes": distill_memory["processes"],
                    "test_accuracy": report["test_accuracy"]},
        "plain_loop": {**plain, "peak_tree_pss_mb": plain_memory["tree_pss"] / 2**20},
        "student_int8_accuracy": shipped["accuracy"],
    }


def train_teacher(work: Path, profile: str) -> Path:
    """The 'pretrained' teacher: trained by the teacher stage on the 5,000 images, then handed over
    as a checkpoint, as a user brings one."""
    images = make_images(work / f"images-{SIZES[0]}", SIZES[0])
    out, _ = run_measured(cli("teacher", "-p", profile, *sets(settings(images, None)), "--cache-dir",
                              str(work / "cache"), "--json", "-q"))
    return Path(json.loads(out)["outputs"]["teacher.model"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--profile", default="x86-avx512")
    parser.add_argument("--workers", type=int, default=-1, help="distill.loader_workers (-1: one per core)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edge-distill-streaming"),
                        help="Images (kept: made once) and a stage cache (emptied at the start).")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    import shutil

    from edge_distill.device.runner import describe_host

    shutil.rmtree(args.work / "cache", ignore_errors=True)  # every stage cold; the images are kept
    teacher = train_teacher(args.work, args.profile)
    rows = [one_size(count, args.work, args.profile, teacher, args.workers) for count in args.sizes]
    small, large = rows[0], rows[-1]
    ratios = {
        "peak_memory_ratio": large["distill"]["peak_tree_pss_mb"] / small["distill"]["peak_tree_pss_mb"],
        "throughput_vs_plain_loop": {r["images"]: r["distill"]["samples_per_second"] / r["plain_loop"]["samples_per_second"]
                                     for r in rows},
    }
    print(f"\n{'images':>7s} {'distill MB':>10s} {'plain MB':>9s} {'distill img/s':>13s} {'plain img/s':>11s} "
          f"{'ratio':>6s} {'int8 acc':>8s}")
    for r in rows:
        d, p = r["distill"], r["plain_loop"]
        print(f"{r['images']:7d} {d['peak_tree_pss_mb']:10.0f} {p['peak_tree_pss_mb']:9.0f} "
              f"{d['samples_per_second']:13.0f} {p['samples_per_second']:11.0f} "
              f"{d['samples_per_second'] / p['samples_per_second']:6.2f} {r['student_int8_accuracy']:8.4f}")
    print(f"peak memory {large['images']} vs {small['images']} images: {ratios['peak_memory_ratio']:.2f}x "
          f"(goal {GOALS['peak_memory_ratio']})")
    for r in rows:
        print(f"stage seconds, {r['images']} images: " + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_seconds"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": describe_host(), "profile": args.profile, "rows": rows,
                                         "ratios": ratios, "goals": GOALS}, indent=2) + "\n")


if __name__ == "__main__":
    main()
