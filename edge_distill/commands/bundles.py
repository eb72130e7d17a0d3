"""`edge-distill optimize`, `verify`, `predict`, `bench` and `estimate`: a model brought as it is,
and what any bundle is checked, run and measured with."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click


from edge_distill.commands.options import (
    BENCHMARK_FLAGS, DEFAULT_CACHE, FINITE_AT_LEAST_0, benchmark_options, benchmark_overrides, device_settings,
    emit, exit_if_any_device_failed, exit_if_golden_failed, json_option, progress_for, remote_options,
    remote_targets,
)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--profile", "-p", required=True, help="Device profile: its quantization format, threads and provider.")
@click.option("--calibration", type=click.Path(path_type=Path), required=True, metavar="SAMPLES",
              help="An .npz (or a folder of them, read a file at a time) with one array per model input, named as "
                   "the input: N samples of its shape. The last fifth is held out.")
@click.option("--shape", "shapes", multiple=True, metavar="NAME:DIMS",
              help="Concrete shape of an input with symbolic sizes, e.g. x:1x3x48x192 (repeat per input).")
@click.option("--min-snr", type=FINITE_AT_LEAST_0, default=20.0, show_default=True, metavar="DB",
              help="Without --labels, int8 ships only if every output's SNR against float is at least this.")
@click.option("--labels", metavar="NAME",
              help="The array of class indices in the calibration file(s), one per sample: int8 is then judged by "
                   "held-out accuracy against float's instead of SNR.")
@click.option("--max-accuracy-drop", type=FINITE_AT_LEAST_0, metavar="POINTS",
              help="With --labels: the most accuracy int8 may lose, in points (default: the profile's).")
@click.option("--distill", is_flag=True, default=None,
              help="Where post-training int8 misses the budget, train its weights and scales to match the float "
                   "model on the calibration samples (quantize.distill).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a profile value, e.g. quantize.per_channel=false.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder to write.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True,
              help="The stage cache: an unchanged rerun reads every step from it.")
@click.option("--force", is_flag=True, help="Run every step again, ignoring the cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@remote_options()
@benchmark_options("batch", "cold-starts", "warmup", "runs")
@json_option
def optimize(model: Path, profile: str, calibration: Path, shapes: tuple[str, ...], min_snr: float, labels: str | None,
             max_accuracy_drop: float | None, distill: bool | None, overrides: tuple[str, ...], out: Path,
             cache_dir: Path, force: bool, quiet: bool, as_json: bool, remote, ssh_config, remote_python, connect_timeout, command_timeout, **settings) -> None:
    """Quantize an ONNX model trained elsewhere to int8, judge and time it against float, and ship a verified bundle.

    Float and int8 are timed side by side at 1, 2, 4, ... up to the profile's threads: on the
    device with --remote (or the profile's device.host), else here when this host has the device's
    architecture. The fastest within budget ships, with its thread count.
    """
    from edge_distill.config import Setting, load_config
    from edge_distill.onnx_model import parse_shape
    from edge_distill.api import optimize_bundle
    from edge_distill.pipeline.optimize import render_summary

    flags = {field: flag for flag, field, _, _ in BENCHMARK_FLAGS}
    given = [Setting(f"benchmark.{field}", value, f"--{flags[field]}")
             for field, value in benchmark_overrides(settings).items()]
    if max_accuracy_drop is not None:
        given.append(Setting("quantize.max_accuracy_drop", max_accuracy_drop, "--max-accuracy-drop"))
    if distill:
        given.append(Setting("quantize.distill", True, "--distill"))
    given += [Setting(*setting) for setting in device_settings(remote, ssh_config, remote_python, connect_timeout,
                                                                command_timeout)]
    config = load_config(profile, None, list(overrides), given)
    manifest = optimize_bundle(config, model, calibration, out, cache_dir=cache_dir,
                               shapes=dict(parse_shape(text) for text in shapes), min_snr_db=min_snr, labels=labels,
                               force=force, progress=progress_for(as_json, quiet))
    emit(manifest, as_json, render_summary(manifest, out))


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--emulate", type=click.Choice(["aarch64"]),
              help="Also run the golden inputs on aarch64 onnxruntime under qemu and compare with this host.")
@json_option
def verify(bundle: Path, emulate: str | None, as_json: bool) -> None:
    """Check a bundle: file hashes, containment, model spec and golden outputs. Exit 1 on any failure.

    Needs only numpy and onnxruntime: on a device, `python -m edge_distill.bundle.verify BUNDLE`.
    """
    from edge_distill.api import verify as verify_checks
    from edge_distill.bundle.verify import render

    checks = verify_checks(bundle, emulate, progress_for(as_json))
    passed = all(c.passed for c in checks)
    emit({"bundle": str(bundle), "passed": passed, "checks": [dataclasses.asdict(c) for c in checks]}, as_json,
          render(checks))
    if not passed:
        sys.exit(1)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="Classes to show per input.")
@json_option
def predict(bundle: Path, inputs: tuple[str, ...], top: int, as_json: bool) -> None:
    """Reference outputs for raw INPUTS through the bundle's documented preprocessing: what an app
    must reproduce for the same inputs. Image files or .npy samples for a `build` bundle, strings
    for a `text` bundle, .npz samples (as --calibration takes them) for an `optimize` bundle. Each input gets its
    result or its error; the exit status is non-zero when any failed."""
    from edge_distill.api import predict as predict_inputs
    from edge_distill.bundle.predict import render_predictions
    from edge_distill.errors import InputFileError

    results = predict_inputs(bundle, list(inputs), top)
    failed = [r for r in results if "error" in r]
    error = (f"{len(failed)} of {len(results)} input(s) could not be predicted; the first: {failed[0]['error']}"
             if failed else None)
    emit({"bundle": str(bundle), "predictions": results,
           **({"error": error, "exit_code": InputFileError.exit_code} if failed else {})},
          as_json, render_predictions(results))
    if failed:
        click.secho(f"Error: {error}", fg="red", err=True)
        sys.exit(InputFileError.exit_code)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@remote_options(many=True)
@click.option("--devices", "inventory", type=click.Path(path_type=Path), metavar="FILE",
              help="Inventory (TOML) of devices, each with its host and optionally its profile; measured in parallel.")
@benchmark_options()
@json_option
def bench(bundle, remote, ssh_config, remote_python, connect_timeout, command_timeout, inventory, as_json, **settings):
    """Measure a bundle's model with its profile's settings, here or on devices over SSH.

    On a device only python3 with numpy and onnxruntime is needed; the runner is copied there
    and removed afterwards. Host keys must already be in known_hosts. Several devices (repeated
    --remote, or --devices FILE) are measured in parallel and shown one row each.
    """
    from edge_distill.api import bench as bench_bundle
    from edge_distill.targets.fleet import render_fleet
    from edge_distill.targets.remote import render_bench

    targets = remote_targets(remote, ssh_config, remote_python, connect_timeout, command_timeout)
    report = bench_bundle(bundle, targets, inventory, benchmark_overrides(settings), connect_timeout, command_timeout,
                          progress_for(as_json))
    if "devices" not in report:
        emit(report, as_json, render_bench(report))
        exit_if_golden_failed([report])
        return
    emit(report, as_json, render_fleet(report))
    exit_if_any_device_failed(report)
    exit_if_golden_failed(report["devices"])


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--profile", "-p", required=True, help="Device profile whose peak figures to use.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--shape", "shapes", multiple=True, metavar="NAME:DIMS",
              help="Concrete shape of an input with symbolic sizes, e.g. x:1x3x48x192 (repeat per input).")
@click.option("--measure", is_flag=True, help="Also measure p50 here and show measured / estimate.")
@click.option("--calibration", type=click.Path(path_type=Path), metavar="SAMPLES",
              help="With --measure: time the first sample of this .npz (or folder of them), not zeros.")
@benchmark_options("batch")
@json_option
def estimate(model: Path, profile: str, batch: int, shapes: tuple[str, ...], measure: bool,
             calibration: Path | None, as_json: bool, **settings) -> None:
    """Roofline latency estimate of MODEL.onnx for a device, per node and in total."""
    from edge_distill.api import estimate as estimate_latency
    from edge_distill.config import Setting, load_config
    from edge_distill.measure.estimate import estimate_table
    from edge_distill.onnx_model import parse_shape

    flags = {field: flag for flag, field, _, _ in BENCHMARK_FLAGS}
    given = [Setting(f"benchmark.{field}", value, f"--{flags[field]}")
             for field, value in benchmark_overrides(settings).items()]
    config = load_config(profile, settings=given)
    result = estimate_latency(model, config, batch, dict(parse_shape(text) for text in shapes), measure, calibration,
                              progress=progress_for(as_json))
    text = estimate_table(result) + (f"\n{result['measured_on']}" if measure else "")
    emit(result, as_json, text)
