"""Verify a bundle: hashes, containment, the model's spec, and its golden vectors.

Like device/runner.py, this runs where the model runs: it needs only the standard library, numpy
and onnxruntime (plus edge_distill's errors, hashing and bundle reader, themselves torch-free). Usable as
`python -m edge_distill.bundle.verify DIR [--json]` on a device without torch or onnx.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.bundle.reader import METADATA_PREFIX, RAW_GOLDEN, UNHASHED_FILES, Bundle, inside, normalize

# mean and std are stated to 6 decimals: an app repeating the formula lands this close to the inputs.
PREPROCESSING_ATOL = 1e-3
from edge_distill.errors import BundleError
from edge_distill.hashing import sha256


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def verify_bundle(path: Path, providers: list[str] | None = None) -> list[Check]:
    """Run every check; a bundle that cannot be read at all raises BundleError instead."""
    bundle = Bundle.open(path)
    checks = check_files(path, bundle.manifest)
    if not all(c.passed for c in checks):
        return [*checks, check_unlisted(path, bundle.manifest)]  # never run a model whose bytes are not vouched for
    checks.append(check_unlisted(path, bundle.manifest))
    checks.append(check_external_data(path, bundle.model_path, bundle.manifest))
    if not checks[-1].passed:
        return checks
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(bundle.model_path), providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/...: all mean "cannot load"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return [*checks, Check("model loads", False, f"onnxruntime cannot load {bundle.model_path.name}: {first_line[:300]}")]
    checks += check_spec(session, bundle.manifest)
    if all(c.passed for c in checks):  # golden inputs fit only the model the manifest describes
        checks += check_golden(bundle, session)
    if "text" in bundle.manifest:
        checks.append(check_text_tokenizer(path, bundle.manifest, bundle.golden()))
    return checks


def check_text_tokenizer(bundle: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Check:
    """A text bundle's tokenizer.json turns each golden string into the ids stored beside it, and
    those are the golden vectors' ids (where their mask is 1): what an app's tokenizer must match."""
    import json

    try:
        from tokenizers import Tokenizer
    except ImportError:  # a device with numpy and onnxruntime only: the model checks above still ran
        return Check("golden tokenization", True, "not checked here: the tokenizers package is not installed")
    text = manifest["text"]
    paths = [inside(bundle, text.get(key, "")) for key in ("tokenizer", "golden_text")]
    if None in paths or any(text.get(key) not in manifest["files"] for key in ("tokenizer", "golden_text")):
        return Check("golden tokenization", False, "text.tokenizer or text.golden_text is not a file the bundle lists")
    tokenizer = Tokenizer.from_file(str(paths[0]))
    tokenizer.enable_truncation(int(text["max_length"]))
    tokenizer.no_padding()
    golden = json.loads(paths[1].read_text(encoding="utf-8"))
    produced = [encoding.ids for encoding in tokenizer.encode_batch(golden["texts"])]
    stored = [row[mask == 1].tolist() for row, mask in
              zip(arrays["input:input_ids"].reshape(len(produced), -1), arrays["input:attention_mask"].reshape(len(produced), -1))]
    wrong = [i for i, (ids, expected, vector) in enumerate(zip(produced, golden["input_ids"], stored))
             if ids != expected or ids != vector]
    return Check("golden tokenization", not wrong,
                 f"{len(produced) - len(wrong)}/{len(produced)} golden strings tokenize to their stored ids"
                 + (f"; first mismatch: string {wrong[0]} {golden['texts'][wrong[0]][:60]!r}" if wrong else ""))


def check_files(bundle: Path, manifest: dict[str, Any]) -> list[Check]:
    checks = []
    for name, record in sorted(manifest["files"].items()):
        target = inside(bundle, name)
        if target is None:
            checks.append(Check(f"file {name}", False, "points outside the bundle"))
        elif not target.is_file():
            checks.append(Check(f"file {name}", False, "missing"))
        elif sha256(target) != record.get("sha256"):
            checks.append(Check(f"file {name}", False, "sha256 differs from manifest.json: the file was altered"))
        else:
            checks.append(Check(f"file {name}", True, f"sha256 {record['sha256'][:12]}…"))
    if manifest["model"].get("file") not in manifest["files"]:
        checks.append(Check("model file listed", False, f"{manifest['model'].get('file')!r} is not in manifest files"))
    return checks


def check_unlisted(bundle: Path, manifest: dict[str, Any]) -> Check:
    """Files in the bundle folder that the manifest neither hashes nor names as unhashed (a stray .so,
    an edited copy) fail it: a bundle carries only what it vouches for."""
    listed = set(manifest["files"]) | set(UNHASHED_FILES)
    unlisted = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
                      if not p.is_dir() and p.relative_to(bundle).as_posix() not in listed)
    detail = f"not in the manifest: {', '.join(unlisted[:5])}" if unlisted else "every file is listed"
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


def check_spec(session, manifest: dict[str, Any]) -> list[Check]:
    checks = []
    for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        expected = [(t["name"], t["shape"]) for t in manifest[kind]]
        # onnxruntime reports a size declared as neither a number nor a name (or as -1) as None.
        got = [(t.name, [d if isinstance(d, int) else "?" if d is None else str(d) for d in t.shape]) for t in actual]
        shown = "; ".join(f"{name}: {' x '.join(map(str, shape)) or 'scalar'}" for name, shape in got)
        wanted = "; ".join(f"{name}: {' x '.join(map(str, shape)) or 'scalar'}" for name, shape in expected)
        checks.append(Check(f"model {kind}", got == expected,
                            shown if got == expected else f"model has {shown}, manifest says {wanted}"))
    labels = session.get_modelmeta().custom_metadata_map.get(METADATA_PREFIX + "labels")
    ok = labels is not None and json.loads(labels) == manifest["labels"]
    checks.append(Check("model metadata labels", ok, "match manifest" if ok else "model metadata_props labels differ or are absent"))
    return checks


def check_golden(bundle: Bundle, session) -> list[Check]:
    manifest = bundle.manifest
    golden = manifest["golden"]
    arrays = bundle.golden()
    if golden.get("kind") == "io":
        return check_io_golden(arrays, manifest, session)
    input_name, output_name = manifest["inputs"][0]["name"], manifest["outputs"][0]["name"]
    try:
        logits = session.run([output_name], {input_name: arrays["inputs"]})[0]
    except Exception as e:  # onnxruntime's own error types: wrong shape or dtype for this model
        return [Check("golden logits", False, f"the model cannot run the golden inputs: {str(e).strip()[:300]}")]
    diff = float(np.abs(logits - arrays["logits"]).max())
    atol = float(golden["tolerance"]["logits_atol"])
    agree = int((logits.argmax(axis=1) == arrays["top1"]).sum())
    count = len(arrays["top1"])
    checks = [
        Check("golden logits", diff <= atol, f"max abs diff {diff:.3g} (tolerance {atol:.3g}) on {count} samples"),
        Check("golden top-1", agree == count, f"{agree}/{count} match"),
    ]
    if RAW_GOLDEN in arrays:
        checks.append(check_documented_preprocessing(arrays, manifest))
    return checks


def check_io_golden(arrays: dict[str, np.ndarray], manifest: dict[str, Any], session) -> list[Check]:
    """Golden vectors of a model with any inputs and outputs (`edge-distill optimize`): every
    output within its tolerance, over every sample."""
    from edge_distill.device.runner import golden_differences, golden_feeds

    atol, count = manifest["golden"]["tolerance"]["atol"], manifest["golden"]["count"]
    try:
        diffs = golden_differences(session, *golden_feeds(arrays))
    except Exception as e:  # onnxruntime's own error types: wrong shape or dtype for this model
        return [Check("golden outputs", False, f"the model cannot run the golden inputs: {str(e).strip()[:300]}")]
    return [Check(f"golden {name}", diff <= float(atol[name]),
                  f"max abs diff {diff:.3g} (tolerance {float(atol[name]):.3g}) on {count} samples")
            for name, diff in diffs.items()]


def check_documented_preprocessing(arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> Check:
    """The manifest's preprocessing, applied to the raw golden samples as an app would, must give
    the model inputs: the documented recipe is the one the model was trained with."""
    try:
        derived = normalize(arrays[RAW_GOLDEN], manifest.get("preprocessing", {}))
        diff = float(np.abs(derived - arrays["inputs"]).max())
    except (KeyError, TypeError, ValueError) as e:
        return Check("documented preprocessing", False, f"cannot apply manifest preprocessing ({e})")
    return Check("documented preprocessing", diff <= PREPROCESSING_ATOL,
                 f"raw golden samples through manifest.preprocessing: max abs diff {diff:.2g} "
                 f"(tolerance {PREPROCESSING_ATOL:g})")


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


def render(checks: list[Check]) -> str:
    lines = [f"{'PASS' if c.passed else 'FAIL'}  {c.name:<24} {c.detail}" for c in checks]
    failed = sum(not c.passed for c in checks)
    lines.append(f"bundle FAILED {failed} of {len(checks)} checks" if failed else f"bundle OK: all {len(checks)} checks passed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify an edge-distill bundle with numpy + onnxruntime only.")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    try:
        checks = verify_bundle(args.bundle)
    except BundleError as e:
        if args.json:
            print(json.dumps({"error": e.message, "hint": e.hint, "exit_code": e.exit_code, "type": type(e).__name__}))
        print(f"Error: {e.message}" + (f"\nHint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return e.exit_code
    ok = all(c.passed for c in checks)
    if args.json:
        print(json.dumps({"bundle": str(args.bundle), "passed": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(render(checks))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
