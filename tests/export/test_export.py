import numpy as np
import onnx
import pytest
import torch

from edge_distill.errors import ExportParityError, InputFileError, ModelError
from edge_distill.export.onnx_export import check_export_parity, export_onnx
from edge_distill.export.onnx_io import compare_outputs, run_onnx
from edge_distill.onnx_model import load_onnx
from edge_distill.export.simplify import simplify_onnx
from edge_distill.models.families import ConvNet


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = ConvNet((1, 8, 8), 10, 8, 2).eval()
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    export_onnx(model, x, path, opset=18)
    return model, path, x


def test_export_matches_pytorch_with_dynamic_batch(exported):
    model, path, x = exported
    diffs = check_export_parity(model, path, x, atol=1e-4, rtol=1e-3)
    assert diffs["logits"] < 1e-4
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    assert run_onnx(path, x[:5])["logits"].shape == (5, 10)


def test_parity_error_names_the_output_and_its_diff(exported):
    model, path, x = exported
    changed = ConvNet((1, 8, 8), 10, 8, 2).eval()  # other weights than the exported ones
    with pytest.raises(ExportParityError, match=r"'logits' max abs diff \d"):
        check_export_parity(changed, path, x, atol=1e-4, rtol=1e-3)


def test_compare_outputs_lists_every_failing_output():
    ref = {"a": np.zeros(3), "b": np.zeros(3), "c": np.zeros(3)}
    got = {"a": np.array([0, 0, 0.5]), "b": np.zeros(3), "c": np.array([2.0, 0, 0])}
    with pytest.raises(ExportParityError) as e:
        compare_outputs(ref, got, atol=1e-3, rtol=0, what="test")
    assert "'a' max abs diff 0.5" in e.value.message and "'c' max abs diff 2" in e.value.message
    assert "'b'" not in e.value.message


def test_export_refuses_an_opset_it_cannot_produce(exported, tmp_path):
    model, _, x = exported
    with pytest.raises(ModelError, match="export.opset = 13 was asked"):
        export_onnx(model, x, tmp_path / "old.onnx", opset=13)


def test_simplify_keeps_outputs(exported, tmp_path):
    _, path, x = exported
    report = simplify_onnx(path, tmp_path / "simple.onnx", x, atol=1e-5, rtol=1e-4)
    assert report["nodes_after"] <= report["nodes_before"]
    np.testing.assert_allclose(run_onnx(tmp_path / "simple.onnx", x)["logits"], run_onnx(path, x)["logits"], atol=1e-5)


def test_not_a_model_is_an_input_error(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\x00\x01 definitely not protobuf of a model")
    with pytest.raises(InputFileError, match="bogus.onnx: not a valid ONNX model"):
        load_onnx(bogus)
