"""Staging folders: where a result is built before it is renamed into place (a cache entry, a
published bundle). Each carries the pid of the process that made it, so a later build can tell the
leftovers of a killed one from those of a build still running, and remove them."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

UNKNOWN_OWNER_AGE_S = 3600  # a staging folder without a pid (older versions) is a leftover after this


def make_staging(parent: Path, prefix: str) -> Path:
    """A new, private folder `<prefix><pid>-<random>` in `parent`, as an absolute path (work in it may
    run in another current folder: export/onnx_io.quiet_libraries)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)).absolute()


@contextmanager
def staging_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """make_staging's folder for the length of a block, removed on the way out (and, if the process
    is killed, by the next remove_leftovers of the same prefix)."""
    staged = make_staging(parent, prefix)
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def remove_leftovers(parent: Path, prefix: str) -> list[Path]:
    """Remove the staging folders `<prefix>*` in `parent` whose process is gone."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-.*")
    removed = []
    for staged in parent.glob(f"{_glob_escape(prefix)}*"):
        match = pattern.fullmatch(staged.name)
        owner_alive = _process_alive(int(match[1])) if match else \
            time.time() - staged.stat().st_mtime < UNKNOWN_OWNER_AGE_S
        if not owner_alive:
            shutil.rmtree(staged, ignore_errors=True)
            removed.append(staged)
    return removed


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
