"""What the `edge-distill` commands share: their common options (config, benchmark, remote
devices, layer sweeps), the --json switch, and how a result, progress and warnings are shown. The
commands are in the modules beside this one; cli.py gathers them under one group."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge_distill.errors import ConfigError


DEFAULT_CACHE = Path(".edge-distill/cache")


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


def progress_for(as_json: bool = False, quiet: bool = False):
    """Progress for a command: lines on stderr, bars on a terminal; none with --quiet, no bars with --json."""
    from edge_distill.progress import TerminalProgress

    return TerminalProgress(bars=False if as_json else None, quiet=quiet)


def show_warnings(warnings: list[dict]) -> None:
    """Warnings about measured figures: on stderr, even with --quiet."""
    for warning in warnings:
        click.secho(f"Warning: {warning['message']}", fg="yellow", err=True)


def emit(payload: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(payload, indent=2, default=str) if as_json else text)


# Where the student trains: torchrun processes (one per GPU where there are GPUs) on one or more nodes.
LAUNCH_OPTIONS = (
    click.option("--nproc", type=click.IntRange(min=1),
                 help="Train the student in N processes under torchrun (DDP), per node: one per GPU, or CPU shares."),
    click.option("--nnodes", type=click.IntRange(min=1), help="Train on N machines (every one runs this command)."),
    click.option("--node-rank", type=click.IntRange(min=0), help="This machine's number, 0..nnodes-1."),
    click.option("--rendezvous", metavar="HOST:PORT", help="Node 0's address and a free port, the same on every node."),
)


def launch_options(fn):
    """--nproc, --nnodes, --node-rank, --rendezvous (distill/distributed.Launch)."""
    for option in reversed(LAUNCH_OPTIONS):
        fn = option(fn)
    return fn


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
        *LAUNCH_OPTIONS,
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
    """The BENCHMARK_FLAGS (but `skip`) as options named bench_<field>; see `benchmark_overrides`."""
    def decorate(fn):
        for flag, field, kind, help_text in reversed(BENCHMARK_FLAGS):
            if flag not in skip:
                fn = click.option(f"--{flag}", f"bench_{field}", type=kind, help=f"{help_text} Default: the profile's.")(fn)
        return fn

    return decorate


def benchmark_overrides(kwargs: dict) -> dict:
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
    remote, ssh_config, remote_python, connect_timeout, command_timeout; see `remote_targets`."""
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


def device_settings(hosts, ssh_config, remote_python, connect_timeout, command_timeout) -> list[tuple]:
    """The first --remote and its ssh settings as (key, value, flag) of [device]: the device that
    float and int8 are timed on."""
    hosts = [host for host in ([hosts] if isinstance(hosts, str) or hosts is None else hosts) if host]
    if not hosts:
        return []
    return [("device.host", hosts[0], "--remote"), ("device.python", remote_python, "--remote-python"),
            ("device.connect_timeout_s", connect_timeout, "--connect-timeout"),
            ("device.command_timeout_s", command_timeout, "--command-timeout"),
            *([("device.ssh_config", str(ssh_config), "--ssh-config")] if ssh_config else [])]


def remote_targets(hosts, ssh_config, remote_python, connect_timeout, command_timeout) -> list:
    """A targets.remote.RemoteTarget per host given (None and empty entries dropped)."""
    from edge_distill.targets.remote import RemoteTarget

    hosts = [hosts] if isinstance(hosts, str) or hosts is None else list(hosts)
    return [RemoteTarget(host, ssh_config, remote_python, connect_timeout, command_timeout) for host in hosts if host]


def load_build_config(profile, config_file, overrides, data, teacher, teacher_checkpoint, teacher_file, transfer, nproc,
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


def on_devices(report: dict | None) -> list[str]:
    """The device figures after a build's table: one device's, or a row per device."""
    from edge_distill.targets.fleet import render_fleet
    from edge_distill.targets.remote import render_bench

    if not report:
        return []
    return [f"On the devices:\n{render_fleet(report)}" if "devices" in report else f"On the device: {render_bench(report)}"]


def layer_counts(sweep_layers: str) -> list[int]:
    """--sweep-layers "1,2,3" as layer counts, each at least 1."""
    try:
        counts = [int(n) for n in sweep_layers.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--sweep-layers {sweep_layers!r}: not a list of layer counts", "e.g. --sweep-layers 1,2,3")
    return counts


def exit_if_golden_failed(reports: list[dict]) -> None:
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


def exit_if_any_device_failed(report: dict) -> None:
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


def sweep_budget(latency_ms: float | None, quality: float | None, ship_best_effort: bool):
    """A layer sweep's budget from its two flags (config.BudgetConfig), or None when neither is given."""
    from edge_distill.config import BudgetConfig

    if latency_ms is None and quality is None:
        return None
    return BudgetConfig(max_latency_ms=latency_ms or 0.0, min_accuracy=quality or 0.0, ship_best_effort=ship_best_effort)
