"""`edge-distill build`, a command per build stage, and `sequence`: the pipelines that train a
model made here on images, signals or text."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from edge_distill.commands.options import (
    DEFAULT_CACHE, config_options, device_settings, emit, exit_if_any_device_failed, json_option,
    load_build_config, on_devices, progress_for, remote_options, remote_targets, show_warnings,
)


@click.command()
@config_options
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Bundle folder (default: dist/<profile>).")
@click.option("--max-latency-ms", type=float, help="Latency budget (p50): sweep student sizes, ship the smallest that fits.")
@click.option("--min-accuracy", type=float, help="Test-accuracy budget (0..1) for the size sweep.")
@click.option("--ship-best-effort", is_flag=True, default=None, help="When no size meets the budgets, ship the closest.")
@remote_options(many=True)
def build(cache_dir, force, as_json, quiet, out, max_latency_ms, min_accuracy, ship_best_effort, remote, ssh_config,
          remote_python, connect_timeout, command_timeout, **config_args):
    """Run every stage and write the bundle: model.onnx, manifest.json, golden vectors, README.md."""
    from edge_distill.api import build_bundle
    from edge_distill.bundle.kinds.classifier import metrics_table
    from edge_distill.pipeline.sweep import sweep_table

    budgets = [("budget.max_latency_ms", max_latency_ms, "--max-latency-ms"),
               ("budget.min_accuracy", min_accuracy, "--min-accuracy"),
               ("budget.ship_best_effort", ship_best_effort, "--ship-best-effort")]  # a budget implies a sweep (config)
    config = load_build_config(**config_args, extra=(*budgets, *device_settings(remote, ssh_config, remote_python,
                                                                                  connect_timeout, command_timeout)))
    targets = remote_targets(remote or config.device.host, ssh_config or config.device.ssh_config or None,
                              config.device.python, connect_timeout, command_timeout)
    out = out or Path("dist") / config.profile
    started = time.perf_counter()
    result = build_bundle(config, out, cache_dir, force=force, remotes=targets, progress=progress_for(as_json, quiet))
    seconds = time.perf_counter() - started
    metrics, measured_on = result.manifest["metrics"], result.manifest["measurement"]["measured_on"]
    steps = result.run.steps
    warnings = result.manifest.get("warnings", [])
    payload = {"out": str(out), "seconds": round(seconds, 2), "steps": [dataclasses.asdict(s) for s in steps],
               "metrics": metrics, "measured_on": measured_on, "warnings": warnings, "sweep": result.sweep,
               "device_benchmark": result.device}
    text = "\n".join([*([sweep_table(result.sweep), ""] if result.sweep else []),
                      metrics_table(metrics), "", measured_on,
                      *on_devices(result.device),
                      f"Bundle: {out}  ({seconds:.1f} s, {sum(s.cached for s in steps)}/{len(steps)} stages cached)"])
    emit(payload, as_json, text)
    show_warnings(warnings)
    if result.device and "devices" in result.device:
        exit_if_any_device_failed(result.device)


def stage_command(stage) -> click.Command:
    @config_options
    @click.option("--input", "provided", multiple=True, metavar="ARTIFACT=PATH",
                  help="Use your own file for an upstream artifact, e.g. student_fp32.onnx=model.onnx.")
    def command(cache_dir, force, as_json, quiet, provided, **config_args):
        from edge_distill.api import run_stage
        from edge_distill.pipeline.build import parse_provided

        config = load_build_config(**config_args)
        run = run_stage(config, cache_dir, stage.name, force=force, provided=parse_provided(provided),
                        progress=progress_for(as_json, quiet))
        outputs = run.steps[-1].outputs
        emit({"stage": stage.name, "outputs": outputs, "steps": [dataclasses.asdict(s) for s in run.steps]}, as_json,
              "\n".join(f"{artifact}: {path}" for artifact, path in outputs.items()))

    command.__doc__ = stage.description + " Earlier stages run as needed, from the cache when unchanged."
    return click.command(stage.name)(command)


@click.command()
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("dist/sequence"), show_default=True)
@click.option("--text", type=click.Path(path_type=Path), help="UTF-8 text (default: scikit-learn's installed dataset descriptions).")
@click.option("--steps", type=click.IntRange(min=1), default=400, show_default=True, help="Training steps per model.")
@click.option("--teacher-hidden", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--student-hidden", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--force", is_flag=True, help="Train again, ignoring the cache.")
@json_option
def sequence(out, text, steps, teacher_hidden, student_hidden, seed, cache_dir, force, as_json):
    """Sequence distillation: a small character-level GRU from a larger one (token-level KD), as ONNX."""
    from edge_distill.api import sequence_distillation
    from edge_distill.distill.sequence_settings import SequenceSettings

    settings = SequenceSettings(teacher_hidden=teacher_hidden, student_hidden=student_hidden, steps=steps, seed=seed)
    report = sequence_distillation(out, settings, text, progress=progress_for(as_json), cache_dir=cache_dir, force=force)
    rows = [f"{name:16s} {m['params']:>9,} params  {m['held_out_bits_per_char']:.3f} bits/char (held out)"
            for name, m in report["models"].items()]
    emit(report, as_json, "\n".join([*rows, f"ONNX student: {out / 'student.onnx'}"]))
