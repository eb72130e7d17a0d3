"""`edge-distill cache`, `emulator` and `profiles`: the stage cache, the aarch64 userland, the
device profiles."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_distill.commands.options import (
    DEFAULT_CACHE, FiniteFloat, emit, json_option, progress_for,
)


@click.group()
def cache() -> None:
    """The stage cache: what it holds, and removing what is no longer needed."""


def _human_bytes(size: int) -> str:
    return f"{size / 1024**2:.1f} MB" if size >= 1024**2 else f"{size / 1024:.1f} KB"


@cache.command("info")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@json_option
def cache_info(cache_dir: Path, as_json: bool) -> None:
    """Entries, size and last use per stage."""
    from edge_distill.api import cache_info as read_cache_info

    info = read_cache_info(cache_dir)
    rows = [f"{stage:<10} {row['entries']:>4} entries  {_human_bytes(row['size_bytes']):>10}  "
            f"oldest unused for {row['oldest_use_days']:g} day(s)" for stage, row in sorted(info["stages"].items())]
    emit(info, as_json, "\n".join([*rows, f"{cache_dir}: {info['entries']} entries, "
                                    f"{_human_bytes(info['size_bytes'])}, {info['orphaned_staging']} staging folder(s)"]))


@cache.command("clean")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--all", "remove_all", is_flag=True, help="Remove every entry.")
@click.option("--older-than", "unused_days", type=FiniteFloat(min=0), metavar="DAYS",
              help="Remove entries no build has used for DAYS days.")
@json_option
def cache_clean(cache_dir: Path, remove_all: bool, unused_days: float | None, as_json: bool) -> None:
    """Remove staging folders of interrupted builds and damaged entries; with --all or --older-than, more."""
    from edge_distill.api import cache_clean as clean_cache

    report = clean_cache(cache_dir, remove_all, unused_days)
    emit(report, as_json, f"removed {len(report['removed_entries'])} entries and {report['removed_staging']} "
                           f"staging folder(s), freed {_human_bytes(report['freed_bytes'])}")


@click.group()
def emulator() -> None:
    """The aarch64 userland that `verify --emulate aarch64` runs under qemu."""


@emulator.command("setup")
@click.option("--root", type=click.Path(path_type=Path), help="Where to keep it (default: ~/.cache/edge-distill).")
def emulator_setup(root: Path | None) -> None:
    """Download Debian's arm64 Python 3.11 and the aarch64 numpy/onnxruntime wheels, once."""
    from edge_distill.api import setup_emulator

    setup_emulator(root, progress=progress_for())


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def profiles(ctx: click.Context, as_json: bool) -> None:
    """List the shipped device profiles."""
    if ctx.invoked_subcommand is not None:
        return
    from edge_distill.api import profiles as shipped_profiles

    rows = shipped_profiles()
    emit(rows, as_json, "\n".join(f"{name:<15} {description}" for name, description in rows.items()))


@profiles.command("show")
@click.argument("name")
@json_option
def profiles_show(name: str, as_json: bool) -> None:
    """Print a profile's resolved values (a shipped name or a .toml file)."""
    from edge_distill.api import profile

    shown = profile(name)
    lines = [f"profile: {shown['name']}"]
    for section in (key for key in shown if key != "name"):
        lines.append(f"[{section}]")
        lines += [f"  {key} = {json.dumps(value)}" for key, value in shown[section].items()]
    emit(shown, as_json, "\n".join(lines))
