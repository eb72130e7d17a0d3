"""Small artifacts built by hand in milliseconds, for tests that need an ONNX file or a bundle but
not a trained one: a Flatten + MatMul classifier on 1x8x8 inputs, a bundle `verify` passes, and
hostile files as an attacker would write them."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_distill.bundle.reader import METADATA_PREFIX, SCHEMA_VERSION
from edge_distill.config import BenchmarkConfig
from edge_distill.hashing import sha256

LABELS = ["a", "b", "c"]


def linear_classifier(path: Path, input_dims: tuple = ("batch", 1, 8, 8), seed: int = 0, classes: int = len(LABELS),
                      scale: float = 1.0) -> Path:
    """x (batch, 1, 8, 8) -> Flatten -> MatMul (64, classes) -> logits (batch, classes), labels in
    metadata. `scale = 0` gives a model that scores every input alike: a teacher at chance."""
    weight = scale * np.random.default_rng(seed).standard_normal((64, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [input_dims[0], classes])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    labels = LABELS if classes == len(LABELS) else [str(i) for i in range(classes)]
    helper.set_model_props(model, {METADATA_PREFIX + "labels": json.dumps(labels)})
    onnx.save(model, str(path))
    return path


def bundle(folder: Path) -> Path:
    """A bundle `verify` passes: the linear classifier, golden vectors and a manifest hashing them."""
    from edge_distill.bundle.writer import write_golden

    folder.mkdir(parents=True)
    model = linear_classifier(folder / "model.onnx")
    x = np.random.default_rng(1).standard_normal((64, 1, 8, 8)).astype(np.float32)
    golden = write_golden(model, x, folder)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "edge-distill", "version": "test"},
        "files": {name: {"sha256": sha256(folder / name), "size_bytes": (folder / name).stat().st_size}
                  for name in ("model.onnx", "golden.npz", "golden.json")},
        "model": {"file": "model.onnx", "sha256": sha256(folder / "model.onnx")},
        "profile": {"name": "handmade", "benchmark": dataclasses.asdict(BenchmarkConfig())},
        "inputs": [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": ["batch", 3], "dtype": "float32"}],
        "labels": LABELS,
        "golden": golden,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


class RunsCode:
    """Unpickling this runs a shell command that creates the workspace's marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def pt2_variant(source: Path, target: Path, pickled_weight: bytes = b"", sample_inputs: bytes = b"",
                extra: dict[str, bytes] | None = None) -> None:
    """A copy of a torch.export archive with one hostile change: its first weight stored as the
    pickle `pickled_weight`, its sample inputs replaced, or `extra` entries added."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        config_name = next(n for n in src.namelist() if n.endswith("weights_config.json"))
        config = json.loads(src.read(config_name))
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        for info in src.infolist():
            data = src.read(info.filename)
            if pickled_weight and info.filename == config_name:
                data = json.dumps(config).encode()
            elif pickled_weight and info.filename.endswith(f"data/weights/{first['path_name']}"):
                data = pickled_weight
            elif sample_inputs and "/data/sample_inputs/" in info.filename:
                data = sample_inputs
            dst.writestr(info, data)
        for name, data in (extra or {}).items():
            dst.writestr(f"{root}/{name}", data)
