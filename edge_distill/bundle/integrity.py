"""The checks that vouch for a bundle's bytes before anything in it is read, run, copied or
reported: every file the manifest lists is there, inside the folder, with its recorded sha256; the
folder holds nothing else and no symlink (to a file or a folder); the model's ONNX external data
stays inside and is hashed. `verify` shows them as checks; `Bundle.open_checked` (what `predict`,
`bench`, `bench --remote` and emulation open a bundle with) refuses a bundle that fails any.

Runs where the model runs: standard library, numpy-free, no onnx (the protobuf is walked here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.errors import BundleError
from edge_distill.files import is_regular_file
from edge_distill.hashing import sha256


# Files a bundle folder holds beside those manifest["files"] hashes: the manifest itself, and what
# `build` writes after it (a size sweep's report, figures measured on the device over SSH).
UNHASHED_FILES = ("manifest.json", "sweep.json", "sweep.svg", "device_benchmark.json")


def inside(bundle: Path, relative: str) -> Path | None:
    """The file a manifest path names, or None if it would leave the bundle (absolute, .., symlink)."""
    if Path(relative).is_absolute():
        return None
    target = (bundle / relative).resolve()
    return target if target.is_relative_to(bundle.resolve()) else None


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def integrity_checks(bundle: Path, manifest: dict[str, Any], model: Path) -> list[Check]:
    """Files, then (once their bytes are vouched for) the model's external data."""

    checks = check_files(bundle, manifest)
    model_path = inside(bundle, manifest["model"]["file"])
    vouched = all(c.passed for c in checks) and model_path is not None
    checks.append(check_unlisted(bundle, manifest))
    if vouched:
        checks.append(check_external_data(bundle, model_path, manifest))
    return checks


def check_files(bundle: Path, manifest: dict[str, Any]) -> list[Check]:

    checks = []
    for name, record in sorted(manifest["files"].items()):
        target = inside(bundle, name)
        if (bundle / name).is_symlink():
            checks.append(Check(f"file {name}", False, "a symlink: a bundle holds its files themselves"))
        elif target is None:
            checks.append(Check(f"file {name}", False, "points outside the bundle"))
        elif not is_regular_file(target):
            checks.append(Check(f"file {name}", False, "not a regular file" if target.exists() else "missing"))
        elif sha256(target) != record.get("sha256"):
            checks.append(Check(f"file {name}", False, "sha256 differs from manifest.json: the file was altered"))
        else:
            checks.append(Check(f"file {name}", True, f"sha256 {record['sha256'][:12]}…"))
    if manifest["model"].get("file") not in manifest["files"]:
        checks.append(Check("model file listed", False, f"{manifest['model'].get('file')!r} is not in manifest files"))
    return checks


def check_unlisted(bundle: Path, manifest: dict[str, Any]) -> Check:
    """Files in the bundle folder that the manifest neither hashes nor names as unhashed (a stray .so,
    an edited copy), and any symlink, fail it: a bundle carries only what it vouches for. The walk
    never follows a symlink (`extra -> /` is one entry, named, not the whole disk)."""

    listed = set(manifest["files"]) | set(UNHASHED_FILES)
    unlisted, links = [], []
    for folder, subfolders, names in os.walk(bundle):  # followlinks=False: a symlinked folder is listed, not entered
        here = Path(folder)
        for name in [*subfolders, *names]:
            relative = (here / name).relative_to(bundle).as_posix()
            if (here / name).is_symlink():
                links.append(relative)
            elif name in names and relative not in listed:
                unlisted.append(relative)
    if links:
        return Check("no unlisted files", False, f"symlink(s) in the bundle: {', '.join(sorted(links)[:5])}")
    detail = f"not in the manifest: {', '.join(sorted(unlisted)[:5])}" if unlisted else "every file is listed"
    return Check("no unlisted files", not unlisted, detail)


def check_external_data(bundle: Path, model: Path, manifest: dict[str, Any]) -> Check:
    """ONNX external-data locations must stay inside the bundle and be hashed in the manifest."""

    root = bundle.resolve()
    try:
        locations = external_data_locations(model.read_bytes())
    except BundleError as e:
        return Check("model loads", False, f"{model.name} is not an ONNX protobuf ({e.message})")
    outside, unlisted = [], []
    for location in locations:
        target = inside(model.parent, location)  # ONNX resolves locations against the model's folder
        if target is None or not target.is_relative_to(root):
            outside.append(location)
        elif target.relative_to(root).as_posix() not in manifest["files"]:
            unlisted.append(location)
    if outside:
        return Check("external data", False, f"{model.name} points outside the bundle: {', '.join(outside)}")
    if unlisted:
        return Check("external data", False, f"{model.name} uses files the manifest does not hash: {', '.join(unlisted)}")
    return Check("external data", True, f"{len(locations)} external file(s)" if locations else "none")


def external_data_locations(model_bytes: bytes) -> list[str]:
    """`location` of every tensor stored as ONNX external data, read from the protobuf wire format
    directly so that verification needs no onnx package. Walks ModelProto.graph, its initializers,
    sparse initializers, and node attributes (tensors and subgraphs)."""
    locations: list[str] = []
    for field, value in _fields(model_bytes):
        if field == 7:  # ModelProto.graph
            _walk_graph(value, locations)
    return sorted(set(locations))


def _walk_graph(graph: bytes, locations: list[str]) -> None:
    for field, value in _fields(graph):
        if field == 5:  # GraphProto.initializer
            _read_tensor(value, locations)
        elif field == 15:  # GraphProto.sparse_initializer: values (1) and indices (2) are tensors
            for sub_field, sub in _fields(value):
                if sub_field in (1, 2):
                    _read_tensor(sub, locations)
        elif field == 1:  # GraphProto.node -> NodeProto.attribute (5)
            for node_field, attribute in _fields(value):
                if node_field == 5:
                    for attr_field, item in _fields(attribute):
                        if attr_field in (5, 10):  # AttributeProto.t, .tensors
                            _read_tensor(item, locations)
                        elif attr_field in (6, 11):  # AttributeProto.g, .graphs
                            _walk_graph(item, locations)


def _read_tensor(tensor: bytes, locations: list[str]) -> None:
    for field, entry in _fields(tensor):
        if field == 13:  # TensorProto.external_data: StringStringEntryProto(key=1, value=2)
            pair = {k: v for k, v in _fields(entry)}
            if pair.get(1) == b"location":
                locations.append(pair.get(2, b"").decode("utf-8", "replace"))


def _fields(buffer: bytes):
    """Yield (field number, bytes) for each length-delimited field; skip the other wire types."""
    position, end = 0, len(buffer)
    while position < end:
        key, position = _varint(buffer, position)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(buffer, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            yield field, buffer[position : position + length]
            position += length
        else:
            raise BundleError(f"model file: unsupported protobuf wire type {wire_type}")


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer):
            raise BundleError("model file: truncated protobuf")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


