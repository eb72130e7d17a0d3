"""`verify`: every check passes on a fresh bundle and each kind of damage is caught and named."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_distill.bundle.integrity import external_data_locations
from edge_distill.bundle.verify import verify_bundle
from edge_distill.errors import BundleError

NODE_DIR = Path(__file__).parents[1] / "node"


def failed(checks):
    return {c.name: c.detail for c in checks if not c.passed}


def edit_manifest(bundle, change):
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_fresh_bundle_passes_every_check(tiny_bundle):
    checks = verify_bundle(tiny_bundle)
    assert failed(checks) == {}
    names = {c.name for c in checks}
    assert {"file model.onnx", "file golden.npz", "golden logits", "golden top-1", "model inputs"} <= names


def test_model_carries_its_own_description(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    model = onnx.load(str(tiny_bundle / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["edge_distill.labels"]) == manifest["labels"]
    assert json.loads(props["edge_distill.preprocessing"]) == manifest["preprocessing"]
    assert props["edge_distill.profile"] == "rpi4" and props["edge_distill.build_id"] == manifest["build_id"]
    assert "mean=" in model.graph.input[0].doc_string and "0, 1, 2" in model.graph.output[0].doc_string


def test_tampered_model_fails_its_hash_and_is_not_run(bundle_copy):
    model = onnx.load(str(bundle_copy / "model.onnx"))
    weight = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8)
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] = -array.flat[0] - 1
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(bundle_copy / "model.onnx"))
    problems = failed(verify_bundle(bundle_copy))
    assert "altered" in problems["file model.onnx"]
    assert "golden logits" not in problems  # stopped before running an unvouched model


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "golden.json").unlink()
    assert failed(verify_bundle(bundle_copy)) == {"file golden.json": "missing"}


def test_path_outside_the_bundle_is_refused(bundle_copy, tmp_path):
    (tmp_path / "secret.txt").write_text("outside")
    edit_manifest(bundle_copy, lambda m: m["files"].update({"../secret.txt": {"sha256": "0" * 64}}))
    assert failed(verify_bundle(bundle_copy))["file ../secret.txt"] == "points outside the bundle"


def test_external_data_outside_the_bundle_is_refused(bundle_copy):
    model = onnx.load(str(bundle_copy / "model.onnx"))
    onnx.save(model, str(bundle_copy / "model.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    # onnx will not write a '..' location itself; a hostile bundle just edits the bytes.
    model = onnx.load(str(bundle_copy / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    (bundle_copy / "model.onnx").write_bytes(model.SerializeToString())
    assert external_data_locations((bundle_copy / "model.onnx").read_bytes()) == ["../weights.bin"]
    sha = hashlib.sha256((bundle_copy / "model.onnx").read_bytes()).hexdigest()
    edit_manifest(bundle_copy, lambda m: m["files"]["model.onnx"].update(sha256=sha))
    assert "points outside the bundle: ../weights.bin" in failed(verify_bundle(bundle_copy))["external data"]


def test_external_data_inside_but_unhashed_is_refused(bundle_copy):
    model = onnx.load(str(bundle_copy / "model.onnx"))
    onnx.save(model, str(bundle_copy / "model.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    sha = hashlib.sha256((bundle_copy / "model.onnx").read_bytes()).hexdigest()
    edit_manifest(bundle_copy, lambda m: m["files"]["model.onnx"].update(sha256=sha))
    assert "does not hash: weights.bin" in failed(verify_bundle(bundle_copy))["external data"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("golden"), "manifest.json: missing key(s) golden"),
        (lambda m: m.update(schema_version=2), "schema_version 2 is newer than this verifier understands (1)"),
    ],
)
def test_unusable_manifest_is_a_one_line_error(bundle_copy, change, message):
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError) as e:
        verify_bundle(bundle_copy)
    assert message in e.value.message and "\n" not in e.value.message


def test_golden_file_of_the_wrong_shape_is_named(bundle_copy):
    with np.load(bundle_copy / "golden.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["inputs"] = arrays["inputs"][:, :, :4]
    np.savez(bundle_copy / "golden.npz", **arrays)
    sha = hashlib.sha256((bundle_copy / "golden.npz").read_bytes()).hexdigest()
    edit_manifest(bundle_copy, lambda m: m["files"]["golden.npz"].update(sha256=sha))
    with pytest.raises(BundleError, match=r"golden.npz: 'inputs' is float32\[16, 1, 4, 8\], manifest says float32\[16, 1, 8, 8\]"):
        verify_bundle(bundle_copy)


def test_verify_runs_with_only_numpy_and_onnxruntime(tiny_bundle):
    """Imports of torch, onnx, click and scikit-learn are made to fail; verify must not notice."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'onnx', 'click', 'sklearn', 'onnxsim', 'onnxscript'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge_distill.bundle.verify import main\n"
        f"sys.exit(main([{str(tiny_bundle)!r}, '--json']))\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["passed"] is True


def test_verify_cli_exit_codes(tiny_bundle, bundle_copy):
    from click.testing import CliRunner

    from edge_distill.cli import main

    assert CliRunner().invoke(main, ["verify", str(tiny_bundle)]).exit_code == 0
    (bundle_copy / "README.md").write_text("edited")
    result = CliRunner().invoke(main, ["verify", str(bundle_copy), "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["passed"] is False
    edit_manifest(bundle_copy, lambda m: m.update(schema_version=9))
    result = CliRunner().invoke(main, ["verify", str(bundle_copy)])
    assert result.exit_code == 3 and result.stderr.startswith("Error: ")


@pytest.mark.node
@pytest.mark.skipif(not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir() or shutil.which("node") is None,
                    reason="onnxruntime-node not installed (cd tests/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci)")
def test_golden_vectors_hold_in_onnxruntime_node(tiny_bundle):
    """The second runtime app teams use."""
    done = subprocess.run(["node", str(NODE_DIR / "check_golden.mjs"), str(tiny_bundle)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["top1Matches"] == report["samples"] == 16
    assert report["preprocessingDiff"] <= 1e-3  # raw pixels + the manifest's formula give the model's inputs
    assert report["runtime"].startswith("onnxruntime-node")


def test_raw_golden_samples_reproduce_through_the_documented_preprocessing(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    raw = np.load(bundle_copy / "golden.npz")["raw_inputs"]
    assert raw.min() >= 0 and raw.max() <= 16 and np.array_equal(raw, np.rint(raw))  # digits: whole values 0..16
    assert manifest["raw_input"]["range"] == [0, 16] and "ink" in manifest["raw_input"]["polarity"]
    assert {c.name: c.passed for c in verify_bundle(bundle_copy)}["documented preprocessing"]
    edit_manifest(bundle_copy, lambda m: m["preprocessing"].update(mean=[m["preprocessing"]["mean"][0] + 0.5]))
    assert "documented preprocessing" in failed(verify_bundle(bundle_copy))  # the manifest no longer fits the model
