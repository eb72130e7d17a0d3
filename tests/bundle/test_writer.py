"""bundle/writer.py: the envelope every kind ends with."""

import json

from edge_distill.bundle.reader import SCHEMA_VERSION
from edge_distill.bundle.writer import finish_bundle
from edge_distill.hashing import LIBRARIES, sha256


def test_finish_bundle_hashes_every_file_and_the_card_and_keeps_local_paths_out_of_both(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"model")
    (tmp_path / "golden.npz").write_bytes(b"golden")
    manifest = {"generator": {"name": "edge-distill", "version": "0", "command": "optimize"},
                "model": {"file": "model.onnx"}, "labels": [],
                "inputs": [{"name": "x", "shape": [1]}], "outputs": [{"name": "y", "shape": [1]}],
                "golden": {"kind": "io", "npz": "golden.npz", "json": "golden.json", "count": 1,
                           "tolerance": {"atol": {"y": 0.0}},
                           "arrays": {name: {"shape": [1, 1], "dtype": "float32"} for name in ("input:x", "output:y")}},
                "training": {"data": "/home/someone/private/data.npz"}}
    written = finish_bundle(manifest, tmp_path, ("model.onnx", "golden.npz"),
                            lambda m: f"# card\ntrained on {m['training']['data']}\n")
    assert list(written)[0] == "schema_version" and written["schema_version"] == SCHEMA_VERSION
    assert set(written["versions"]) == {*LIBRARIES, "python"}  # the cache key's list, every kind alike
    assert set(written["files"]) == {"model.onnx", "golden.npz", "README.md"}
    assert written["files"]["README.md"]["sha256"] == sha256(tmp_path / "README.md")
    card, stored = (tmp_path / "README.md").read_text(), (tmp_path / "manifest.json").read_text()
    assert "data.npz" in card and "/home/someone" not in card and "/home/someone" not in stored
    assert json.loads(stored) == written
