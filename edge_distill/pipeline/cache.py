"""Content-addressed stage cache: key = (stage, version, params, input hashes, library versions).

An entry records the sha256 of each output it holds and is verified before reuse: a truncated or
edited file is a miss that reruns the stage, never an input trusted downstream. The first use of a
cache by any pipeline removes the staging folders a killed run left (staging.py).

A cache folder is provably ours before anything in it is removed: its root holds CACHEDIR.TAG
(the Cache Directory Tagging spec, so backup tools skip it too), written when edge-distill creates
the folder, and each entry its own record (stage.json). `cache clean` removes only entries both
prove, never follows a symlink, and refuses any other folder, naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.errors import InputFileError
from edge_distill.hashing import sha256
from edge_distill.staging import make_staging, remove_leftovers, staging_folder

RECORD = "stage.json"  # the entry's description and its outputs' hashes; its mtime is the last use
STAGING_PREFIX = ".tmp-"
MARKER = "CACHEDIR.TAG"
MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
               "# This folder is an edge-distill stage cache; `edge-distill cache clean` manages it.\n")


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
        # Absolute from here on: every path the stages get is under it, and ONNX Runtime's tools run
        # in a scratch folder of their own (export/onnx_io.quiet_libraries), where a path relative to
        # the user's folder (the default `.edge-distill/cache`) names nothing.
        self.root = Path(os.path.abspath(root))
        self._prepared: list[Path] | None = None

    def prepare(self) -> list[Path]:
        """Make sure the root is ours (created here with its marker, or an older edge-distill's
        cache adopted) and remove the staging folders killed runs left; once per instance, before
        the first lookup. Returns the staging folders removed."""
        if self._prepared is None:
            try:
                self._claim_root()
                self._prepared = self.remove_orphans()
            except OSError as e:
                raise InputFileError(f"cache folder {self.root}: cannot write there ({e.strerror})",
                                     "pass --cache-dir on a writable disk with free space") from None
        return self._prepared

    def _claim_root(self) -> None:
        from edge_distill.pipeline.publish import enclosing_output

        inside = enclosing_output(self.root / MARKER)
        if inside is not None:
            raise InputFileError(f"cache folder {self.root}: inside the edge-distill {inside[1].what} {inside[0]}, "
                                 "which it would change; nothing was changed", "choose a --cache-dir outside it")
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise InputFileError(f"cache folder {self.root}: exists and is not a folder", "choose another --cache-dir")
        if self.is_ours():
            return
        if self.root.exists() and not _legacy_cache(self.root):
            raise InputFileError(f"cache folder {self.root}: holds files that are not an edge-distill cache "
                                 f"(no {MARKER}); nothing was changed", "choose another --cache-dir, or an empty folder")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).write_text(MARKER_TEXT)

    def is_ours(self) -> bool:
        """Whether the root holds the marker edge-distill writes when it creates a cache."""
        marker = self.root / MARKER
        try:
            return not marker.is_symlink() and marker.is_file() and marker.read_text()[:200] == MARKER_TEXT
        except (OSError, UnicodeDecodeError):
            return False

    def _require_ours(self, command: str) -> bool:
        """For `cache info` and `cache clean`: False when there is no cache yet; an error when the
        folder is not one of ours."""
        if not self.root.exists() and not self.root.is_symlink():
            return False
        if self.root.is_symlink() or not self.root.is_dir():
            raise InputFileError(f"--cache-dir {self.root}: not a folder", "give the cache folder")
        if not self.is_ours():
            raise InputFileError(f"--cache-dir {self.root}: not an edge-distill cache (no {MARKER} written by "
                                 f"edge-distill); {command} changed nothing",
                                 "check the path; a cache made before edge-distill marked its caches is marked by "
                                 "the next build that uses it")
        return True

    def key(self, description: dict[str, Any]) -> str:
        blob = json.dumps(description, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str, outputs: tuple[str, ...]) -> Lookup:
        """The entry if every output is there with the hash recorded at commit; marks it used. A
        cache not yet made is a miss, and is not made here."""
        if not self.root.exists():
            return Lookup(None)
        self.prepare()
        entry = self.entry(stage, key)
        if not entry.is_dir():
            return Lookup(None)
        damage = verify_entry(entry, outputs)
        if damage:
            return Lookup(None, damage)
        os.utime(entry / RECORD)
        return Lookup(entry)

    def staging(self, stage: str) -> Path:
        self.prepare()
        return make_staging(self.root / stage, STAGING_PREFIX)

    def staging_folder(self, stage: str) -> AbstractContextManager[Path]:
        """A staging folder for the length of a block (a miss being built, or work that is not kept
        such as optimize's candidates): removed on the way out, and by the next run if this one is killed."""
        self.prepare()
        return staging_folder(self.root / stage, STAGING_PREFIX)

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
              make: Callable[[Path], None], optional: tuple[str, ...] = ()) -> Path:
        """A miss: `make(staging folder)` writes `outputs` (and those of `optional` it has), which
        are committed as the entry (stage, key); the staging folder never outlives the call,
        whether `make` succeeds or not."""
        with self.staging_folder(stage) as staged:
            make(staged)
            missing = [name for name in outputs if not (staged / name).is_file()]
            if missing:
                raise RuntimeError(f"stage {stage} did not write {', '.join(missing)}")
            written = outputs + tuple(name for name in optional if (staged / name).is_file())
            return self.commit(stage, key, staged, description, written)

    def remove_orphans(self) -> list[Path]:
        """Remove staging folders whose build is gone (killed, or crashed without cleaning up)."""
        return [path for stage in _subfolders(self.root) for path in remove_leftovers(stage, STAGING_PREFIX)]

    def entries(self) -> list[CacheEntry]:
        """Every entry folder with its own record (stage.json), valid or damaged; symlinks and
        folders without a record are not entries and are never touched."""
        found = []
        for stage in _subfolders(self.root):
            for folder in _subfolders(stage):
                record = folder / RECORD
                if folder.name.startswith(STAGING_PREFIX) or record.is_symlink() or not record.is_file():
                    continue
                size = sum(os.lstat(os.path.join(here, name)).st_size
                           for here, _, names in os.walk(folder) for name in names)
                found.append(CacheEntry(stage.name, folder.name, folder, size, record.stat().st_mtime))
        return found

    def info(self) -> dict[str, Any]:
        """Size, entries per stage and their ages, for `edge-distill cache info`."""
        ours = self._require_ours("cache info")
        entries, now = (self.entries() if ours else []), time.time()
        stages: dict[str, dict[str, Any]] = {}
        for e in entries:
            row = stages.setdefault(e.stage, {"entries": 0, "size_bytes": 0, "oldest_use_days": 0.0})
            row["entries"] += 1
            row["size_bytes"] += e.size_bytes
            row["oldest_use_days"] = round(max(row["oldest_use_days"], (now - e.last_used) / 86400), 2)
        return {"root": str(self.root), "entries": len(entries), "size_bytes": sum(e.size_bytes for e in entries),
                "stages": stages,
                "orphaned_staging": sum(f.name.startswith(STAGING_PREFIX) for s in _subfolders(self.root)
                                        for f in _subfolders(s)) if ours else 0}

    def clean(self, remove_all: bool = False, unused_days: float | None = None) -> dict[str, Any]:
        """Remove orphaned staging folders and damaged entries; also every entry (`remove_all`) or
        those not used for `unused_days`. Returns what went and how many bytes were freed.
        Refuses a folder that is not provably an edge-distill cache."""
        if not self._require_ours("cache clean"):
            return {"removed_entries": [], "removed_staging": 0, "freed_bytes": 0}
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
    """"" if the entry holds `outputs` and every other output it recorded, with their recorded
    hashes, else why not."""
    try:
        recorded = json.loads((entry / RECORD).read_text()).get("output_sha256")
    except (OSError, ValueError, AttributeError):
        return f"{entry / RECORD} is missing or unreadable"
    if not isinstance(recorded, dict):
        return f"{entry / RECORD} records no output hashes (an older edge-distill wrote it)"
    for name in dict.fromkeys([*(outputs or ()), *recorded]):
        path = entry / name
        if not path.is_file():
            return f"{path} is missing"
        if sha256(path) != recorded.get(name):
            return f"{path} differs from the hash recorded when it was written (truncated or edited)"
    return ""


def _subfolders(folder: Path) -> list[Path]:
    """The real folders in `folder`, sorted; symlinks are never followed, and a missing folder has none."""
    try:
        with os.scandir(folder) as found:
            return sorted(Path(e.path) for e in found if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _legacy_cache(root: Path) -> bool:
    """Whether `root` is empty or a cache an edge-distill older than the marker made: nothing but
    real stage folders, each holding only entries with their record and staging folders."""
    for child in root.iterdir():
        if child.is_symlink() or not child.is_dir():
            return False
        for entry in child.iterdir():
            if entry.is_symlink() or not entry.is_dir():
                return False
            if not entry.name.startswith(STAGING_PREFIX) and not (entry / RECORD).is_file():
                return False
    return True
