"""Content-addressed stage cache: key = (stage, version, params, input hashes, library versions).

An entry records the sha256 of each output it holds and is verified before reuse: a truncated or
edited file is a miss that reruns the stage, never an input trusted downstream. A later build
removes the staging folders a killed build left (pipeline/staging.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_distill.hashing import sha256
from edge_distill.pipeline.staging import make_staging, remove_leftovers

# Versions that can change what a stage produces.
KEY_LIBRARIES = ("edge-distill", "torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "numpy", "scikit-learn")
RECORD = "stage.json"  # the entry's description and its outputs' hashes; its mtime is the last use
STAGING_PREFIX = ".tmp-"


def library_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass
class Lookup:
    entry: Path | None  # the verified entry, or None for a miss
    damage: str = ""  # why an existing entry was not reused ("" for a plain miss)


@dataclass
class CacheEntry:
    stage: str
    key: str
    path: Path
    size_bytes: int
    last_used: float  # epoch seconds


class StageCache:
    """One folder per (stage, key) under `root`; a miss is built in a temp folder then renamed in."""

    def __init__(self, root: Path):
        self.root = root

    def key(self, description: dict[str, Any]) -> str:
        blob = json.dumps(description, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str, outputs: tuple[str, ...]) -> Lookup:
        """The entry if every output is there with the hash recorded at commit; marks it used."""
        entry = self.entry(stage, key)
        if not entry.is_dir():
            return Lookup(None)
        damage = verify_entry(entry, outputs)
        if damage:
            return Lookup(None, damage)
        os.utime(entry / RECORD)
        return Lookup(entry)

    def staging(self, stage: str) -> Path:
        return make_staging(self.root / stage, STAGING_PREFIX)

    def commit(self, stage: str, key: str, staged: Path, description: dict[str, Any],
               outputs: tuple[str, ...]) -> Path:
        hashes = {name: sha256(staged / name) for name in outputs}
        (staged / RECORD).write_text(json.dumps({**description, "output_sha256": hashes}, indent=2, sort_keys=True,
                                                default=str))
        entry = self.entry(stage, key)
        if entry.exists():  # --force, or a damaged entry being replaced
            shutil.rmtree(entry, ignore_errors=True)
        try:
            staged.rename(entry)
        except OSError:
            if not (entry / RECORD).is_file():
                raise
            # A concurrent build committed the same key first; its entry stands and ours is dropped.
        return entry

    def build(self, stage: str, key: str, description: dict[str, Any], outputs: tuple[str, ...],
              make: Callable[[Path], None]) -> Path:
        """A miss: `make(staging folder)` writes `outputs`, which are committed as the entry (stage,
        key); the staging folder never outlives the call, whether `make` succeeds or not."""
        staged = self.staging(stage)
        try:
            make(staged)
            missing = [name for name in outputs if not (staged / name).is_file()]
            if missing:
                raise RuntimeError(f"stage {stage} did not write {', '.join(missing)}")
            return self.commit(stage, key, staged, description, outputs)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def remove_orphans(self) -> list[Path]:
        """Remove staging folders whose build is gone (killed, or crashed without cleaning up)."""
        return [path for stage in self.root.glob("*/") for path in remove_leftovers(stage, STAGING_PREFIX)]

    def entries(self) -> list[CacheEntry]:
        """Every entry folder, its record readable or not (a damaged one is still counted and cleaned)."""
        found = []
        for folder in sorted(p for p in self.root.glob("*/*") if p.is_dir() and not p.name.startswith(STAGING_PREFIX)):
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            record = folder / RECORD
            last_used = (record if record.is_file() else folder).stat().st_mtime
            found.append(CacheEntry(folder.parent.name, folder.name, folder, size, last_used))
        return found

    def info(self) -> dict[str, Any]:
        """Size, entries per stage and their ages, for `edge-distill cache info`."""
        entries, now = self.entries(), time.time()
        stages: dict[str, dict[str, Any]] = {}
        for e in entries:
            row = stages.setdefault(e.stage, {"entries": 0, "size_bytes": 0, "oldest_use_days": 0.0})
            row["entries"] += 1
            row["size_bytes"] += e.size_bytes
            row["oldest_use_days"] = round(max(row["oldest_use_days"], (now - e.last_used) / 86400), 2)
        return {"root": str(self.root), "entries": len(entries), "size_bytes": sum(e.size_bytes for e in entries),
                "stages": stages, "orphaned_staging": len(list(self.root.glob("*/.tmp-*")))}

    def clean(self, remove_all: bool = False, unused_days: float | None = None) -> dict[str, Any]:
        """Remove orphaned staging folders and damaged entries; also every entry (`remove_all`) or
        those not used for `unused_days`. Returns what went and how many bytes were freed."""
        orphans = self.remove_orphans()
        removed, freed, now = [], 0, time.time()
        for e in self.entries():
            stale = unused_days is not None and now - e.last_used > unused_days * 86400
            if remove_all or stale or verify_entry(e.path, None):
                shutil.rmtree(e.path, ignore_errors=True)
                removed.append(f"{e.stage}/{e.key}")
                freed += e.size_bytes
        return {"removed_entries": removed, "removed_staging": len(orphans), "freed_bytes": freed}


def verify_entry(entry: Path, outputs: tuple[str, ...] | None) -> str:
    """"" if the entry holds `outputs` (default: those it recorded) with their recorded hashes, else why not."""
    try:
        recorded = json.loads((entry / RECORD).read_text()).get("output_sha256")
    except (OSError, ValueError, AttributeError):
        return f"{entry / RECORD} is missing or unreadable"
    if not isinstance(recorded, dict):
        return f"{entry / RECORD} records no output hashes (an older edge-distill wrote it)"
    for name in outputs if outputs is not None else recorded:
        path = entry / name
        if not path.is_file():
            return f"{path} is missing"
        if sha256(path) != recorded.get(name):
            return f"{path} differs from the hash recorded when it was written (truncated or edited)"
    return ""
