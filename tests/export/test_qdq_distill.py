"""Quantization-aware distillation of a QDQ ONNX model (export/qdq_distill.py): the torch twin
computes what ONNX Runtime's QDQ reference arithmetic computes, training lowers the error on held
samples, the written model runs on ONNX Runtime's int8 kernels, and an op it cannot train is one
clear refusal."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edge_distill.config import load_config
from edge_distill.export.qdq_distill import DistillSettings, QdqModule, distill_int8
from edge_distill.errors import QuantizeError
from edge_distill.export.budget import prepare, quantize_feeds
from edge_distill.sessions import run_model
from tests import handmade


def conv_model(path):
    """Conv (asymmetric pads, groups), HardSigmoid gate, ConvTranspose, BatchNormalization and
    nearest Resize (a detector's neck), pools, Gemm head and Softmax: the layers of mobile vision models.
    x (1, 3, 12, 12) -> probabilities (1, 5)."""
    rng = np.random.default_rng(7)
    weights = {"c1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
               "c2": rng.standard_normal((8, 2, 3, 3)) * 0.3, "fc": rng.standard_normal((5, 8)) * 0.5,
               "fcb": rng.standard_normal(5) * 0.1, "shape": np.array([0, -1]),
               "up": rng.standard_normal((8, 8, 2, 2)) * 0.3, "half": np.array([1, 1, 0.5, 0.5]),
               "bn_scale": 1 + 0.1 * rng.standard_normal(8), "bn_bias": 0.1 * rng.standard_normal(8),
               "bn_mean": 0.1 * rng.standard_normal(8), "bn_var": 1 + 0.1 * rng.random(8)}
    nodes = [
        helper.make_node("Conv", ["x", "c1", "b1"], ["a"], pads=[0, 0, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["a_relu"]),
        helper.make_node("Conv", ["a_relu", "c2"], ["b"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("HardSigmoid", ["b"], ["gate"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["b", "gate"], ["gated"]),
        helper.make_node("ConvTranspose", ["gated", "up"], ["upsampled"], strides=[2, 2]),
        helper.make_node("Resize", ["upsampled", "", "half"], ["resized"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        # After a Resize, nothing to fold a BatchNormalization into: it stays, as in PP-OCR's detector.
        helper.make_node("BatchNormalization", ["resized", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["normed"]),
        helper.make_node("MaxPool", ["normed"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["pooled"], ["smooth"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["smooth"], ["global"]),
        helper.make_node("Reshape", ["global", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "mobile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 5])],
                              [numpy_helper.from_array(w.astype(np.int64 if name == "shape" else np.float32), name)
                               for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def post_training_int8(model, feeds, work, reduce_range=True):
    config = load_config("x86-avx512", None, [f"quantize.reduce_range={str(reduce_range).lower()}"])
    prepared, per_channel = prepare(model, config, work, [], lambda _: None)
    quantize_feeds(prepared, feeds, config, per_channel, [], work / "int8.onnx", [])
    return work / "int8.onnx"


def reference_outputs(model, feeds):
    """ONNX Runtime's QDQ model in float arithmetic (each QuantizeLinear/DequantizeLinear as written)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed)[0] for feed in feeds]


def test_the_torch_twin_computes_what_the_qdq_graph_computes(tmp_path):
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(8)]
    int8 = post_training_int8(conv_model(tmp_path / "conv.onnx"), feeds, tmp_path)
    module = QdqModule(onnx.load(str(int8)), reduce_range=True)
    # Three convs, the head and the BatchNormalization scale; int32 biases of a Conv, the head and the BN.
    assert len(module.weights) == 5 and len(module.bias) == 3
    with torch.no_grad():
        ours = [module({"x": torch.from_numpy(feed["x"])})["probabilities"].numpy() for feed in feeds]
    step = float(numpy_helper.to_array(next(t for t in onnx.load(str(int8)).graph.initializer
                                            if t.name == "probabilities_scale")))
    for got, expected in zip(ours, reference_outputs(int8, feeds)):
        assert np.abs(got - expected).max() <= step * 1.01  # at most one output step (a rounding tie)
    # Written back untrained, the same model: int8 weights, scales and int32 biases unchanged.
    written = {t.name: numpy_helper.to_array(t) for t in module.export().graph.initializer}
    for tensor in onnx.load(str(int8)).graph.initializer:
        np.testing.assert_array_equal(written[tensor.name], numpy_helper.to_array(tensor))


def test_distillation_lowers_the_error_and_writes_a_model_for_int8_kernels(tmp_path):
    model = handmade.outlier_weight_model(tmp_path / "outliers.onnx")
    x = np.load(handmade.correlated_samples(tmp_path / "samples.npz", 300))["x"]
    feeds = [{"x": row} for row in x]
    int8 = post_training_int8(model, feeds[:200], tmp_path)
    outputs = run_model(model, feeds)
    targets = [{"y": outputs["y"][i]} for i in range(len(feeds))]
    progress = []
    report = distill_int8(int8, feeds[:200], targets[:200], tmp_path / "distilled.onnx",
                          DistillSettings(epochs=6, max_seconds=120, reduce_range=True), progress.append)
    assert report["best_epoch"] > 0 and report["error_db"]["after"] > report["error_db"]["before"] + 1
    assert report["samples"] + report["kept_back"] == 200 and len(progress) == 7

    def snr(path):
        got = run_model(path, feeds[200:])["y"]
        return 10 * np.log10((outputs["y"][200:] ** 2).sum() / ((got - outputs["y"][200:]) ** 2).sum())

    assert snr(tmp_path / "distilled.onnx") > snr(int8) + 1  # on samples it never saw
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "distilled.onnx"), options, providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert ops & {"QGemm", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul"}, ops
    assert not ops & {"MatMul", "Gemm", "FusedGemm", "FusedMatMul"}, ops
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "distilled.onnx")).graph.initializer
               if t.data_type == TensorProto.INT8]
    assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)  # 7-bit, as reduce_range made them


def test_a_graph_with_an_op_it_cannot_train_is_refused_naming_the_op(tmp_path):
    graph = helper.make_graph([helper.make_node("Einsum", ["x", "w"], ["y"], equation="ij,jk->ik")], "einsum",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
                              [numpy_helper.from_array(np.eye(2, dtype=np.float32), "w")])
    with pytest.raises(QuantizeError, match="does not support op.s. Einsum"):
        QdqModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


PP_OCR = [("ch_ppocr_mobile_v2.0_cls_infer", (48, 192)), ("ch_PP-OCRv4_rec_infer", (48, 320))]


@pytest.mark.real
@pytest.mark.skipif(handmade.rapidocr_models() is None, reason="pip install --no-deps rapidocr-onnxruntime (.ci/run does)")
@pytest.mark.parametrize("name, size", PP_OCR, ids=[n for n, _ in PP_OCR])
def test_real_pp_ocr_int8_as_a_trainable_twin_matches_onnx_runtime_and_distils(tmp_path, name, size):
    """The PP-OCR classifier and recognizer (Paddle exports: HardSigmoid gates, decomposed layer
    norms, attention) as QDQ int8: the torch twin computes ONNX Runtime's QDQ arithmetic, and a
    short distillation on rendered text lines writes a model ONNX Runtime runs on int8 kernels."""
    lines = [{"x": image[None]} for image in handmade.text_images(28, *size, seed=2)]
    fp32 = handmade.rapidocr_models() / f"{name}.onnx"
    int8 = post_training_int8(fp32, lines[:24], tmp_path)
    module = QdqModule(onnx.load(str(int8)), reduce_range=True)
    output = onnx.load(str(int8)).graph.output[0].name
    with torch.no_grad():
        ours = [module({"x": torch.from_numpy(feed["x"])})[output].numpy() for feed in lines[24:]]
    expected = np.stack(reference_outputs(int8, lines[24:]))
    floats = run_model(fp32, lines[24:])[output]

    def snr(reference, other):
        return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((reference - other) ** 2))

    # Every op as ONNX Runtime computes it: the float model (pre-processed, BatchNorm folded) as a
    # twin reproduces float to rounding.
    float_twin = QdqModule(onnx.load(str(tmp_path / "prepared.onnx")))
    with torch.no_grad():
        float_ours = np.stack([float_twin({"x": torch.from_numpy(f["x"])})[output].numpy() for f in lines[24:]])
    assert snr(floats, float_ours) > 80
    # int8: ONNX Runtime's float QDQ arithmetic but for rounding ties (a sum landing on half a step
    # rounds either way with another accumulation order) that flip a step and cascade through
    # hundreds of quantizers: closer to it than int8 is to float, by a margin.
    assert snr(expected, np.stack(ours)) > snr(floats, expected) + 3, (snr(expected, np.stack(ours)),
                                                                        snr(floats, expected))
    outputs = run_model(fp32, lines[:24])
    targets = [{k: v[i] for k, v in outputs.items()} for i in range(24)]
    report = distill_int8(int8, lines[:24], targets, tmp_path / "distilled.onnx",
                          DistillSettings(epochs=1, max_seconds=120, reduce_range=True))
    assert report["steps"] >= 2 and report["error_db"]["after"] >= report["error_db"]["before"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "distilled.onnx"), options, providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops, ops
