"""sha256 of files and folders, and the versions of the libraries behind what they hold: cache keys,
bundle manifests and their verification use these. Standard library only (the bundle verifier runs
on devices)."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

# The libraries whose versions can change what a stage makes: the cache key holds them all (an
# upgrade of any reruns what it made: transformers and tokenizers make the text and llm teachers'
# outputs, gguf dequantizes a GGUF teacher), and every manifest's "versions" lists the same.
LIBRARIES = ("edge-distill", "torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "numpy", "scikit-learn",
             "transformers", "tokenizers", "safetensors", "gguf", "onnxruntime-genai")


def library_versions() -> dict[str, str]:
    """{library: its installed version, or "absent"} for LIBRARIES, and Python's version."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions | {"python": platform.python_version()}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_path(path: Path) -> str:
    """sha256 of a file, or of a folder's relative paths and contents in sorted order."""
    if path.is_file():
        return sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256(file).encode())
    return digest.hexdigest()
