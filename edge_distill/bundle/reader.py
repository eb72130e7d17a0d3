"""The bundle format as a reader sees it: the manifest's schema, and a `Bundle` that loads and checks
a bundle folder's manifest, model path and golden vectors in one place.

Runs where the model runs: standard library, numpy and edge_distill.errors/hashing only (no torch,
no onnx), like device/runner.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.bundle.integrity import inside, integrity_checks
from edge_distill.errors import BundleError, EdgeDistillError, ModelError, describe
from edge_distill.files import read_json
from edge_distill.schema import Either, Int, ListOf, MapOf, Null, Num, Obj, Str, check

SCHEMA_VERSION = 1  # the newest manifest schema this verifier understands
REQUIRED_KEYS = ("schema_version", "files", "model", "inputs", "outputs", "labels", "golden")
GOLDEN_ARRAYS = ("inputs", "logits", "top1")
# Optional: the same samples before preprocessing (pixels as an app reads them), in bundles that state
# their raw input.
RAW_GOLDEN = "raw_inputs"
# A generator's golden generations (edge-distill llm, lm/bundle.py).
GENERATION_ARRAYS = ("prompt_ids", "prompt_lengths", "greedy_ids", "first_logits")
METADATA_PREFIX = "edge_distill."



def normalize(raw: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
    """The manifest's formula, x = (pixel * pixel_scale - mean[c]) / std[c], on raw samples
    (N, C, ...) channels first: what an app does before running the model."""
    per_channel = (slice(None),) + (None,) * (raw.ndim - 2)
    mean, std = np.asarray(preprocessing["mean"])[per_channel], np.asarray(preprocessing["std"])[per_channel]
    return ((raw * float(preprocessing["pixel_scale"]) - mean) / std).astype(np.float32)


@dataclass
class Bundle:
    """A bundle folder whose manifest has been read and shape-checked."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> "Bundle":
        """The bundle with its manifest read and shape-checked; its files not yet vouched for."""
        return cls(path, read_manifest(path))

    @classmethod
    def open_checked(cls, path: Path) -> "Bundle":
        """The bundle, refused unless every integrity check passes (bundle/integrity.py: hashes,
        paths inside, no unlisted file, no symlink, external data): what every command that runs,
        copies or reports a bundle's files opens it with."""
        bundle = cls.open(path)
        failed = [c for c in integrity_checks(path, bundle.manifest, bundle.model_path) if not c.passed]
        if failed:
            raise BundleError(f"{path}: refused, the bundle is not as its manifest vouches: {failed[0].name}: "
                              f"{failed[0].detail}" + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
                              f"edge-distill verify {path} lists every check; rebuild or copy the bundle again")
        return bundle

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]["file"]

    def golden(self) -> dict[str, np.ndarray]:
        """The golden vectors, checked against the manifest and against their JSON copy."""
        return load_golden(self.path, self.manifest["golden"])

    @property
    def kind(self) -> str:
        """The bundle's kind (bundle/kinds/), the one place that tells them apart: "generation" (a
        KV-cache decoder with golden generations), "text" (a `text` section: a tokenizer to check
        against io golden vectors), "io" (golden vectors of any inputs and outputs) or "classifier"."""
        golden = self.manifest["golden"].get("kind")
        if golden == "generation":
            return "generation"
        if "text" in self.manifest:  # its tokenizer is checked, whatever its golden vectors hold
            return "text"
        return "io" if golden == "io" else "classifier"

    @property
    def any_io(self) -> bool:
        """Whether its golden vectors are of the io kind (any inputs and outputs: optimize and text
        bundles) rather than a classifier's single input and logits."""
        return self.manifest["golden"].get("kind") == "io"

    def section(self, *keys: str) -> Any:
        """manifest[keys[0]][keys[1]]..., or a BundleError naming the missing key."""
        value: Any = self.manifest
        for depth, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                raise BundleError(f"{self.path / 'manifest.json'}: missing '{'.'.join(keys[: depth + 1])}'",
                                  rebuild_hint(self.manifest))
            value = value[key]
        return value


def read_manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / "manifest.json"
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a folder", "give the folder that holds manifest.json")
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{path}: missing", "is this an edge-distill bundle?")
    manifest = read_json(path, error=BundleError)
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{path}: missing key(s) {', '.join(missing)}", rebuild_hint(manifest))
    version = manifest["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{path}: schema_version must be a positive integer, got {version!r}",
                          rebuild_hint(manifest))
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{path}: schema_version {version} is newer than this verifier understands ({SCHEMA_VERSION})",
            "upgrade edge-distill",
        )
    check_manifest_shape(manifest, path)
    return manifest


BENCHMARK = Obj({"providers": Either(ListOf(Str(nonempty=True), min_length=1), Str(nonempty=True)),
                 "threads": Int(1, 1024), "batch_size": Int(1, 4096), "warmup_runs": Int(0, 100_000),
                 "timed_runs": Int(1, 10_000_000), "min_seconds": Num(min=0), "cold_start_runs": Int(1, 10_000)},
                required={"providers", "threads", "batch_size", "warmup_runs", "timed_runs", "min_seconds",
                          "cold_start_runs"})
TENSOR = Obj({"name": Str(nonempty=True), "shape": ListOf(Either(Int(0), Str()), max_length=64)},
             required={"name", "shape"}, expected='an object with a "name" string and a "shape" list')
ARRAY = Obj({"shape": ListOf(Int(0), max_length=64), "dtype": Str(nonempty=True)}, required={"shape", "dtype"},
            expected='an object with a "shape" list and a "dtype" string')
# The manifest as every reader (verify, predict, bench, emulation) relies on it; optional sections
# are checked when present. docs/manifest.md describes each key.
MANIFEST = Obj({
    "files": MapOf(Obj({"sha256": Str(nonempty=True), "size_bytes": Int(0)}, required={"sha256"},
                       expected='an object with a "sha256" string'), nonempty=True,
                   expected="a non-empty object of file name -> {sha256, size_bytes}"),
    "model": Obj({"file": Str(nonempty=True), "sha256": Str(), "precision": Str()}, required={"file"},
                 expected='an object with a "file" string'),
    "inputs": ListOf(TENSOR, min_length=1, max_length=1024, expected="a non-empty list of {name, shape}"),
    "outputs": ListOf(TENSOR, min_length=1, max_length=1024, expected="a non-empty list of {name, shape}"),
    "labels": ListOf(Str(), max_length=1_000_000, expected="a list of strings"),
    "golden": Obj({"npz": Str(nonempty=True, expected="a file name"), "json": Str(nonempty=True, expected="a file name"),
                   "kind": Str(), "count": Int(1), "arrays": MapOf(ARRAY)}, required={"npz", "json", "arrays"}),
    "profile": Obj({"name": Either(Str(), Null()), "device": Either(Str(), Obj({"arch": Str(), "cpu": Str()})),
                    "benchmark": BENCHMARK}),
    "runtime": Obj({"intra_op_threads": Int(1, 1024)}, required={"intra_op_threads"}),
    "preprocessing": Obj({"mean": ListOf(Num(), min_length=1, max_length=64),
                          "std": ListOf(Num(positive=True), min_length=1, max_length=64),
                          "pixel_scale": Num(positive=True), "color_mode": Str()}),
    "raw_input": Obj({"kind": Str(), "resize": Str(), "dtype": Str()}),
    "text": Obj({"tokenizer": Str(nonempty=True), "golden_text": Str(nonempty=True), "max_length": Int(1, 1_000_000)},
                required={"tokenizer", "golden_text", "max_length"}),
    "generation": Obj({"tokenizer": Str(nonempty=True), "settings": Str(nonempty=True), "max_length": Int(1, 10_000_000),
                       "eos_token_ids": ListOf(Int(0), min_length=1, max_length=64)},
                      required={"tokenizer", "settings", "max_length", "eos_token_ids"}),
}, required=set(REQUIRED_KEYS))
COMMANDS = ("build", "optimize", "text", "llm")  # the commands that write a bundle


def rebuild_hint(manifest: Any) -> str:
    """"rebuild the bundle with edge-distill COMMAND", the command its manifest says made it."""
    generator = manifest.get("generator") if isinstance(manifest, dict) else None
    command = generator.get("command") if isinstance(generator, dict) else None
    return f"rebuild the bundle with edge-distill {command if command in COMMANDS else 'build'}"


def check_manifest_shape(manifest: dict[str, Any], path: Path) -> None:
    """Every value a reader uses has the type it expects (MANIFEST): a malformed manifest is one
    BundleError naming the key, never a traceback halfway through verification."""

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise BundleError(f"{path}: '{key}' must be {expected}", rebuild_hint(manifest))

    check(manifest, MANIFEST, str(path), BundleError, rebuild_hint(manifest))
    golden = manifest["golden"]
    arrays, tolerance = golden["arrays"], golden.get("tolerance")

    def tolerance_ok(atol) -> bool:
        return isinstance(atol, (int, float)) and not isinstance(atol, bool) and np.isfinite(atol) and atol >= 0

    if golden.get("kind") == "io":  # any inputs and outputs (edge-distill optimize)
        wanted = {f"input:{t['name']}" for t in manifest["inputs"]} | {f"output:{t['name']}" for t in manifest["outputs"]}
        need(set(arrays) == wanted, "golden.arrays", f"an object with exactly {', '.join(sorted(wanted))}")
        need(isinstance(golden.get("count"), int), "golden.count", "a positive integer")
        atol = tolerance.get("atol") if isinstance(tolerance, dict) else None
        need(isinstance(atol, dict) and all(tolerance_ok(atol.get(t["name"])) for t in manifest["outputs"]),
             "golden.tolerance.atol", "an object of output name -> a finite number >= 0")
    elif golden.get("kind") == "generation":  # a KV-cache decoder's golden generations (edge-distill llm)
        need(set(arrays) == set(GENERATION_ARRAYS), "golden.arrays", f"an object with {', '.join(GENERATION_ARRAYS)}")
        need("generation" in manifest, "generation", "present in a generator's manifest")
        atol = tolerance.get("first_logits_atol") if isinstance(tolerance, dict) else None
        need(tolerance_ok(atol), "golden.tolerance.first_logits_atol", "a finite number >= 0")
    else:
        need(set(GOLDEN_ARRAYS) <= set(arrays) <= {*GOLDEN_ARRAYS, RAW_GOLDEN},
             "golden.arrays", f"an object with {', '.join(GOLDEN_ARRAYS)} (and optionally {RAW_GOLDEN})")
        atol = tolerance.get("logits_atol") if isinstance(tolerance, dict) else None
        need(tolerance_ok(atol), "golden.tolerance.logits_atol", "a finite number >= 0")


MAX_TOKENIZER_BYTES = 64 * 1024**2  # tokenizer.json: Gemma 3's 262k-token vocabulary is 33 MB


def read_tokenizer(path: Path, max_length: int):
    """A text bundle's tokenizer.json as its app runs it: cut at `max_length`, never padded
    (`verify`, `predict`, and the text build that writes it); at most MAX_TOKENIZER_BYTES, since the
    tokenizers library holds it at several times its size. Needs the tokenizers package."""
    from tokenizers import Tokenizer

    size = path.stat().st_size
    if size > MAX_TOKENIZER_BYTES:
        raise BundleError(f"{path}: {size:,} bytes, more than the {MAX_TOKENIZER_BYTES:,} a tokenizer may hold",
                          "rebuild the bundle with edge-distill text")
    return cut_at(Tokenizer.from_file(str(path)), max_length)


@contextmanager
def tokenizer_errors(what: str, error: type[EdgeDistillError] = ModelError,
                     hint: str = "check tokenizer.json (its pre-tokenizer pattern, its vocabulary) and the text"
                     ) -> Iterator[None]:
    """The tokenizers library's failures as one `error` naming `what`: its Rust panics derive from
    BaseException (pyo3's PanicException), which `except Exception` misses. Every tokenizer read or
    run (a teacher's, a text bundle's, a generator bundle's) goes through it."""
    try:
        with _native_stderr_discarded():
            yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit, EdgeDistillError):
        raise
    except BaseException as e:  # noqa: B036 - PanicException is a BaseException
        raise error(f"{what}: the tokenizers library failed ({describe(e)})", hint) from None


@contextmanager
def _native_stderr_discarded() -> Iterator[None]:
    """File descriptor 2 pointed away for the block: a Rust panic prints its message and (with
    RUST_BACKTRACE) a backtrace straight to it, past Python; the exception carries the message."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def cut_at(tokenizer, max_length: int):
    """`tokenizer` (a tokenizers.Tokenizer) truncating at `max_length` and never padding."""
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


def load_golden(bundle: Path, golden: dict[str, Any]) -> dict[str, np.ndarray]:
    """The .npz vectors, checked against the shapes the manifest states and against the JSON copy."""
    path = inside(bundle, golden["npz"])
    if path is None:
        raise BundleError(f"{bundle / golden['npz']}: points outside the bundle")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in golden["arrays"]}
    except (OSError, KeyError, ValueError) as e:
        raise BundleError(f"{path}: unreadable golden vectors ({e})") from None
    for name, spec in golden["arrays"].items():
        if list(arrays[name].shape) != spec["shape"] or arrays[name].dtype.name != spec["dtype"]:
            raise BundleError(
                f"{path}: '{name}' is {arrays[name].dtype.name}{list(arrays[name].shape)}, "
                f"manifest says {spec['dtype']}{spec['shape']}"
            )
    json_path = inside(bundle, golden["json"])
    copy = read_json(json_path, "golden vectors", error=BundleError) if json_path and json_path.is_file() else {}
    if not isinstance(copy, dict):
        raise BundleError(f"{bundle / golden['json']}: expected a JSON object of {', '.join(GOLDEN_ARRAYS)}")
    for name in arrays:
        if name not in copy or not np.array_equal(np.asarray(copy[name], dtype=arrays[name].dtype), arrays[name]):
            raise BundleError(f"{bundle / golden['json']}: '{name}' differs from {golden['npz']}")
    return arrays
