"""Several devices at once: a bundle benchmarked on each in parallel, one row per device.

Devices come from repeated --remote, or from an inventory file naming each device and, where it
differs from the bundle's, its profile (whose benchmark settings then apply on that device):

    [[device]]
    name = "kitchen-pi"        # optional; default: host
    host = "pi@10.0.0.5"       # [user@]host, or a Host of your ssh config
    profile = "rpi4"           # optional: a shipped profile name or a .toml path
    python = "python3"         # optional: Python on the device
    ssh_config = "~/.ssh/lab"  # optional: ssh config file

A device that fails (unreachable, no onnxruntime) is a row with its error; the others still run.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edge_distill.config import read_toml
from edge_distill.targets.remote import RemoteTarget, bench_bundle
from edge_distill.errors import ConfigError, EdgeDistillError
from edge_distill.schema import Obj, Str, check, shown

DEVICE = Obj({key: Str(nonempty=True, max_length=1024) for key in ("name", "host", "profile", "python", "ssh_config")})
INVENTORY_KEYS = set(DEVICE.fields)


@dataclass(frozen=True)
class Device:
    name: str
    target: RemoteTarget
    settings: dict = field(default_factory=dict)  # BenchmarkConfig fields from the device's profile
    profile: str | None = None


def read_inventory(path: Path, connect_timeout_s: int = 10, command_timeout_s: int = 600) -> list[Device]:
    """The [[device]] tables of an inventory file, each checked, with its profile's benchmark settings."""
    from edge_distill.config import load_config

    raw = read_toml(path)
    unknown = set(raw) - {"device"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}",
                          "an inventory holds only [[device]] tables")
    entries = raw.get("device")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[device]] tables", 'add one per device: [[device]] host = "pi@raspberrypi"')
    devices = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: device {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a [[device]] table, got {shown(entry)}",
                              'one [[device]] table per device, with host = "[user@]host"')
        extra = set(entry) - INVENTORY_KEYS
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}",
                              f"a device takes {', '.join(sorted(INVENTORY_KEYS))}")
        if "host" not in entry:
            raise ConfigError(f"{where}: no host", 'give host = "[user@]host" (or a Host of your ssh config)')
        check(entry, DEVICE, where, ConfigError, 'e.g. host = "pi@10.0.0.5", profile = "rpi4"')
        ssh_config = Path(entry["ssh_config"]).expanduser() if entry.get("ssh_config") else None
        try:
            target = RemoteTarget(entry["host"], ssh_config, entry.get("python", "python3"), connect_timeout_s,
                                  command_timeout_s)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e.message}", e.hint) from None
        profile = entry.get("profile")
        try:
            settings = dataclasses.asdict(load_config(profile).benchmark) if profile else {}
        except ConfigError as e:
            raise ConfigError(f"{where}: profile: {e.message}", e.hint) from None
        devices.append(Device(entry.get("name", entry["host"]), target, settings, profile))
    names = [device.name for device in devices]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: device names repeat ({', '.join(names)})", "give each device its own name")
    return devices


def bench_fleet(bundle: Path, devices: list[Device], progress=lambda _: None, overrides: dict | None = None) -> dict:
    """The bundle benchmarked on every device in parallel (bench_bundle on each: its profile's
    settings, then `overrides`): {"bundle", "devices": [report, or {"where", "error", "hint"}]} in
    the order given."""

    from edge_distill.bundle.reader import Bundle

    # Once, before any device is reached: a refused bundle is one error, not a row each.
    if Bundle.open_checked(bundle).kind == "generation":
        from edge_distill.bundle.kinds.generation import open_generator

        open_generator(bundle)

    def one(device: Device) -> dict:
        tell = lambda message: progress(f"{device.name}: {message}")  # noqa: E731
        try:
            report = bench_bundle(bundle, device.target, tell, {**device.settings, **(overrides or {})})
        except EdgeDistillError as e:
            return {"where": device.name, "error": e.message, "hint": e.hint}
        return report | {"where": device.name, "profile": device.profile}

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        return {"bundle": str(bundle), "devices": list(pool.map(one, devices))}


def render_fleet(report: dict) -> str:
    """One row per device, side by side."""
    lines = [f"{'device':16s} {'cpu':28s} {'arch':8s} {'threads':>7s} {'p50 ms':>9s} {'p90 ms':>9s} {'p99 ms':>9s} "
             f"{'cold ms':>8s}  golden"]
    for row in report["devices"]:
        if "error" in row:
            lines.append(f"{row['where'][:16]:16s} failed: {row['error']}")
            continue
        device = row["device"]
        if "generation" in row:  # a text generator: its first prompt length's time to first token and decode rate
            first = row["generation"][0]
            lines.append(f"{row['where'][:16]:16s} {device['cpu'][:28]:28s} {device['arch']:8s} {row['threads']:7d} "
                         f"{first['prompt_tokens']}-token prompt: first token {first['time_to_first_token_ms']:.1f} ms, "
                         f"{first['decode_tokens_per_s']:.1f} tokens/s  greedy {row['golden_greedy_same']}/"
                         f"{row['golden_samples']}")
            continue
        latency = row["latency_ms"]
        golden = (f"top-1 {row['golden_top1_agreement']:.4f}" if "golden_top1_agreement" in row else
                  "within tolerance" if row["golden_within_tolerance"] else "OUTSIDE tolerance")
        lines.append(f"{row['where'][:16]:16s} {device['cpu'][:28]:28s} {device['arch']:8s} {row['threads']:7d} "
                     f"{latency['p50']:9.4f} {latency['p90']:9.4f} {latency['p99']:9.4f} {latency['cold_start']:8.2f}  "
                     f"{golden}")
    return "\n".join(lines)
