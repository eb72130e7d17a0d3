"""Teachers from every kind of file give the module's logits; bad teachers fail with one line."""

import numpy as np
import pytest
import torch

from edge_distill.distill.teachers import TeacherEnsemble, from_module, load_teacher_file
from edge_distill.models.formats import sniff_format
from edge_distill.errors import InputFileError, ModelError
from edge_distill.export.onnx_export import export_onnx
from edge_distill.models.families import ConvNet

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def module():
    torch.manual_seed(0)
    return ConvNet(SHAPE, 10, 4, 1).eval()


@pytest.fixture(scope="module")
def files(module, tmp_path_factory):
    folder = tmp_path_factory.mktemp("teachers")
    x = torch.randn(3, *SHAPE)
    torch.jit.save(torch.jit.trace(module, x), folder / "t.ts.pt")
    program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, folder / "t.pt2")
    export_onnx(module, x.numpy(), folder / "t.onnx", 18)
    torch.save(module.state_dict(), folder / "t.pt")
    return folder


@pytest.mark.parametrize("name, kind", [("t.ts.pt", "torchscript"), ("t.pt2", "torch.export"), ("t.onnx", "onnx"),
                                        ("t.pt", "state_dict")])
def test_every_format_gives_the_modules_logits(module, files, name, kind):
    assert sniff_format(files / name) == kind
    teacher = load_teacher_file(files / name, "teacher.file", SHAPE, 10, lambda: ConvNet(SHAPE, 10, 4, 1))
    x = np.random.default_rng(0).standard_normal((5, *SHAPE)).astype(np.float32)
    expected = from_module(module).logits(x)
    np.testing.assert_allclose(teacher.logits(x), expected, atol=1e-4)
    # Only a Python module has hookable layers (feature hints); only ONNX has no module to re-export.
    assert teacher.hookable == (kind == "state_dict")
    assert (teacher.module is None) == (kind == "onnx")


def test_onnx_teacher_whose_input_does_not_match_the_data(files):
    with pytest.raises(ModelError, match=r"takes input 'input' of shape \(\?, 1, 8, 8\), the data gives \(batch, 3, 8, 8\)"):
        load_teacher_file(files / "t.onnx", "teacher.file", (3, 8, 8), 10)


def test_teacher_with_other_class_count(files):
    with pytest.raises(ModelError, match=r"teacher.file outputs \(3, 10\) but the data has 5 classes"):
        load_teacher_file(files / "t.onnx", "teacher.file", SHAPE, 5)


def test_export_with_a_fixed_batch_is_refused_before_training(module, tmp_path):
    torch.export.save(torch.export.export(module, (torch.randn(2, *SHAPE),)), tmp_path / "fixed.pt2")
    with pytest.raises(ModelError, match=r"cannot run on inputs of shape \(3, 1, 8, 8\)") as error:
        load_teacher_file(tmp_path / "fixed.pt2", "teacher.file", SHAPE, 10)
    assert "dynamic batch" in error.value.hint


def test_missing_and_bare_weight_files(files, tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_teacher_file(tmp_path / "nope.onnx", "teacher.file", SHAPE, 10)
    with pytest.raises(ModelError, match="holds only weights"):
        load_teacher_file(files / "t.pt", "teacher.ensemble[0] (t.pt)", SHAPE, 10)


def test_ensemble_averages_softened_distributions_with_weights(module, files):
    torch.manual_seed(1)
    other = from_module(ConvNet(SHAPE, 10, 4, 1).eval(), "other")
    main = load_teacher_file(files / "t.onnx", "teacher", SHAPE, 10)
    x = torch.randn(4, *SHAPE)
    ensemble = TeacherEnsemble([main, other], [3.0, 1.0])
    probs = torch.softmax(ensemble.predict(x, 2.0) / 2.0, 1)
    expected = 0.75 * torch.softmax(main.predict(x) / 2.0, 1) + 0.25 * torch.softmax(other.predict(x) / 2.0, 1)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ModelError, match="2 weights for 3 teachers"):
        TeacherEnsemble([main, other, other], [1.0, 1.0])


@pytest.mark.parametrize("change", ["pickled_weight", "sample_inputs"])
def test_a_hostile_pt2_runs_code_in_plain_torch_but_not_here(files, tmp_path, change):
    import io

    from tests import handmade

    marker = tmp_path / "ran"
    payload = io.BytesIO()
    torch.save(handmade.RunsCode(marker), payload)
    hostile = tmp_path / "hostile.pt2"
    handmade.pt2_variant(files / "t.pt2", hostile, **{change: payload.getvalue()})
    with pytest.raises(InputFileError, match="pickled"):
        load_teacher_file(hostile, "teacher.file", SHAPE, 10)
    assert not marker.exists()
    try:  # the same file through torch.export.load as it is: the payload is real
        torch.export.load(str(hostile))
    except Exception:
        pass  # torch may fail after unpickling; the marker says whether the code ran
    assert marker.exists()
