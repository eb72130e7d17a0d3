"""The library entry points behind the commands, one typed call each: `build_bundle`,
`optimize_bundle`, `text_bundle`, `generator_bundle` and `sequence_distillation` from settings to
a published output folder (each pipeline's stages from pipeline/stages/, run and published by
pipeline/runner.run_and_publish, whose one caller this module is), and `run_stage`, one build
stage with what it needs; `generate`, `verify`, `predict` and `bench` on a bundle; `estimate` on
a model; `cache_info`, `cache_clean`, `profiles`, `profile` and `setup_emulator`. The commands
(edge_distill/commands/) parse flags into these arguments and render what they return, nothing
more."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_distill.config import BuildConfig
from edge_distill.errors import ConfigError
from edge_distill.pipeline.build import planned_stages
from edge_distill.pipeline.publish import SEQUENCE_OUTPUT
from edge_distill.pipeline.runner import PipelineRun, run_and_publish
from edge_distill.pipeline.sweep import build_for_budget
from edge_distill.progress import Progress, log_progress

if TYPE_CHECKING:
    from edge_distill.bundle.generate import Sampling
    from edge_distill.bundle.integrity import Check
    from edge_distill.distill.sequence_settings import SequenceSettings
    from edge_distill.targets.remote import RemoteTarget
    from edge_distill.lm.settings import LMBuildSettings
    from edge_distill.text.settings import TextBuildSettings


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
    remotes: tuple[RemoteTarget, ...] = (),  # also benchmark the bundle on these devices, in parallel
    progress: Progress = log_progress,
) -> BuildResult:
    """Build and publish the bundle (sweeping student sizes when `budget.sweep`), then benchmark it
    on the devices given: one device's report (its failure an error), or with several, one row per
    device (targets.fleet; a failed device is a row). Both paths check `out` before any stage runs."""
    sweep = None
    if config.budget.sweep:
        run, sweep = build_for_budget(config, out, cache_dir, force=force, progress=progress)
    else:
        run = run_and_publish(planned_stages(config), out, cache_dir, force, progress).run
    device = bench_on_devices(out, remotes, progress)
    return BuildResult(run, json.loads((out / "manifest.json").read_text()), sweep, device)


def bench_on_devices(out: Path, remotes: tuple[RemoteTarget, ...] = (), progress: Progress = log_progress
                     ) -> dict | None:
    """A published bundle benchmarked on the devices given (targets.remote.RemoteTarget's): one
    device's report (its failure an error), or with several, one row per device (targets.fleet; a
    failed device is a row); written beside the bundle as device_benchmark.json. None without devices."""
    device = None
    if len(remotes) == 1:
        from edge_distill.targets.remote import bench_bundle

        device = bench_bundle(out, remotes[0], progress=progress)
    elif remotes:
        from edge_distill.targets.fleet import Device, bench_fleet

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
    from edge_distill.pipeline.optimize import OptimizeSettings
    from edge_distill.pipeline.stages.optimize import optimize_stages

    settings = OptimizeSettings(config, model, calibration, dict(shapes or {}), min_snr_db, labels)
    manifest = run_and_publish(optimize_stages(settings, cache_dir), out, cache_dir, force, progress).report()
    progress(f"int8: {manifest['judgement']['summary']}")
    return manifest


def text_bundle(settings: TextBuildSettings, out: Path, *, cache_dir: Path, force: bool = False,
                remotes: tuple[RemoteTarget, ...] = (), progress: Progress = log_progress) -> dict:
    """`edge-distill text`: the student distilled, made int8, judged, timed against float (the
    quicker within the quality budget ships) and published at `out` (with a
    budget, one per `settings.sweep_layers` and the smallest that fits, with "sweep"), then
    benchmarked on the devices given; returns the manifest (with "steps", and "device_benchmark"
    where devices were given)."""
    from edge_distill.pipeline.stages.text import text_pipeline, text_row
    from edge_distill.text.bundle import quality_of

    def one(settings: TextBuildSettings, folder: Path) -> dict:
        return run_and_publish(text_pipeline(settings, progress), folder, cache_dir, force, progress).report()

    if settings.budget is None:
        manifest = one(settings, out)
    else:
        manifest = _layer_sweep(settings, out, remotes, lambda layers: dataclasses.replace(settings, layers=layers),
                                one, text_row, quality_of, "the shipped student at the longest length timed, batch 1",
                                "--max-latency-ms", progress)
    device = bench_on_devices(out, remotes, progress)
    return manifest | ({"device_benchmark": device} if device is not None else {})


def generator_bundle(settings: LMBuildSettings, out: Path, *, cache_dir: Path, force: bool = False,
                     remotes: tuple[RemoteTarget, ...] = (), progress: Progress = log_progress) -> dict:
    """`edge-distill llm`: the student distilled, exported with its KV cache, quantized by measured
    quality and published at `out` (with a budget, one per `settings.sweep_layers` and the smallest
    that fits, with "sweep"), then its decoding timed on the devices given; returns the manifest
    (with "steps", and "device_benchmark" where devices were given)."""
    from edge_distill.pipeline.stages.llm import generator_quality, generator_row, llm_pipeline

    def one(settings: LMBuildSettings, folder: Path) -> dict:
        return run_and_publish(llm_pipeline(settings), folder, cache_dir, force, progress).report()

    def with_layers(layers: int) -> LMBuildSettings:
        return dataclasses.replace(settings, training=dataclasses.replace(settings.training, layers=layers))

    if settings.budget is None:
        manifest = one(settings, out)
    else:
        manifest = _layer_sweep(settings, out, remotes, with_layers, one, generator_row, generator_quality,
                                "ms per decoded token of the shipped variant at batch 1 (1000 / its median tokens/s)",
                                "--max-ms-per-token", progress)
    device = bench_on_devices(out, remotes, progress)
    return manifest | ({"device_benchmark": device} if device is not None else {})


def _layer_sweep(settings, out: Path, remotes, with_layers: Callable[[int], Any], one: Callable[[Any, Path], dict],
                 row: Callable[[dict], dict], quality: Callable[[dict], tuple[str, float]], latency: str,
                 latency_flag: str, progress: Progress) -> dict:
    """A student per layer count in `settings.sweep_layers` (pipeline/sweep.sweep_layers), the
    smallest within `settings.budget` published at `out`; its manifest with the sweep under "sweep"."""
    from edge_distill.pipeline.sweep import LayerSweep, sweep_layers

    if remotes:
        raise ConfigError("--remote: a budget sweep times its students here",
                          "run edge-distill bench BUNDLE --remote HOST on the bundle it ships")
    sweep = LayerSweep(lambda layers, folder: one(with_layers(layers), folder), row, quality, latency, latency_flag)
    manifest, report = sweep_layers(sweep, list(settings.sweep_layers), settings.budget, out, progress)
    return manifest | {"sweep": report}


def generate(bundle: Path, prompt: str, sampling: Sampling | None = None, chat: bool = False):
    """The text a generator bundle continues `prompt` with (with `chat`, answers it with), piece by
    piece (bundle.generate)."""
    from edge_distill.bundle.generate import Sampling, generate_text

    return generate_text(bundle, prompt, sampling or Sampling(), chat=chat)


def verify(bundle: Path, emulate: str | None = None, progress: Progress = log_progress) -> list[Check]:
    """The checks of a bundle (bundle.integrity.Check): files, model, golden outputs; with
    `emulate="aarch64"` also the golden outputs on aarch64 onnxruntime under qemu."""
    from edge_distill.bundle.verify import verify_bundle

    checks = verify_bundle(bundle)
    if emulate and all(c.passed for c in checks):
        from edge_distill.targets.emulate import emulated_check

        progress("running the golden inputs on aarch64 onnxruntime under qemu")
        checks.append(emulated_check(bundle))
    return checks


def predict(bundle: Path, inputs: list[str], top: int = 3) -> list[dict[str, Any]]:
    """Reference outputs for raw inputs of any kind of bundle (bundle.predict.predict_inputs)."""
    from edge_distill.bundle.predict import predict_inputs

    return predict_inputs(bundle, inputs, top)


def bench(bundle: Path, remotes: tuple[RemoteTarget, ...] = (), inventory: Path | None = None,
          overrides: dict[str, Any] | None = None,
          connect_timeout: float = 10.0, command_timeout: float = 600.0, progress: Progress = log_progress) -> dict:
    """A bundle's model timed with its profile's settings (`overrides` on top): here, on one
    device, or on several in parallel (repeated remotes and/or an inventory file: one row each)."""
    from edge_distill.targets.fleet import Device, bench_fleet, read_inventory
    from edge_distill.targets.remote import bench_bundle

    if inventory is None and len(remotes) <= 1:
        return bench_bundle(bundle, (list(remotes) or [None])[0], progress=progress, overrides=overrides)
    devices = [Device(target.destination, target) for target in remotes]
    devices += read_inventory(inventory, connect_timeout, command_timeout) if inventory else []
    return bench_fleet(bundle, devices, progress, overrides)


def sequence_distillation(out: Path, settings: SequenceSettings, text: Path | None = None,
                          progress: Progress = log_progress, *, cache_dir: Path, force: bool = False) -> dict:
    """The sequence stage on the runner, published at `out`; an `out` that is not an earlier
    sequence output is refused before any training. Returns sequence.json with the stage's record
    under "steps", as every pipeline's report has them."""
    from edge_distill.pipeline.stages.sequence import SequenceStage

    result = run_and_publish([SequenceStage(settings, text)], out, cache_dir, force, progress, SEQUENCE_OUTPUT)
    return json.loads((out / "sequence.json").read_text()) | {"steps": result.steps}


def run_stage(config: BuildConfig, cache_dir: Path, stage: str, *, force: bool = False,
              provided: dict[str, Path] | None = None, progress: Progress = log_progress) -> PipelineRun:
    """One build stage (`edge-distill quantize`, ...) with the earlier stages it needs, from the
    cache where unchanged; `provided`: the user's own files for upstream artifacts."""
    from edge_distill.pipeline.build import run_pipeline

    return run_pipeline(config, cache_dir, stage, force=force, provided=provided or {}, progress=progress)


def estimate(model: Path, config: BuildConfig, batch: int = 1, shapes: dict[str, tuple[int, ...]] | None = None,
             measure: bool = False, calibration: Path | None = None, progress: Progress = log_progress) -> dict:
    """The roofline latency estimate of `model` on the profile's device, per node and in total; with
    `measure`, also its p50 here (on the first sample of `calibration`, or zeros)."""
    from edge_distill.measure.harness import estimate_model

    if calibration is not None and not measure:
        raise ConfigError("--calibration: only --measure runs the model", "add --measure, or leave --calibration out")
    return estimate_model(model, config, batch, dict(shapes or {}), measure, calibration, progress=progress)


def cache_info(cache_dir: Path) -> dict:
    """Entries, size and last use per stage of the stage cache (nothing is created)."""
    from edge_distill.pipeline.cache import StageCache

    return StageCache(cache_dir).info()


def cache_clean(cache_dir: Path, remove_all: bool = False, unused_days: float | None = None) -> dict:
    """Staging folders of interrupted runs and damaged entries removed; with `remove_all` every
    entry, with `unused_days` those no run has used for that long."""
    from edge_distill.pipeline.cache import StageCache

    return StageCache(cache_dir).clean(remove_all, unused_days)


def profiles() -> dict[str, str]:
    """The shipped device profiles: name -> the device's description."""
    from edge_distill.config import load_config
    from edge_distill.profiles.catalog import list_profiles

    return {name: load_config(name).device.description for name in list_profiles()}


def profile(name: str) -> dict:
    """A profile's resolved sections (a shipped name or a .toml file): name, device, export,
    quantize, benchmark and budget."""
    from edge_distill.config import PROFILE_SECTIONS, load_config

    resolved = load_config(name).to_dict()
    return {"name": resolved["profile"], **{section: resolved[section] for section in PROFILE_SECTIONS}}


def setup_emulator(root: Path | None = None, progress: Progress = log_progress) -> Path:
    """Debian's arm64 Python and the aarch64 numpy/onnxruntime wheels that `verify --emulate
    aarch64` runs under qemu, fetched once into `root`; returns the folder."""
    from edge_distill.targets.emulate import default_root, setup_userland

    root = root or default_root()
    setup_userland(root, progress=progress)
    return root
