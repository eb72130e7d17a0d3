"""Shared fixtures: a tiny build config on the real digits data, and one cached tiny build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_distill.config import BuildConfig, load_config

# Small enough for seconds on 2 cores, real enough to train, export, quantize and measure.
TINY = [
    "teacher.width=8", "teacher.depth=1", "teacher.epochs=3",
    "teacher.check_accuracy=false",  # 3 epochs of a tiny teacher stay near chance, on purpose
    "student.width=4", "student.depth=1",
    "distill.epochs=3",
    "export.parity_samples=16",
    "quantize.calibration_samples=32",
    "benchmark.warmup_runs=1", "benchmark.timed_runs=5", "benchmark.min_seconds=0", "benchmark.cold_start_runs=1",
]


def tiny_config(*overrides: str, profile: str = "rpi4") -> BuildConfig:
    return load_config(profile, None, [*TINY, *overrides])


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One cache holding a complete tiny build; tests that add entries only add, never remove."""
    from edge_distill.pipeline.build import run_pipeline

    cache = tmp_path_factory.mktemp("cache")
    run_pipeline(tiny_config(), cache)
    return cache


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_cache) -> dict[str, Path]:
    from edge_distill.pipeline.build import run_pipeline

    return run_pipeline(tiny_config(), tiny_cache).artifacts


@pytest.fixture
def calibration() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_cache, tmp_path_factory) -> Path:
    """A published tiny bundle; copy it before changing anything in it."""
    from edge_distill.api import build_bundle

    out = tmp_path_factory.mktemp("bundle") / "dist"
    build_bundle(tiny_config(), out, tiny_cache)
    return out


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.fixture
def server(tmp_path):
    """A real sshd on loopback (tests/sshd.py), the device of the remote tests."""
    from tests.sshd import INSTALLED, SshServer

    if not INSTALLED:
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server; .ci/run does)")
    server = SshServer(tmp_path)
    yield server
    server.stop()



@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only): real ENOSPC and EROFS, not simulated ones."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
