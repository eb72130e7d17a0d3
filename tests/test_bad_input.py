"""The bad-input corpus: each row is a user's mistake or a hostile file, through the CLI, with its
exit code and the words its one-line error must hold. Every row is also run with --json, whose
stdout must then be one JSON object naming the same error. Errors come before any training: the
rows are tiny files and config values, and the slowest reaches only the data and teacher stages."""

from __future__ import annotations

import io
import json
import shlex
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests import handmade
from tests.test_cli import assert_user_error, invoke

MARKER = "PWNED"  # a hostile file that ran code would create this file in the workspace


# (id, command line with {w} for the workspace, exit code, words the error must hold)
CASES = [
    # config: values, keys, files, profiles
    ("nan-temperature", "data -p rpi4 --set distill.temperature=nan", 2, ["'distill.temperature' = nan", "finite"]),
    ("inf-alpha", "data -p rpi4 --set distill.alpha=inf", 2, ["'distill.alpha' = inf", "finite"]),
    ("nan-accuracy-drop", "build -p rpi4 --max-accuracy-drop nan --out {w}/out", 2, ["max_accuracy_drop", "finite"]),
    ("negative-inf-seconds", "data -p rpi4 --set quantize.search_min_seconds=-inf", 2, ["search_min_seconds", "finite"]),
    ("nan-ensemble-weight", "data -p rpi4 --set teacher.ensemble_weights=[nan]", 2, ["ensemble_weights[0]", "finite"]),
    ("empty-sweep-widths", "data -p rpi4 --set budget.sweep_widths=[]", 2, ["'budget.sweep_widths' has 0 item(s)"]),
    ("zero-sweep-depth", "data -p rpi4 --set budget.sweep_depths=[0]", 2, ["'budget.sweep_depths[0]' = 0", "minimum 1"]),
    ("zero-image-size", "data -p rpi4 --set data.image_size=[0,28]", 2, ["'data.image_size[0]' = 0", "minimum 1"]),
    ("negative-image-size", "data -p rpi4 --set data.image_size=[28,-4]", 2, ["'data.image_size[1]' = -4"]),
    ("one-number-image-size", "data -p rpi4 --set data.image_size=[28]", 2, ["'data.image_size' has 1 item(s)", "0 or 2"]),
    ("huge-benchmark-batch", "data -p rpi4 --set benchmark.batch_size=1000000000", 2, ["benchmark.batch_size", "maximum 4096"]),
    ("opset-too-new", "data -p rpi4 --set export.opset=99", 2, ["'export.opset' = 99", "maximum"]),
    ("float-seed", "data -p rpi4 --set seed=1.5", 2, ["'seed' must be int"]),
    ("string-epochs", "data -p rpi4 --set distill.epochs='many'", 2, ["'distill.epochs' must be int"]),
    ("unknown-key", "data -p rpi4 --set distill.epoch=3", 2, ["unknown key 'distill.epoch'", "did you mean 'epochs'"]),
    ("unknown-section", "data -p rpi4 --set distil.epochs=3", 2, ["unknown section 'distil'", "did you mean"]),
    ("bad-choice", "data -p rpi4 --set quantize.format=QDQQ", 2, ["'quantize.format' = 'QDQQ'", "did you mean 'QDQ'"]),
    ("set-without-equals", "data -p rpi4 --set distill.epochs", 2, ["expected section.key=value"]),
    ("config-not-toml", "data -p rpi4 --config {w}/broken.toml", 2, ["broken.toml: not valid TOML"]),
    ("config-missing", "data -p rpi4 --config {w}/absent.toml", 2, ["absent.toml: file not found"]),
    ("config-not-a-table", "data -p rpi4 --config {w}/flat.toml", 2, ["'distill' must be a table"]),
    ("unknown-profile", "data -p rpi44", 2, ["unknown profile 'rpi44'", "did you mean 'rpi4'"]),
    ("profile-with-training", "data -p {w}/training-profile.toml", 2, ["section 'distill' does not belong in a device profile"]),
    ("isa-of-another-architecture", "data -p rpi4 --set \"device.isa=['avx512_vnni']\"", 2,
     ["'device.isa' names 'avx512_vnni', which is not an aarch64 feature"]),
    ("host-as-option-in-profile", "data -p rpi4 --set device.host='-oProxyCommand=touch {w}/PWNED'", 2,
     ["'device.host'", "not starting with '-'"]),
    ("node-rank-out-of-range", "distill -p rpi4 --nnodes 2 --node-rank 2 --rendezvous 10.0.0.1:29500", 2,
     ["distill.node_rank = 2 with distill.nnodes = 2", "0..1"]),
    ("nodes-without-rendezvous", "distill -p rpi4 --nnodes 2 --node-rank 1", 2, ["needs distill.rendezvous"]),
    ("rendezvous-without-port", "distill -p rpi4 --nnodes 2 --rendezvous 10.0.0.1", 2,
     ["--rendezvous: 'distill.rendezvous' = '10.0.0.1' is not valid", "HOST:PORT"]),
    ("input-without-path", "quantize -p rpi4 --input student_fp32.onnx", 2, ["expected ARTIFACT=PATH"]),
    ("input-unknown-artifact", "quantize -p rpi4 --input student.onnx={w}/linear.onnx", 2, ["no stage consumes", "did you mean"]),
    ("input-not-read-by-target", "quantize -p rpi4 --input model.onnx={w}/linear.onnx", 2,
     ["--input model.onnx: the quantize stage does not read it", "student_fp32.onnx"]),
    ("input-file-missing", "quantize -p rpi4 --input student_fp32.onnx={w}/absent.onnx", 3, ["absent.onnx not found"]),
    ("input-not-onnx", "quantize -p rpi4 --input student_fp32.onnx={w}/junk.bin", 3, ["junk.bin: not a valid ONNX model"]),
    # data: files and what is in them
    ("data-missing", "data -p rpi4 --data {w}/absent.npz", 3, ["absent.npz does not exist"]),
    ("data-wrong-kind", "data -p rpi4 --data {w}/notes.txt", 3, ["notes.txt is neither a folder nor an .npz"]),
    ("npz-not-a-zip", "data -p rpi4 --data {w}/junk.npz", 3, ["junk.npz: not a readable .npz"]),
    ("npz-without-y", "data -p rpi4 --data {w}/no-y.npz", 3, ["no-y.npz: missing array(s) y"]),
    ("npz-2d-y", "data -p rpi4 --data {w}/onehot-y.npz", 3, ["onehot-y.npz: y must be 1-D", "argmax"]),
    ("npz-float-y", "data -p rpi4 --data {w}/float-y.npz", 3, ["float-y.npz: y must hold integer class ids"]),
    ("npz-string-x", "data -p rpi4 --data {w}/string-x.npz", 3, ["string-x.npz: x must hold numbers"]),
    ("npz-5d-x", "data -p rpi4 --data {w}/5d.npz", 3, ["5d.npz: x must be"]),
    ("npz-nan", "data -p rpi4 --data {w}/nan.npz", 3, ["nan.npz: 30 sample(s) contain NaN or inf"]),
    ("npz-overflow", "data -p rpi4 --data {w}/huge.npz", 3, ["huge.npz: values up to 3e+38 overflow when normalized"]),
    ("npz-empty", "data -p rpi4 --data {w}/empty.npz", 3, ["empty.npz: the dataset is empty"]),
    ("npz-length-mismatch", "data -p rpi4 --data {w}/mismatch.npz", 3, ["30 samples in x but 29 labels"]),
    ("npz-one-class", "data -p rpi4 --data {w}/one-class.npz", 3, ["needs at least 2 classes"]),
    ("npz-negative-class", "data -p rpi4 --data {w}/negative-class.npz", 3, ["class ids must lie in"]),
    ("npz-tiny-class", "data -p rpi4 --data {w}/tiny-class.npz", 3, ["every class needs at least 3 samples"]),
    ("images-no-classes", "data -p rpi4 --data {w}/flat-images", 3, ["no class subfolders"]),
    ("images-none", "data -p rpi4 --data {w}/empty-classes", 3, ["no PNG or JPEG images"]),
    ("image-corrupt", "data -p rpi4 --data {w}/corrupt-images", 3, ["bad.png: cannot read image"]),
    ("image-decompression-bomb", "data -p rpi4 --data {w}/bomb-images", 3, ["bomb.png: refused", "decompression bomb"]),
    ("image-sizes-differ", "data -p rpi4 --data {w}/mixed-images", 3, ["differs from", "data.image_size"]),
    ("transfer-missing", "data -p rpi4 --transfer {w}/absent", 3, ["data.transfer", "absent: file not found"]),
    ("transfer-other-shape", "data -p rpi4 --transfer {w}/transfer-4x4.npz", 3, ["transfer-4x4.npz samples have shape (1, 4, 4)"]),
    ("transfer-empty-folder", "data -p rpi4 --transfer {w}/flat-empty", 3, ["holds no PNG or JPEG images"]),
    ("labeled-below-classes", "data -p rpi4 --set data.labeled_samples=5", 3, ["labeled_samples = 5 is fewer than the 10 classes"]),
    ("labeled-leaves-no-transfer", "data -p rpi4 --set data.labeled_samples=1160", 3,
     ["labeled_samples = 1160", "fewer unlabeled samples than the 10 classes"]),
    # models: teacher files, checkpoints, factories
    ("pt2-pickled-weight", "teacher -p rpi4 --teacher-file {w}/evil-weight.pt2", 3, ["pickled objects", "could run code"]),
    ("pt2-pickled-sample-inputs", "teacher -p rpi4 --teacher-file {w}/evil-inputs.pt2", 3, ["evil-inputs.pt2", "pickled"]),
    ("pt2-compiled-library", "teacher -p rpi4 --teacher-file {w}/evil-library.pt2", 3, ["aotinductor/model.so", "unpickle or run"]),
    ("pt2-in-ensemble", "teacher -p rpi4 --set \"teacher.ensemble=['{w}/evil-weight.pt2']\"", 3, ["teacher.ensemble[0]", "pickled objects"]),
    ("checkpoint-missing", "teacher -p rpi4 --teacher-checkpoint {w}/absent.pt", 3, ["teacher.checkpoint", "absent.pt: file not found"]),
    ("checkpoint-junk", "teacher -p rpi4 --teacher-checkpoint {w}/junk.bin", 3, ["junk.bin: not a loadable PyTorch checkpoint"]),
    ("checkpoint-pickled-code", "teacher -p rpi4 --teacher-checkpoint {w}/evil.pt", 3, ["evil.pt: not a loadable PyTorch checkpoint"]),
    ("teacher-file-foreign-weights", "teacher -p rpi4 --teacher-file {w}/other-weights.pt", 4,
     ["holds only weights (a state_dict) that do not fit", "--teacher pkg.module:factory --teacher-checkpoint"]),
    ("checkpoint-is-a-whole-model", "teacher -p rpi4 --teacher-checkpoint {w}/whole.ts.pt", 3,
     ["whole.ts.pt: not a loadable PyTorch checkpoint", "whole torchscript model: pass it with --teacher-file"]),
    ("teacher-at-chance", "teacher -p rpi4 --teacher-file {w}/chance.onnx", 4,
     ["teacher.file reaches 0.", "below the floor 0.235 (chance is 0.100)", "teacher.min_accuracy"]),
    ("teacher-below-own-floor", "teacher -p rpi4 --teacher-file {w}/chance.onnx --set teacher.min_accuracy=0.5", 4,
     ["below the floor 0.500"]),
    ("teacher-input-channel-count", "teacher -p rpi4 --teacher-file {w}/chance.onnx --set teacher.input.mean=[0.5,0.5]",
     2, ["teacher.input.mean has 2 value(s), the teacher takes 1 channel(s)"]),
    ("teacher-input-zero-std", "teacher -p rpi4 --teacher-file {w}/chance.onnx --set teacher.input.std=[0.0]", 2,
     ["'teacher.input.std[0]' = 0.0 is below the minimum"]),
    ("teacher-input-for-built-in", "teacher -p rpi4 --set teacher.input.size=[16,16]", 2,
     ["teacher.input describes a pretrained teacher's own preprocessing"]),
    ("teacher-file-junk", "teacher -p rpi4 --teacher-file {w}/junk.bin", 3, ["junk.bin is not a loadable ONNX model"]),
    ("teacher-file-missing", "teacher -p rpi4 --teacher-file {w}/absent.onnx", 3, ["teacher.file", "absent.onnx: file not found"]),
    ("teacher-file-wrong-classes", "teacher -p rpi4 --teacher-file {w}/linear.onnx", 4, ["outputs (3, 3) but the data has 10 classes"]),
    ("teacher-file-and-checkpoint", "teacher -p rpi4 --teacher-file {w}/linear.onnx --teacher-checkpoint {w}/junk.bin", 2,
     ["teacher.file and teacher.checkpoint both name a teacher"]),
    ("factory-without-colon", "teacher -p rpi4 --teacher nocolon", 4, ["'nocolon' is not of the form 'package.module:function'"]),
    ("factory-module-missing", "teacher -p rpi4 --teacher no_such_module_xyz:make", 4, ["cannot import module 'no_such_module_xyz'"]),
    # output folders: never lose a user's files, refuse before any stage runs
    ("out-foreign-manifest", "build -p rpi4 --out {w}/webapp --cache-dir {w}/never", 3, ["webapp: exists and is not an edge-distill bundle"]),
    ("out-bundle-with-user-file", "build -p rpi4 --out {w}/edited-bundle --cache-dir {w}/never", 3,
     ["does not list: notes/mine.txt"]),
    ("out-is-a-file", "build -p rpi4 --out {w}/notes.txt --cache-dir {w}/never", 3, ["notes.txt: exists and is not a folder"]),
    ("out-below-a-file", "build -p rpi4 --out {w}/notes.txt/bundle --cache-dir {w}/never", 3, ["notes.txt is a file, not a folder"]),
    ("cache-below-a-file", "data -p rpi4 --cache-dir {w}/notes.txt/cache", 3, ["cache folder", "cannot write there"]),
    ("sequence-out-foreign", "sequence --steps 1 --out {w}/webapp", 3, ["is not an edge-distill sequence-distillation output"]),
    ("cache-clean-negative-age", "cache clean --cache-dir {w}/never --older-than -1", 2, ["--older-than", "-1"]),
    # verify: malformed manifests are one line (exit 3); a damaged bundle fails its checks (exit 1)
    ("verify-not-a-folder", "verify {w}/notes.txt", 3, ["notes.txt: not a folder"]),
    ("llm-teacher-missing", "llm --teacher {w}/absent --out {w}/out", 2, ["--teacher", "absent: not found"]),
    ("llm-perplexity-budget-below-the-teacher", "llm --max-perplexity-ratio 0.5 --out {w}/out", 2,
     ["--max-perplexity-ratio", "0.5"]),
    ("llm-on-policy-share-above-one", "llm --kd on-policy --on-policy-share 1.5 --out {w}/out", 2,
     ["--on-policy-share", "1.5"]),
    ("llm-unknown-divergence", "llm --kd on-policy --divergence kl --out {w}/out", 2, ["--divergence", "'kl'"]),
    ("llm-node-rank-out-of-range", "llm --nnodes 2 --node-rank 2 --rendezvous 10.0.0.1:29500 --out {w}/out", 2,
     ["--node-rank 2 with --nnodes 2", "0..1"]),
    ("llm-rendezvous-without-port", "llm --nnodes 2 --rendezvous 10.0.0.1 --out {w}/out", 2,
     ["--nnodes 2 needs --rendezvous", "'10.0.0.1'", "HOST:PORT"]),
    ("text-nodes-without-rendezvous", "text --nnodes 2 --node-rank 1 --out {w}/out", 2, ["--nnodes 2 needs --rendezvous"]),
    ("llm-sweep-layers-not-counts", "llm --min-agreement 0.5 --sweep-layers 2,x --out {w}/out", 2,
     ["--sweep-layers '2,x': not a list of layer counts"]),
    ("llm-sweep-with-remote", "llm --min-agreement 0.5 --remote pi --out {w}/out", 2,
     ["--remote: a budget sweep times its students here"]),
    ("generate-not-a-folder", "generate {w}/notes.txt hello", 3, ["notes.txt: not a folder"]),
    ("verify-no-manifest", "verify {w}/flat-images", 3, ["manifest.json: missing"]),
    ("verify-manifest-not-json", "verify {w}/bundles/not-json", 3, ["not valid JSON"]),
    ("verify-manifest-array", "verify {w}/bundles/array", 3, ["expected a JSON object"]),
    ("verify-missing-keys", "verify {w}/bundles/no-golden", 3, ["missing key(s) golden"]),
    ("verify-files-list", "verify {w}/bundles/files-list", 3, ["'files' must be a non-empty object"]),
    ("verify-file-record-string", "verify {w}/bundles/record-string", 3, ["'files.model.onnx' must be an object"]),
    ("verify-no-tolerance", "verify {w}/bundles/no-tolerance", 3, ["'golden.tolerance.logits_atol' must be a finite number"]),
    ("verify-nan-tolerance", "verify {w}/bundles/nan-tolerance", 3, ["'golden.tolerance.logits_atol' must be a finite number"]),
    ("verify-empty-inputs", "verify {w}/bundles/empty-inputs", 3, ["'inputs' must be a non-empty list"]),
    ("verify-labels-not-strings", "verify {w}/bundles/labels-numbers", 3, ["'labels[0]' must be a string", "got 0"]),
    ("verify-string-schema", "verify {w}/bundles/string-schema", 3, ["schema_version must be a positive integer, got '1'"]),
    ("verify-newer-schema", "verify {w}/bundles/newer-schema", 3, ["schema_version 99 is newer", "upgrade"]),
    ("verify-golden-json-garbage", "verify {w}/bundles/golden-garbage", 3, ["golden.json: not valid JSON"]),
    ("verify-unloadable-model", "verify {w}/bundles/unloadable", 1, ["FAIL  model loads", "model.onnx: ONNX Runtime cannot load it"]),
    ("verify-model-not-protobuf", "verify {w}/bundles/not-protobuf", 1, ["FAIL  model loads", "not an ONNX protobuf"]),
    ("verify-unlisted-file", "verify {w}/bundles/stray-library", 1, ["FAIL  no unlisted files", "libextra.so"]),
    # estimate: concrete, positive shapes
    ("estimate-batch-zero", "estimate {w}/linear.onnx -p rpi4 --batch 0", 2, ["--batch", "0"]),
    ("estimate-batch-negative", "estimate {w}/linear.onnx -p rpi4 --batch -3", 2, ["--batch", "-3"]),
    ("estimate-symbolic-size", "estimate {w}/symbolic.onnx -p rpi4", 4, ["input 'x' has symbolic size(s) h (axis 2), w (axis 3)", "--shape x:"]),
    ("estimate-shape-malformed", "estimate {w}/symbolic.onnx -p rpi4 --shape x:1xAx8", 2, ["expected INPUT_NAME:DIMS"]),
    ("estimate-shape-zero", "estimate {w}/symbolic.onnx -p rpi4 --shape x:1x1x0x8", 2, ["positive sizes"]),
    ("estimate-shape-unknown-input", "estimate {w}/symbolic.onnx -p rpi4 --shape y:1x1x8x8", 2, ["--shape y: the model has no such input"]),
    ("estimate-shape-rank", "estimate {w}/symbolic.onnx -p rpi4 --shape x:1x8x8", 2, ["3 sizes for an input of rank 4"]),
    ("estimate-shape-contradicts", "estimate {w}/linear.onnx -p rpi4 --shape x:1x2x8x8", 2, ["size 2 where the model fixes 1"]),
    # optimize: a model trained elsewhere, its calibration samples
    ("optimize-symbolic-unfixed", "optimize {w}/symbolic.onnx -p x86-avx512 --calibration {w}/three.npz --out {w}/o",
     4, ["input 'x' has symbolic size(s) batch (axis 0), h (axis 2), w (axis 3)", "--shape x:1x1x1x1"]),
    ("optimize-shape-unknown-input", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/three.npz --shape x:1x16 "
     "--out {w}/o", 2, ["--shape x: the model has no such input", "audio, state, sr"]),
    ("optimize-samples-missing-input", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/no-sr.npz --out {w}/o",
     3, ["no array for input(s) sr (found audio, state)", "sr=<int64 (N, )>"]),
    ("optimize-samples-float-for-int", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/float-sr.npz --out {w}/o",
     3, ["'sr' is float64, the model's input is int64"]),
    ("optimize-samples-wrong-shape", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/short-audio.npz --out {w}/o",
     3, ["'audio' has shape (30, 12), expected (N, 1, 16)"]),
    ("optimize-samples-one", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/one.npz --out {w}/o",
     3, ["1 sample(s); at least 2 are needed"]),
    ("optimize-samples-empty-folder", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/flat-empty --out {w}/o",
     3, ["flat-empty: no .npz files in the folder"]),
    ("optimize-samples-not-npz", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/linear.onnx --out {w}/o",
     3, ["linear.onnx: not a readable .npz"]),
    ("optimize-out-is-foreign", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/three.npz --out {w}/webapp",
     3, ["is not an edge-distill bundle", "nothing was changed"]),
    ("estimate-measure-missing-provider", "estimate {w}/linear.onnx -p rpi4 --measure --provider Bogus", 6,
     ["Bogus not available in this onnxruntime"]),
    ("estimate-not-onnx", "estimate {w}/junk.bin -p rpi4", 3, ["junk.bin: not a valid ONNX model"]),
    ("estimate-missing", "estimate {w}/absent.onnx -p rpi4", 3, ["absent.onnx: file not found"]),
    # remote: a destination is never an ssh option
    ("remote-as-option", "bench {w}/bundles/good --remote=-oProxyCommand=touch\\ {w}/PWNED", 2, ["not starting with '-'"]),
    ("remote-with-space", "bench {w}/bundles/good --remote 'pi@host -v'", 2, ["without spaces"]),
    ("remote-on-build", "build -p rpi4 --out {w}/out --cache-dir {w}/never --remote=-F/dev/null", 2, ["not starting with '-'"]),
    ("bench-missing-provider", "bench {w}/bundles/good --provider Bogus", 8, ["runner: Bogus is not available"]),
    ("bench-not-a-bundle", "bench {w}/flat-images", 3, ["manifest.json: missing"]),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("bad-input")
    _config_files(w)
    _data_files(w)
    _model_files(w)
    _output_folders(w)
    _bundles(w)
    return w


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_its_exit_code(case, workspace):
    check_case(case, workspace)


def check_case(case, workspace: Path) -> None:
    """Run one row through the CLI, plain and with --json: its exit code, its one line (or verify's
    table) holding the row's words, no traceback, no code run, no stage run."""
    _, command, code, words = case
    args = shlex.split(command.format(w=workspace))
    shared_cache = [] if "--cache-dir" in args or args[0] in ("verify", "bench", "estimate", "cache", "generate",
                                                                "predict") \
        else ["--cache-dir", str(workspace / "cache")]
    result = invoke(*args, *shared_cache)
    if code == 1:  # verify's own verdict: a table of checks, not an error line
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert all(word in result.stdout for word in words), result.stdout
    else:
        assert_user_error(result, code, *words)
        as_json = invoke(*args, *shared_cache, "--json")
        payload = json.loads(as_json.stdout)
        assert as_json.exit_code == code and payload["exit_code"] == code, as_json.output
        assert words[0] in payload["error"]
    assert not (workspace / MARKER).exists(), "a hostile input ran code"
    assert not (workspace / "never").exists(), "a stage ran before the error"


def test_the_corpus_is_large_and_covers_every_area():
    assert len(CASES) >= 60
    commands = {c[1].split()[0] for c in CASES}
    assert {"data", "teacher", "build", "verify", "estimate", "bench", "quantize", "cache", "sequence"} <= commands


# ---- the workspace's files -------------------------------------------------------------------------


def _config_files(w: Path) -> None:
    (w / "broken.toml").write_text("[distill\nepochs = 3\n")
    (w / "flat.toml").write_text("distill = 3\n")
    (w / "training-profile.toml").write_text("[distill]\nepochs = 3\n")
    (w / "notes.txt").write_text("not data")
    (w / "junk.bin").write_bytes(b"\x00junk" * 10)
    (w / "junk.npz").write_bytes(b"not a zip")


def _data_files(w: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 8, 8)).astype(np.float32)
    y = np.arange(30) % 3
    np.savez(w / "no-y.npz", x=x)
    np.savez(w / "onehot-y.npz", x=x, y=np.eye(3, dtype=np.int64)[y])
    np.savez(w / "float-y.npz", x=x, y=y.astype(np.float32))
    np.savez(w / "string-x.npz", x=np.array([["a"] * 8] * 30), y=y)
    np.savez(w / "5d.npz", x=x.reshape(30, 1, 1, 8, 8), y=y)
    np.savez(w / "nan.npz", x=np.full_like(x, np.nan), y=y)
    np.savez(w / "huge.npz", x=np.full_like(x, 3e38) * np.sign(x), y=y)
    np.savez(w / "empty.npz", x=x[:0], y=y[:0])
    np.savez(w / "mismatch.npz", x=x, y=y[:29])
    np.savez(w / "one-class.npz", x=x, y=np.zeros(30, np.int64))
    np.savez(w / "negative-class.npz", x=x, y=y - 1)
    np.savez(w / "tiny-class.npz", x=x, y=np.r_[np.zeros(28, np.int64), [1, 1]])
    np.savez(w / "transfer-4x4.npz", x=x[:, :4, :4])
    from PIL import Image

    def images(folder: str, sizes: dict[str, list[int]]) -> Path:
        for label, widths in sizes.items():
            (w / folder / label).mkdir(parents=True)
            for i, width in enumerate(widths):
                Image.fromarray(np.full((8, width), 40 * i, np.uint8)).save(w / folder / label / f"{i}.png")
        return w / folder

    (w / "flat-images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(w / "flat-images" / "0.png")
    (w / "flat-empty").mkdir()
    (w / "empty-classes" / "a").mkdir(parents=True)
    (w / "empty-classes" / "b").mkdir()
    images("corrupt-images", {"a": [8, 8, 8], "b": [8, 8, 8]})
    (w / "corrupt-images" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    images("bomb-images", {"a": [8, 8, 8], "b": [8, 8, 8]})
    _png_header(w / "bomb-images" / "a" / "bomb.png", 20000, 20000)  # 400 M pixels declared, a few bytes stored
    images("mixed-images", {"a": [8, 8, 12], "b": [8, 8, 8]})


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares `width` x `height` pixels: what a decompression bomb looks like to a reader."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _model_files(w: Path) -> None:
    import torch

    handmade.linear_classifier(w / "linear.onnx")
    handmade.linear_classifier(w / "symbolic.onnx", ("batch", 1, "h", "w"))
    handmade.linear_classifier(w / "chance.onnx", classes=10, scale=0.0)
    handmade.three_input_model(w / "three.onnx")
    handmade.three_input_samples(w / "three.npz")
    handmade.three_input_samples(w / "no-sr.npz", sr=None)
    handmade.three_input_samples(w / "float-sr.npz", sr=np.full(30, 16000.0))
    handmade.three_input_samples(w / "short-audio.npz", audio=np.zeros((30, 12), np.float32))
    handmade.three_input_samples(w / "one.npz", count=1)

    evil = io.BytesIO()
    torch.save(handmade.RunsCode(w / MARKER), evil)
    (w / "evil.pt").write_bytes(evil.getvalue())
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.save(module.state_dict(), w / "other-weights.pt")  # not the built-in teacher's keys
    torch.jit.save(torch.jit.trace(module, torch.zeros(2, 1, 8, 8)), w / "whole.ts.pt")
    batch = torch.export.Dim("batch", min=2)
    torch.export.save(torch.export.export(module, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},)),
                      w / "good.pt2")
    handmade.pt2_variant(w / "good.pt2", w / "evil-weight.pt2", pickled_weight=evil.getvalue())
    handmade.pt2_variant(w / "good.pt2", w / "evil-inputs.pt2", sample_inputs=evil.getvalue())
    handmade.pt2_variant(w / "good.pt2", w / "evil-library.pt2", extra={"data/aotinductor/model.so": b"\x7fELF"})


def _output_folders(w: Path) -> None:
    (w / "webapp" / "src").mkdir(parents=True)
    (w / "webapp" / "manifest.json").write_text(json.dumps({"name": "My App", "start_url": "/"}))
    (w / "webapp" / "index.html").write_text("<html>app</html>")
    (w / "webapp" / "src" / "app.js").write_text("console.log('app')")
    handmade.bundle(w / "edited-bundle")
    (w / "edited-bundle" / "notes").mkdir()
    (w / "edited-bundle" / "notes" / "mine.txt").write_text("my notes")


def _bundles(w: Path) -> None:
    """One bundle per kind of damage, each a copy of a good hand-made bundle."""
    from edge_distill.hashing import sha256

    def variant(name: str, change=None, manifest_text: str | None = None) -> Path:
        folder = handmade.bundle(w / "bundles" / name)
        if manifest_text is not None:
            (folder / "manifest.json").write_text(manifest_text)
        elif change is not None:
            manifest = json.loads((folder / "manifest.json").read_text())
            change(manifest, folder)
            (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    def rehash(manifest, folder, name):
        manifest["files"][name]["sha256"] = sha256(folder / name)

    variant("good")
    variant("not-json", manifest_text="{not json")
    variant("array", manifest_text="[]")
    variant("no-golden", lambda m, f: m.pop("golden"))
    variant("files-list", lambda m, f: m.update(files=list(m["files"])))
    variant("record-string", lambda m, f: m["files"].update({"model.onnx": m["files"]["model.onnx"]["sha256"]}))
    variant("no-tolerance", lambda m, f: m["golden"].pop("tolerance"))
    variant("nan-tolerance", lambda m, f: m["golden"]["tolerance"].update(logits_atol=float("nan")))
    variant("empty-inputs", lambda m, f: m.update(inputs=[]))
    variant("labels-numbers", lambda m, f: m.update(labels=[0, 1, 2]))
    variant("string-schema", lambda m, f: m.update(schema_version="1"))
    variant("newer-schema", lambda m, f: m.update(schema_version=99))

    def garbage_golden(manifest, folder):
        (folder / "golden.json").write_text("{garbage")
        rehash(manifest, folder, "golden.json")

    def unloadable(manifest, folder):  # valid ONNX protobuf, an operator no runtime has
        model = onnx.load(str(folder / "model.onnx"))
        model.graph.node[1].op_type = "NoSuchOperator"
        onnx.save(model, str(folder / "model.onnx"))
        rehash(manifest, folder, "model.onnx")

    def not_protobuf(manifest, folder):
        (folder / "model.onnx").write_bytes(b"\x08\x07" + b"\xff" * 64)
        rehash(manifest, folder, "model.onnx")

    variant("golden-garbage", garbage_golden)
    variant("unloadable", unloadable)
    variant("not-protobuf", not_protobuf)
    variant("stray-library", lambda m, f: (f / "libextra.so").write_bytes(b"\x7fELF"))
