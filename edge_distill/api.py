"""The library entry points behind `edge-distill build` and `edge-distill sequence`: one call from
settings to a published output folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edge_distill.config import BuildConfig
from edge_distill.pipeline.build import build
from edge_distill.pipeline.runner import PipelineRun
from edge_distill.pipeline.publish import SEQUENCE_OUTPUT, check_out, publish
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
    return BuildResult(run, json.loads((out / "manifest.json").read_text()), sweep, device)


def sequence_distillation(out: Path, settings, text: Path | None = None, progress: Progress = log_progress, *,
                          cache_dir: Path, force: bool = False) -> dict:
    """The sequence stage (settings: distill.sequence.SequenceSettings) on the runner, published at
    `out`; an `out` that is not an earlier sequence output is refused before any training."""
    from edge_distill.pipeline.runner import run_stages
    from edge_distill.pipeline.stages.sequence import SequenceStage

    check_out(out, SEQUENCE_OUTPUT)
    run = run_stages([SequenceStage(settings, text)], cache_dir, force, progress=progress)
    files = run.outputs(SequenceStage)
    report = json.loads(files["sequence.json"].read_text())
    publish(files, out, SEQUENCE_OUTPUT)
    return report
