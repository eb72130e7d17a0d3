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


def three_input_model(path: Path, opset: int = 17) -> Path:
    """A streaming-audio-style model as models trained elsewhere come: audio (1, 16) and a recurrent
    state (1, 8), both float32, and a sample rate as an int64 scalar; outputs class scores (1, 4)
    and the next state (1, 8)."""
    rng = np.random.default_rng(0)
    weights = {"w_in": rng.standard_normal((24, 12)), "w_scores": rng.standard_normal((12, 4)),
               "w_state": rng.standard_normal((12, 8)), "rate_scale": np.array([1e-4])}
    nodes = [
        helper.make_node("Concat", ["audio", "state"], ["joined"], axis=1),
        helper.make_node("MatMul", ["joined", "w_in"], ["hidden_raw"]),
        helper.make_node("Cast", ["sr"], ["rate"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["rate", "rate_scale"], ["rate_term"]),
        helper.make_node("Add", ["hidden_raw", "rate_term"], ["hidden_sum"]),
        helper.make_node("Relu", ["hidden_sum"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w_scores"], ["scores"]),
        helper.make_node("MatMul", ["hidden", "w_state"], ["state_raw"]),
        helper.make_node("Tanh", ["state_raw"], ["state_out"]),
    ]
    graph = helper.make_graph(
        nodes, "three_inputs",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 16]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def three_input_samples(path: Path, count: int = 30, **override) -> Path:
    """Calibration samples for `three_input_model`: audio stacked along its batch axis (N, 16),
    state one feed per row (N, 1, 8), sr one int64 per sample (N,)."""
    rng = np.random.default_rng(1)
    arrays = {"audio": rng.standard_normal((count, 16)).astype(np.float32),
              "state": np.tanh(rng.standard_normal((count, 1, 8))).astype(np.float32),
              "sr": np.full(count, 16000, np.int64)} | override
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def branch_model(path: Path) -> Path:
    """silero-vad v5's layout: all compute inside the two branches of an `If` on the sample rate
    (an int64 scalar input `sr`), which ONNX Runtime's quantizer does not enter. audio (1, 16) ->
    scores (1, 4)."""
    rng = np.random.default_rng(3)

    def branch(name: str) -> onnx.GraphProto:
        weight = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), f"w_{name}")
        return helper.make_graph([helper.make_node("MatMul", ["audio", weight.name], [f"scores_{name}"])], name, [],
                                 [helper.make_tensor_value_info(f"scores_{name}", TensorProto.FLOAT, [1, 4])], [weight])

    nodes = [helper.make_node("Constant", [], ["rate_16k"], value=numpy_helper.from_array(np.array(16000, np.int64))),
             helper.make_node("Equal", ["sr", "rate_16k"], ["is_16k"]),
             helper.make_node("If", ["is_16k"], ["scores"], then_branch=branch("at_16k"), else_branch=branch("at_8k"))]
    graph = helper.make_graph(nodes, "branches",
                              [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 16]),
                               helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def looped_matmul_model(path: Path) -> Path:
    """All compute inside a Loop body (a MatMul applied twice), which no quantizer enters.
    x (1, 16) -> y (1, 16)."""
    weight = numpy_helper.from_array((np.random.default_rng(6).standard_normal((16, 16)) / 4).astype(np.float32), "w")
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "w"], ["x_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, 16])], [weight])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "looped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(np.array(2, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def gemm_2d_bias_model(path: Path) -> Path:
    """The layout of the file-type model `magika` ships that broke ONNX Runtime's per-channel
    quantizer (onnxruntime issue 24815): a Gemm whose bias is (1, N), not (N,). x (1, 16) ->
    y (1, 8)."""
    rng = np.random.default_rng(4)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["hidden"]), helper.make_node("Relu", ["hidden"], ["y"])],
        "gemm_2d_bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((1, 8)).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def correlated_samples(path: Path, count: int, width: int = 32, seed: int = 0) -> Path:
    """x (count, 1, width) spanning 4 bounded directions plus a little noise, as real activations are
    correlated: trained rounding can cancel its error along them, round-to-nearest cannot."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (count, 1, 4)) @ rng.standard_normal((4, width))
    np.savez(path, x=(x + 0.05 * rng.standard_normal((count, 1, width))).astype(np.float32))
    return path


def outlier_weight_model(path: Path) -> Path:
    """Two MatMul layers whose first weight has one large value per output channel beside many
    small ones: per-channel int8 spends its steps on the outlier and rounds the rest coarsely, an
    error no activation range repairs but trained rounding can. x (1, 32) -> y (1, 8)."""
    rng = np.random.default_rng(5)
    first = 0.02 * rng.standard_normal((32, 32))
    first[rng.integers(0, 32, 32), np.arange(32)] = 2.0
    weights = {"w1": first, "b1": 0.05 * rng.standard_normal(32), "w2": 0.3 * rng.standard_normal((32, 8))}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Add", ["h1", "b1"], ["h2"]),
         helper.make_node("Relu", ["h2"], ["h3"]), helper.make_node("MatMul", ["h3", "w2"], ["y"])],
        "outlier_weights", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def rapidocr_models() -> Path | None:
    """The folder of PP-OCR ONNX models inside the PyPI package rapidocr-onnxruntime (.ci/run
    installs it without its dependencies: only the model files are read, the package is not
    imported), or None where it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    return Path(spec.submodule_search_locations[0]) / "models" if spec else None


def text_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Lines of printed text (random words, dark on light, some upside down) as an OCR model reads
    them: (N, 3, height, width) float32, (pixel / 255 - 0.5) / 0.5 as PaddleOCR normalizes."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    images = []
    for i in range(count):
        image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(image)
        words = " ".join("".join(rng.choice(letters, rng.integers(2, 8))) for _ in range(rng.integers(2, 6)))
        font = ImageFont.load_default(size=int(min(height * 0.6, 40)))
        for y in range(int(rng.integers(2, 8)), height - 8, 48):  # one line per 48 px
            draw.text((int(rng.integers(2, 12)), y), words, fill=tuple(int(v) for v in rng.integers(0, 80, 3)), font=font)
        if i % 2:
            image = image.rotate(180)
        images.append(np.asarray(image, np.float32).transpose(2, 0, 1))
    return ((np.stack(images) / 255.0 - 0.5) / 0.5).astype(np.float32)


def bundle(folder: Path) -> Path:
    """A bundle `verify` passes: the linear classifier, golden vectors and a manifest hashing them."""
    from edge_distill.bundle.kinds.classifier import write_golden

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


def hostile_model(path: Path, kind: str) -> Path:
    """A model as an attacker or a broken exporter writes it, on the linear classifier's input:
    "custom-op" (a node of a domain no runtime here has), "no-outputs" (a graph that returns
    nothing), "bfloat16" (an input type the CPU kernels lack), "expand-160gb" (a run that asks
    for 160 GB)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])
    opsets = [helper.make_opsetid("", 18)]
    if kind == "custom-op":
        nodes, inputs, outputs = [helper.make_node("Secret", ["x"], ["y"], domain="com.example.evil")], [x], [y]
        opsets.append(helper.make_opsetid("com.example.evil", 1))
    elif kind == "no-outputs":
        nodes, inputs, outputs = [helper.make_node("Relu", ["x"], ["y"])], [x], []
    elif kind == "bfloat16":
        x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 1, 8, 8])
        nodes, inputs, outputs = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [x], [y]
    elif kind == "expand-160gb":
        shape = numpy_helper.from_array(np.array([1, 1, 8, 8, 10_000, 10_000, 8], np.int64), "shape")
        nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["x7"]), helper.make_node("Expand", ["x7", "shape"], ["y"])]
        inputs, outputs = [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8, 10_000, 10_000, 8])]
        graph = helper.make_graph(nodes, kind, inputs, outputs,
                                  [shape, numpy_helper.from_array(np.array([4, 5, 6], np.int64), "axes")])
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 9
        onnx.save(model, str(path))
        return path
    else:
        raise ValueError(kind)
    model = helper.make_model(helper.make_graph(nodes, kind, inputs, outputs), opset_imports=opsets)
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def loop_model(path: Path, trips: int = 10**12) -> Path:
    """x (1,) -> a Loop adding 1 to it `trips` times -> y (1,): a model whose run never ends in practice."""
    body = helper.make_graph(
        [helper.make_node("Add", ["x_in", "one"], ["x_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array(trips, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path
