"""Content-addressed stage cache: key = (stage, version, params, input hashes, library versions)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_distill.benchmarks.verify import sha256

# Versions that can change what a stage produces.
KEY_LIBRARIES = ("edge-distill", "torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "numpy", "scikit-learn")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def hash_path(path: Path) -> str:
    """sha256 of a file, or of a folder's relative paths and contents in sorted order."""
    if path.is_file():
        return sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256(file).encode())
    return digest.hexdigest()


class StageCache:
    """One folder per (stage, key) under `root`; a miss is built in a temp folder then renamed in."""

    def __init__(self, root: Path):
        self.root = root

    def key(self, description: dict[str, Any]) -> str:
        blob = json.dumps(description, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str, outputs: tuple[str, ...]) -> Path | None:
        entry = self.entry(stage, key)
        if all((entry / name).is_file() for name in outputs):
            return entry
        return None

    def staging(self, stage: str) -> Path:
        (self.root / stage).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root / stage))

    def commit(self, stage: str, key: str, staged: Path, description: dict[str, Any]) -> Path:
        (staged / "stage.json").write_text(json.dumps(description, indent=2, sort_keys=True, default=str))
        entry = self.entry(stage, key)
        if entry.exists():  # --force rebuilt an existing entry
            shutil.rmtree(entry, ignore_errors=True)
        try:
            staged.rename(entry)
        except OSError:
            if not (entry / "stage.json").is_file():
                raise
            # A concurrent build committed the same key first; its entry stands and ours is dropped.
        return entry
