import sys

import pytest
import torch

from edge_distill.errors import InputFileError, ModelError
from edge_distill.models.families import ConvNet, MobileNet
from edge_distill.models.loading import build_model, check_output_size, count_params, load_checkpoint


def test_convnet_width_and_depth_set_the_size():
    small, large = ConvNet((1, 8, 8), 10, 4, 1), ConvNet((1, 8, 8), 10, 16, 2)
    assert count_params(small) < count_params(large)
    assert large(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    # Deeper than the input can be pooled: keeps working on a 1x1 map.
    assert ConvNet((3, 4, 4), 5, 4, 4)(torch.zeros(2, 3, 4, 4)).shape == (2, 5)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(
        "import torch\n"
        "def five_classes():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))\n"
        "def sized(num_classes, input_shape):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[1] * input_shape[2], num_classes))\n"
        "def not_a_module():\n    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("user_models", None)


def test_factory_receives_the_arguments_it_accepts(user_module):
    model = build_model("user_models:sized", "convnet", (1, 8, 8), 10, 0, 0, "student")
    check_output_size(model, (1, 8, 8), 10, "student")


def test_teacher_with_wrong_class_count_is_a_model_error(user_module):
    model = build_model("user_models:five_classes", "convnet", (1, 8, 8), 10, 0, 0, "teacher")
    with pytest.raises(ModelError, match=r"teacher outputs \(1, 5\) but the data has 10 classes"):
        check_output_size(model, (1, 8, 8), 10, "teacher")


@pytest.mark.parametrize(
    "spec, message",
    [("user_models", "not of the form"), ("no_such_module:f", "cannot import module"),
     ("user_models:missing", "has no callable 'missing'"), ("user_models:not_a_module", "expected a torch.nn.Module")],
)
def test_bad_factories(user_module, spec, message):
    with pytest.raises(ModelError, match=message):
        build_model(spec, "convnet", (1, 8, 8), 10, 0, 0, "teacher")


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = ConvNet((1, 8, 8), 10, 4, 1)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ok.pt")
    other = ConvNet((1, 8, 8), 10, 4, 1)
    load_checkpoint(other, tmp_path / "ok.pt", "teacher")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))

    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="junk.pt: not a loadable PyTorch checkpoint"):
        load_checkpoint(other, tmp_path / "junk.pt", "teacher")
    torch.save(ConvNet((1, 8, 8), 10, 8, 1).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ModelError, match="wide.pt: does not match the teacher model"):
        load_checkpoint(other, tmp_path / "wide.pt", "teacher")
    with pytest.raises(InputFileError, match="not found"):
        load_checkpoint(other, tmp_path / "missing.pt", "teacher")


def test_mobilenet_is_depthwise_separable_and_halves_resolution():
    model = MobileNet((3, 96, 96), 10, 8, 3)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 6  # two per stage
    assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 10)
    assert build_model("", "mobilenet", (1, 8, 8), 10, 4, 2, "student")(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    # fewer parameters than the ConvNet of the same width and depth
    assert count_params(model) < count_params(ConvNet((3, 96, 96), 10, 8, 3))


def test_resnet_at_width_64_depth_4_is_resnet18_with_torchvisions_names():
    from edge_distill.models.families import ResNet

    model = ResNet((3, 224, 224), 1000, 64, 4)
    assert count_params(model) == 11_689_512  # torchvision's resnet18, parameter for parameter
    keys = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight"} <= keys
    assert model.conv1.kernel_size == (7, 7) and model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    small = ResNet((1, 8, 8), 10, 8, 2)  # a small input keeps its pixels: 3x3 stem, no max-pool
    assert small.conv1.kernel_size == (3, 3) and small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_mobilenetv3_blocks_expand_squeeze_and_keep_residuals():
    from edge_distill.models.families import InvertedResidual, MobileNetV3, SqueezeExcite

    model = MobileNetV3((3, 96, 96), 10, 8, 3)
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 6 and sum(b.residual for b in blocks) == 3  # the second block of each stage
    assert len([m for m in model.modules() if isinstance(m, SqueezeExcite)]) == 6
    assert any(isinstance(m, torch.nn.Hardswish) for m in model.modules())
    assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 10)
    assert count_params(MobileNetV3((3, 96, 96), 10, 8, 3)) < count_params(MobileNetV3((3, 96, 96), 10, 16, 3))


@pytest.mark.slow  # 6 s: trains and quantizes both families (the fast build tests cover the default family)
@pytest.mark.parametrize("family", ["mobilenetv3", "resnet"])
def test_new_families_build_for_signals_and_export_to_int8(family, tmp_path):
    import numpy as np
    import onnx

    from edge_distill.export.onnx_export import check_export_parity, export_onnx
    from edge_distill.export.quantize import QuantRecipe, count_ops, quantize_model, quantized_node_count

    signal = build_model("", family, (2, 64), 3, 4, 2, "student")
    assert signal(torch.zeros(2, 2, 64)).shape == (2, 3)  # 1-D: (C, L) signals
    torch.manual_seed(0)
    model = build_model("", family, (3, 32, 32), 5, 4, 2, "student").eval()
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    export_onnx(model, x, tmp_path / "fp32.onnx", 18)
    check_export_parity(model, tmp_path / "fp32.onnx", x, 1e-4, 1e-3)
    quantize_model(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", x, QuantRecipe("static", "QDQ"), tmp_path)
    assert quantized_node_count(count_ops(onnx.load(str(tmp_path / "int8.onnx")))) > 0


def test_every_family_the_config_accepts_is_built_and_every_built_one_accepted():
    from edge_distill.config import FAMILY_NAMES
    from edge_distill.models.families import FAMILIES

    assert tuple(FAMILIES) == FAMILY_NAMES
