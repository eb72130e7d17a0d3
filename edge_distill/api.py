"""The library entry points behind the commands, one typed call each: `build_bundle`,
`optimize_bundle`, `text_bundle` and `sequence_distillation` from settings to a published output
folder (each a list of stages on pipeline/runner); `verify`, `predict` and `bench` on a bundle. The
CLI parses flags into these arguments and renders what they return, nothing more."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edge_distill.config import BuildConfig
from edge_distill.pipeline.build import build
from edge_distill.pipeline.runner import PipelineRun
from edge_distill.pipeline.publish import SEQUENCE_OUTPUT
from edge_distill.progress import Progress, log_progress
from edge_distill.pipeline.sweep import build_for_budget


@dataclass
class BuildResult:
    run: PipelineRun  # the stages of the shipped bundle
    manifest: dict
    sweep: dict | None = None  # the size sweep, for budget-driven builds
    device: dict | None = None  # figures from the device(s) over SSH, when named: bench_bundle's or bench_fleet's


def build_bundle(
    config: BuildConfig,
    out: Path,
    cache_dir: Path,
    force: bool = False,
    remotes=(),  # device.remote.RemoteTarget's: also benchmark the bundle on these devices, in parallel
    progress: Progress = log_progress,
) -> BuildResult:
    """Build and publish the bundle (sweeping student sizes when `budget.sweep`), then benchmark it
    on the devices given: one device's report (its failure an error), or with several, one row per
    device (device.fleet; a failed device is a row). Both paths check `out` before any stage runs."""
    sweep = None
    if config.budget.sweep:
        run, sweep = build_for_budget(config, out, cache_dir, force=force, progress=progress)
    else:
        run = build(config, out, cache_dir, force=force, progress=progress)
    device = bench_on_devices(out, remotes, progress)
    return BuildResult(run, json.loads((out / "manifest.json").read_text()), sweep, device)


def bench_on_devices(out: Path, remotes=(), progress: Progress = log_progress) -> dict | None:
    """A published bundle benchmarked on the devices given (device.remote.RemoteTarget's): one
    device's report (its failure an error), or with several, one row per device (device.fleet; a
    failed device is a row); written beside the bundle as device_benchmark.json. None without devices."""
    device = None
    if len(remotes) == 1:
        from edge_distill.device.remote import bench_bundle

        device = bench_bundle(out, remotes[0], progress=progress)
    elif remotes:
        from edge_distill.device.fleet import Device, bench_fleet

        device = bench_fleet(out, [Device(target.destination, target) for target in remotes], progress)
    if device is not None:
        # Beside the bundle's own files: not hashed in the manifest, which holds the build's figures.
        # Written whole or not at all: a temp file, then renamed.
        staged = out / ".device_benchmark.json.tmp"
        staged.write_text(json.dumps(device, indent=2) + "\n")
        staged.replace(out / "device_benchmark.json")
    return device


def optimize_bundle(config: BuildConfig, model: Path, calibration: Path, out: Path, *, cache_dir: Path,
                    shapes: dict[str, tuple[int, ...]] | None = None, min_snr_db: float = 20.0,
                    labels: str | None = None, force: bool = False, progress: Progress = log_progress) -> dict:
    """`edge-distill optimize`: an ONNX model made int8 within the budget, measured and published
    at `out`; returns the manifest (with the stages' records under "steps")."""
    from edge_distill.pipeline.stages.optimize import optimize_model

    return optimize_model(config, model, calibration, shapes or {}, out, min_snr_db, progress, labels,
                          cache_dir=cache_dir, force=force)


def text_bundle(settings, out: Path, *, cache_dir: Path, force: bool = False, remotes=(),
                progress: Progress = log_progress) -> dict:
    """`edge-distill text` (settings: text.settings.TextBuildSettings): the student distilled, made
    int8, judged and published at `out`, then benchmarked on the devices given; returns the manifest
    (with "steps", and "device_benchmark" where devices were given)."""
    from edge_distill.pipeline.stages.text import build_text_bundle

    manifest = build_text_bundle(settings, out, cache_dir, force, progress)
    device = bench_on_devices(out, remotes, progress)
    return manifest | ({"device_benchmark": device} if device is not None else {})


def generator_bundle(settings, out: Path, *, cache_dir: Path, force: bool = False, remotes=(),
                     progress: Progress = log_progress) -> dict:
    """`edge-distill llm` (settings: lm.settings.LMBuildSettings): the student distilled, exported with
    its KV cache, quantized by measured quality and published at `out`, then its decoding timed on
    the devices given; returns the manifest (with "steps", and "device_benchmark" where devices were given)."""
    from edge_distill.pipeline.stages.llm import build_generator_bundle

    manifest = build_generator_bundle(settings, out, cache_dir, force, progress)
    device = bench_on_devices(out, remotes, progress)
    return manifest | ({"device_benchmark": device} if device is not None else {})


def generate(bundle: Path, prompt: str, sampling=None, chat: bool = False):
    """The text a generator bundle continues `prompt` with (with `chat`, answers it with), piece by
    piece (bundle.generate)."""
    from edge_distill.bundle.generate import Sampling, generate_text

    return generate_text(bundle, prompt, sampling or Sampling(), chat=chat)


def verify(bundle: Path, emulate: str | None = None, progress: Progress = log_progress) -> list:
    """The checks of a bundle (bundle.integrity.Check): files, model, golden outputs; with
    `emulate="aarch64"` also the golden outputs on aarch64 onnxruntime under qemu."""
    from edge_distill.bundle.verify import verify_bundle

    checks = verify_bundle(bundle)
    if emulate and all(c.passed for c in checks):
        from edge_distill.device.emulate import emulated_check

        progress("running the golden inputs on aarch64 onnxruntime under qemu")
        checks.append(emulated_check(bundle))
    return checks


def predict(bundle: Path, inputs: list[str], top: int = 3) -> list[dict]:
    """Reference outputs for raw inputs of any kind of bundle (bundle.predict.predict_inputs)."""
    from edge_distill.bundle.predict import predict_inputs

    return predict_inputs(bundle, inputs, top)


def bench(bundle: Path, remotes=(), inventory: Path | None = None, overrides: dict | None = None,
          connect_timeout: float = 10.0, command_timeout: float = 600.0, progress: Progress = log_progress) -> dict:
    """A bundle's model timed with its profile's settings (`overrides` on top): here, on one
    device, or on several in parallel (repeated remotes and/or an inventory file: one row each)."""
    from edge_distill.device.fleet import Device, bench_fleet, read_inventory
    from edge_distill.device.remote import bench_bundle

    if inventory is None and len(remotes) <= 1:
        return bench_bundle(bundle, (list(remotes) or [None])[0], progress=progress, overrides=overrides)
    devices = [Device(target.destination, target) for target in remotes]
    devices += read_inventory(inventory, connect_timeout, command_timeout) if inventory else []
    return bench_fleet(bundle, devices, progress, overrides)


def sequence_distillation(out: Path, settings, text: Path | None = None, progress: Progress = log_progress, *,
                          cache_dir: Path, force: bool = False) -> dict:
    """The sequence stage (settings: distill.sequence.SequenceSettings) on the runner, published at
    `out`; an `out` that is not an earlier sequence output is refused before any training."""
    from edge_distill.pipeline.runner import run_and_publish
    from edge_distill.pipeline.stages.sequence import SequenceStage

    run_and_publish([SequenceStage(settings, text)], out, cache_dir, force, progress, SEQUENCE_OUTPUT)
    return json.loads((out / "sequence.json").read_text())
