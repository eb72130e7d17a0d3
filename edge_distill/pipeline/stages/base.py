"""What every stage shares: the config it is built from, its JSON reports, and the user files behind
a config (factory sources, teacher files) that its cache key must cover."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from edge_distill.config import BuildConfig, StudentConfig, TeacherConfig
from edge_distill.pipeline.stage import Stage


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def architecture(cfg: TeacherConfig | StudentConfig) -> dict[str, Any]:
    """The part of a model config that fixes its architecture (not how it is trained)."""
    return {"factory": cfg.factory, "family": cfg.family, "width": cfg.width, "depth": cfg.depth}


class ConfiguredStage(Stage):
    """Base for the build's stages, built from the whole BuildConfig; each picks its slice in `params`."""

    def __init__(self, config: BuildConfig):
        self.config = config


def factory_files(*factories: tuple[str, str]) -> dict[str, Path]:
    """(role, "package.module:function") -> {"role.factory": its source file}."""
    from edge_distill.models.factory import factory_source

    files = {}
    for role, spec in factories:
        source = factory_source(spec, role)
        if source is not None:
            files[f"{role}.factory"] = source
    return files


def teacher_files(config: BuildConfig) -> dict[str, Path]:
    """The teacher file, checkpoint and ensemble files the config names, and the external data
    files an ONNX teacher reads (so that new weights there invalidate the cache too)."""
    files = {f"teacher.ensemble[{i}]": Path(f) for i, f in enumerate(config.teacher.ensemble)}
    for key in ("file", "checkpoint"):
        if getattr(config.teacher, key):
            files[f"teacher.{key}"] = Path(getattr(config.teacher, key))
    for key, path in list(files.items()):
        for location in onnx_external_data(path):
            files[f"{key} data {location}"] = path.parent / location
    return files


def onnx_external_data(path: Path) -> list[str]:
    """The external data locations of an ONNX file (none for other formats or unreadable files)."""
    if not path.is_file():
        return []
    stat = path.stat()
    return list(_external_data(path.resolve(), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _external_data(path: Path, size: int, mtime_ns: int) -> tuple[str, ...]:
    """Read once per file version: several stages' cache keys ask, and a teacher file can be large."""
    from edge_distill.bundle.integrity import external_data_locations
    from edge_distill.errors import BundleError
    from edge_distill.models.formats import sniff_format

    if sniff_format(path) != "onnx":
        return ()
    try:
        return tuple(external_data_locations(path.read_bytes()))
    except BundleError:  # not a protobuf: loading it reports that, with the user's path
        return ()
