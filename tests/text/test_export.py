"""A text encoder as ONNX: two int64 inputs with dynamic batch and length, the pooled embedding
out, equal to PyTorch at two lengths; both int8 forms load and stay close to float."""

import numpy as np
import onnx
import pytest

from edge_distill.text.export import check_text_parity, export_text_encoder
from edge_distill.export.quantize import apply_recipe, quantize_model_on_feeds
from edge_distill.text.settings import INT8, STATIC_INT8
from edge_distill.text.teacher import batch_ids, load_teacher
from tests.text.conftest import SENTENCES


@pytest.mark.slow  # the fast suite's text build exports its student and checks parity at two lengths
def test_export_has_dynamic_batch_and_length_and_matches_pytorch(tiny_bert, tmp_path):
    teacher = load_teacher(tiny_bert, max_length=32)
    path = tmp_path / "encoder.onnx"
    export_text_encoder(teacher.model, teacher.pooling, teacher.tokenizer, path)
    graph = onnx.load(str(path)).graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == \
        [("input_ids", onnx.TensorProto.INT64), ("attention_mask", onnx.TensorProto.INT64)]
    assert all(d.dim_param for i in graph.input for d in i.type.tensor_type.shape.dim)  # batch and length symbolic
    parity = check_text_parity(teacher.model, teacher.pooling, teacher.tokenizer, path, SENTENCES)
    assert set(parity) == {"16", "full"} and max(parity.values()) < 1e-4


@pytest.mark.slow  # a second export; the fast suite's text bundle is dynamic int8 and verified
def test_dynamic_and_static_int8_run_and_stay_close_to_float(tiny_bert, tmp_path):
    import onnxruntime as ort

    teacher = load_teacher(tiny_bert, max_length=32)
    fp32 = tmp_path / "fp32.onnx"
    export_text_encoder(teacher.model, teacher.pooling, teacher.tokenizer, fp32)
    ids, mask = batch_ids(teacher.tokenizer, SENTENCES)
    feeds = [{"input_ids": ids[i : i + 1], "attention_mask": mask[i : i + 1]} for i in range(len(SENTENCES))]
    assert apply_recipe(INT8, fp32, tmp_path / "dynamic.onnx")["quantized_nodes"] > 0
    assert quantize_model_on_feeds(fp32, tmp_path / "static.onnx", feeds, STATIC_INT8, tmp_path)["quantized_nodes"] > 0
    reference = ort.InferenceSession(str(fp32)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    for name in ("dynamic", "static"):
        model = onnx.load(str(tmp_path / f"{name}.onnx"))
        ops = {n.op_type for n in model.graph.node}
        assert ("DynamicQuantizeLinear" in ops or "MatMulInteger" in ops) if name == "dynamic" else "QuantizeLinear" in ops
        out = ort.InferenceSession(str(tmp_path / f"{name}.onnx")).run(None, {"input_ids": ids, "attention_mask": mask})[0]
        cosine = np.sum(out * reference, axis=1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
        assert cosine.min() > 0.95, (name, cosine.min())
