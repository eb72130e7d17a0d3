"""The bad-input corpus for the commands that read what others made (issue 22): optimize, text,
predict, bench (here, over SSH and on an inventory of devices), verify and cache, fed broken and
hostile files as a new user and an attacker would. Each row runs through the CLI as in
test_bad_input.py: its exit code, one line holding its words, the same error as JSON with --json,
no traceback, no code run, nothing written to a cache.

FIFOs stand in wherever a file is read: a reader that opened one would wait for a writer forever,
so a daemon thread opens any FIFO a reader holds open and closes it again, turning such a hang
into a wrong outcome that fails its row."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests import handmade
from tests.test_bad_input import MARKER, check_case

BUNDLE = "{w}/bundles"
TEACHER = "text --teacher-folder {w}/teachers/%s --text {w}/passages.txt --out {w}/t-out --cache-dir {w}/never"
LABELED = ("text --task classification --teacher-folder {w}/teachers/base --labeled {w}/%s --out {w}/t-out "
           "--cache-dir {w}/never")
OPTIMIZE = "optimize {w}/%s -p x86-avx512 --calibration {w}/%s --out {w}/o-out --cache-dir {w}/never"
REFUSED = "refused, the bundle is not as its manifest vouches"

# (id, command line with {w} for the workspace, exit code, words the error must hold)
CASES = [
    # cache: a folder that is not a cache is never touched
    ("cache-clean-user-folder", "cache clean --cache-dir {w}/userfolder", 3, ["not an edge-distill cache", "CACHEDIR.TAG"]),
    ("cache-clean-all-user-folder", "cache clean --all --cache-dir {w}/userfolder", 3, ["not an edge-distill cache"]),
    ("cache-clean-older-user-folder", "cache clean --older-than 0 --cache-dir {w}/userfolder", 3, ["changed nothing"]),
    ("cache-info-user-folder", "cache info --cache-dir {w}/userfolder", 3, ["not an edge-distill cache"]),
    ("cache-info-on-a-file", "cache info --cache-dir {w}/notes.txt", 3, ["notes.txt: not a folder"]),
    ("cache-clean-on-a-file", "cache clean --cache-dir {w}/notes.txt", 3, ["notes.txt: not a folder"]),
    ("cache-clean-symlinked-root", "cache clean --all --cache-dir {w}/cache-link", 3, ["cache-link: not a folder"]),
    ("cache-clean-nan-age", "cache clean --older-than nan --cache-dir {w}/userfolder", 2, ["--older-than", "finite"]),
    ("build-into-user-folder", "data -p rpi4 --cache-dir {w}/userfolder", 3, ["not an edge-distill cache", "nothing was changed"]),
    # predict: the bundle is vouched for before its model runs; the files given are checked
    ("predict-model-outside", f"predict {BUNDLE}/outside {{w}}/x.npy", 3, [REFUSED, "points outside the bundle"]),
    ("predict-model-absolute", f"predict {BUNDLE}/absolute {{w}}/x.npy", 3, [REFUSED, "points outside the bundle"]),
    ("predict-tampered-model", f"predict {BUNDLE}/tampered {{w}}/x.npy", 3, [REFUSED, "file model.onnx: sha256 differs"]),
    ("predict-symlinked-folder", f"predict {BUNDLE}/symlinked-folder {{w}}/x.npy", 3, [REFUSED, "symlink(s) in the bundle: extra"]),
    ("predict-symlinked-file", f"predict {BUNDLE}/symlinked-file {{w}}/x.npy", 3, [REFUSED, "golden.json: a symlink"]),
    ("predict-unlisted-file", f"predict {BUNDLE}/unlisted {{w}}/x.npy", 3, [REFUSED, "not in the manifest: libextra.so"]),
    ("predict-manifest-fifo", f"predict {BUNDLE}/fifo-manifest {{w}}/x.npy", 3, ["manifest.json: is a FIFO"]),
    ("predict-manifest-deep", f"predict {BUNDLE}/deep {{w}}/x.npy", 3, ["manifest.json: nested too deeply"]),
    ("predict-std-zero", f"predict {BUNDLE}/std-zero {{w}}/x.npy", 3, ["'preprocessing.std[0]' must be a finite number > 0"]),
    ("predict-no-preprocessing", f"predict {BUNDLE}/plain {{w}}/x.npy", 3, ["missing 'preprocessing'"]),
    ("predict-unloadable-model", f"predict {BUNDLE}/custom-op {{w}}/x.npy", 4, ["ONNX Runtime cannot load it",
                                                                               "com.example.evil"]),
    ("predict-file-missing", f"predict {BUNDLE}/good {{w}}/absent.npy", 3, ["absent.npy: file not found"]),
    ("predict-file-is-folder", f"predict {BUNDLE}/good {{w}}/userfolder", 3, ["userfolder: is a folder"]),
    ("predict-file-fifo", f"predict {BUNDLE}/good {{w}}/fifo.npy", 3, ["fifo.npy: is a FIFO"]),
    ("predict-nan-input", f"predict {BUNDLE}/good {{w}}/nan.npy", 3, ["nan.npy: holds NaN or inf"]),
    ("predict-overflowing-input", f"predict {BUNDLE}/good {{w}}/huge.npy", 3, ["huge.npy: holds NaN or inf", "overflow"]),
    ("predict-wrong-shape", f"predict {BUNDLE}/good {{w}}/short.npy", 3, ["short.npy: shape 1 x 4 x 4"]),
    ("predict-pickled-npy", f"predict {BUNDLE}/good {{w}}/pickled.npy", 3, ["pickled.npy: not a readable .npy"]),
    ("predict-text-file", f"predict {BUNDLE}/good {{w}}/notes.txt", 3, ["notes.txt: this bundle's raw input is"]),
    ("predict-top-zero", f"predict {BUNDLE}/good {{w}}/x.npy --top 0", 2, ["--top"]),
    ("predict-nul-label", f"predict {BUNDLE}/nul-label {{w}}/x.npy", 3, ["'labels[0]' must be a string", "no NUL"]),
    ("predict-not-a-bundle", f"predict {{w}}/userfolder {{w}}/x.npy", 3, ["manifest.json: missing"]),
    # bench: refused before anything is read, timed or copied to a device
    ("bench-model-outside", f"bench {BUNDLE}/outside", 3, [REFUSED, "points outside the bundle"]),
    ("bench-remote-model-outside", f"bench {BUNDLE}/outside --remote 127.0.0.1", 3, [REFUSED]),
    ("bench-remote-model-absolute", f"bench {BUNDLE}/absolute --remote pi@127.0.0.1", 3, [REFUSED]),
    ("bench-tampered-model", f"bench {BUNDLE}/tampered", 3, [REFUSED, "sha256 differs"]),
    ("bench-remote-tampered-model", f"bench {BUNDLE}/tampered --remote 127.0.0.1", 3, [REFUSED, "sha256 differs"]),
    ("bench-two-remotes-tampered", f"bench {BUNDLE}/tampered --remote 127.0.0.1 --remote 127.0.0.2", 3, [REFUSED]),
    ("bench-devices-symlinked-folder", f"bench {BUNDLE}/symlinked-folder --devices {{w}}/inventories/good.toml", 3,
     [REFUSED, "symlink"]),
    ("bench-unlisted-file", f"bench {BUNDLE}/unlisted", 3, [REFUSED, "libextra.so"]),
    ("bench-runtime-empty", f"bench {BUNDLE}/runtime-empty", 3, ["missing 'runtime.intra_op_threads'"]),
    ("bench-threads-string", f"bench {BUNDLE}/threads-string", 3, ["'profile.benchmark.threads' must be an integer from 1 to 1024",
                                                                   "'two'"]),
    ("bench-no-benchmark-settings", f"bench {BUNDLE}/no-benchmark", 3, ["missing 'profile.benchmark'"]),
    ("bench-profile-name-number", f"bench {BUNDLE}/profile-name-number", 3, ["'profile.name' must be a string or null"]),
    ("bench-manifest-deep", f"bench {BUNDLE}/deep", 3, ["nested too deeply"]),
    ("bench-unloadable-model", f"bench {BUNDLE}/custom-op --runs 1 --min-seconds 0", 8,
     ["the local runner failed", "com.example.evil"]),
    ("bench-min-seconds-nan", f"bench {BUNDLE}/good --min-seconds nan", 2, ["--min-seconds", "finite"]),
    ("bench-time-limit-zero", f"bench {BUNDLE}/good --time-limit 0", 2, ["--time-limit"]),
    ("bench-threads-zero", f"bench {BUNDLE}/good --threads 0", 2, ["--threads"]),
    # inventories: every field typed, read like an ssh config (README, "Which files run code")
    ("inventory-integer-host", f"bench {BUNDLE}/good --devices {{w}}/inventories/integer-host.toml", 2,
     ["device 1: 'host' must be a string", "got 5"]),
    ("inventory-integer-profile", f"bench {BUNDLE}/good --devices {{w}}/inventories/integer-profile.toml", 2,
     ["device 1: 'profile' must be a string"]),
    ("inventory-nul-host", f"bench {BUNDLE}/good --devices {{w}}/inventories/nul-host.toml", 2,
     ["device 1: 'host' must be a string (no NUL bytes"]),
    ("inventory-empty-name", f"bench {BUNDLE}/good --devices {{w}}/inventories/empty-name.toml", 2, ["'name' must be a string"]),
    ("inventory-not-tables", f"bench {BUNDLE}/good --devices {{w}}/inventories/not-tables.toml", 2,
     ["device 1: expected a [[device]] table, got 1"]),
    ("inventory-deep", f"bench {BUNDLE}/good --devices {{w}}/inventories/deep.toml", 2, ["deep.toml: nested too deeply"]),
    ("inventory-fifo", f"bench {BUNDLE}/good --devices {{w}}/inventories/fifo.toml", 2, ["fifo.toml: is a FIFO"]),
    ("inventory-folder", f"bench {BUNDLE}/good --devices {{w}}/inventories", 2, ["inventories: is a folder"]),
    ("inventory-missing", f"bench {BUNDLE}/good --devices {{w}}/inventories/absent.toml", 2, ["absent.toml: file not found"]),
    ("inventory-host-as-option", f"bench {BUNDLE}/good --devices {{w}}/inventories/host-option.toml", 2,
     ["not starting with '-'"]),
    ("inventory-unknown-profile", f"bench {BUNDLE}/good --devices {{w}}/inventories/unknown-profile.toml", 2,
     ["device 1: profile: unknown profile 'rpi9'"]),
    # verify: a malformed manifest is one line; a bundle that is not what it vouches for fails its checks
    ("verify-runtime-empty", f"verify {BUNDLE}/runtime-empty", 3, ["missing 'runtime.intra_op_threads'"]),
    ("verify-threads-string", f"verify {BUNDLE}/threads-string", 3, ["'profile.benchmark.threads' must be an integer"]),
    ("verify-text-max-length-string", f"verify {BUNDLE}/max-length-string", 3, ["'text.max_length' must be an integer",
                                                                                "'abc'"]),
    ("verify-nul-label", f"verify {BUNDLE}/nul-label", 3, ["'labels[0]' must be a string"]),
    ("verify-manifest-deep", f"verify {BUNDLE}/deep", 3, ["nested too deeply"]),
    ("verify-manifest-fifo", f"verify {BUNDLE}/fifo-manifest", 3, ["is a FIFO"]),
    ("verify-file-record-number", f"verify {BUNDLE}/record-number", 3, ["'files.model.onnx.sha256' must be a string"]),
    ("verify-shape-not-list", f"verify {BUNDLE}/shape-not-list", 3, ["'inputs[0].shape' must be a list"]),
    ("verify-symlinked-folder", f"verify {BUNDLE}/symlinked-folder", 1, ["FAIL  no unlisted files", "symlink(s) in the bundle: extra"]),
    ("verify-symlinked-file", f"verify {BUNDLE}/symlinked-file", 1, ["FAIL  file golden.json", "a symlink"]),
    ("verify-model-outside", f"verify {BUNDLE}/outside", 1, ["points outside the bundle"]),
    ("verify-model-absolute", f"verify {BUNDLE}/absolute", 1, ["points outside the bundle"]),
    # optimize: the model and the calibration samples
    ("optimize-model-is-folder", OPTIMIZE % ("userfolder", "three.npz"), 3, ["userfolder: is a folder"]),
    ("optimize-model-fifo", OPTIMIZE % ("fifo.onnx", "three.npz"), 3, ["fifo.onnx: is a FIFO"]),
    ("optimize-model-missing", OPTIMIZE % ("absent.onnx", "three.npz"), 3, ["absent.onnx: file not found"]),
    ("optimize-custom-op", OPTIMIZE % ("custom-op.onnx", "x.npz"), 4, ["custom-op.onnx: ONNX Runtime cannot load it",
                                                                     "com.example.evil"]),
    ("optimize-no-outputs", OPTIMIZE % ("no-outputs.onnx", "x.npz"), 3, ["no-outputs.onnx: the graph has no outputs"]),
    ("optimize-bfloat16-input", OPTIMIZE % ("bfloat16.onnx", "x.npz"), 3, ["'x' is BFLOAT16"]),
    ("optimize-expand-160gb", OPTIMIZE % ("expand-160gb.onnx", "x.npz"), 4, ["expand-160gb.onnx on the first sample",
                                                                           "ONNX Runtime cannot run it"]),
    ("optimize-complex-samples", OPTIMIZE % ("three.onnx", "complex.npz"), 3, ["'audio' is complex128", "float32"]),
    ("optimize-uint64-wraps", OPTIMIZE % ("three.onnx", "uint64-sr.npz"), 3, ["'sr' holds", "outside the model's int64 range"]),
    ("optimize-out-of-range-samples", OPTIMIZE % ("three.onnx", "huge-audio.npz"), 3, ["'audio' holds values up to 3e+38",
                                                                                       "no int8 scale"]),
    ("optimize-bool-for-float", OPTIMIZE % ("three.onnx", "bool-audio.npz"), 3, ["'audio' is bool"]),
    ("optimize-declares-gigabytes", OPTIMIZE % ("three.onnx", "declares-8gb.npz"), 3, ["unpack to 8.0 GiB"]),
    ("optimize-samples-fifo", OPTIMIZE % ("three.onnx", "fifo.npz"), 3, ["fifo.npz: is a FIFO"]),
    ("optimize-samples-folder-with-fifo", OPTIMIZE % ("three.onnx", "samples-with-fifo"), 3, ["b.npz: is a FIFO"]),
    ("optimize-samples-missing", OPTIMIZE % ("three.onnx", "absent.npz"), 3, ["absent.npz: file not found"]),
    ("optimize-min-snr-nan", OPTIMIZE % ("three.onnx", "three.npz") + " --min-snr nan", 2, ["--min-snr", "finite"]),
    ("optimize-min-snr-inf", OPTIMIZE % ("three.onnx", "three.npz") + " --min-snr inf", 2, ["--min-snr", "finite"]),
    ("optimize-accuracy-drop-nan", OPTIMIZE % ("three.onnx", "three.npz") + " --labels y --max-accuracy-drop nan", 2,
     ["--max-accuracy-drop", "finite"]),
    ("optimize-labels-float", OPTIMIZE % ("three.onnx", "float-labels.npz") + " --labels y", 3, ["--labels y", "integer"]),
    ("optimize-labels-absent", OPTIMIZE % ("three.onnx", "three.npz") + " --labels y", 3, ["has no array 'y'"]),
    ("optimize-shape-too-large", OPTIMIZE % ("symbolic.onnx", "three.npz") + " --shape x:1x1x3037000500x3037000500", 2,
     ["holds 9.22e+18 values"]),
    ("optimize-time-limit-nan", OPTIMIZE % ("three.onnx", "three.npz") + " --time-limit nan", 2, ["--time-limit"]),
    ("optimize-out-holds-user-symlink", "optimize {w}/three.onnx -p x86-avx512 --calibration {w}/three.npz "
     "--out {w}/bundle-with-link --cache-dir {w}/never", 3, ["does not list: my-notes", "nothing was changed"]),
    ("optimize-unknown-set-key", OPTIMIZE % ("three.onnx", "three.npz") + " --set quantize.formats=QDQ", 2,
     ["unknown key 'quantize.formats'"]),
    # text: the teacher folder's files, the text, the labels
    ("text-teacher-missing", TEACHER % "absent", 2, ["absent: not found"]),
    ("text-teacher-is-file", "text --teacher-folder {w}/notes.txt --text {w}/passages.txt --out {w}/t-out "
     "--cache-dir {w}/never", 2, ["notes.txt: not found, or not a folder"]),
    ("text-no-config", TEACHER % "no-config", 2, ["no config.json"]),
    ("text-config-not-json", TEACHER % "config-not-json", 4, ["config.json: not valid JSON"]),
    ("text-config-array", TEACHER % "config-array", 4, ["config.json: the file must be an object"]),
    ("text-config-deep", TEACHER % "config-deep", 4, ["config.json: nested too deeply"]),
    ("text-config-fifo", TEACHER % "config-fifo", 4, ["config.json: is a FIFO"]),
    ("text-config-no-model-type", TEACHER % "no-model-type", 4, ["missing 'model_type'"]),
    ("text-config-layers-string", TEACHER % "layers-string", 4, ["'num_hidden_layers' must be an integer"]),
    ("text-auto-map-code", TEACHER % "auto-map", 4, ["config.json has 'auto_map'", "never runs a teacher folder's code"]),
    ("text-tokenizer-config-auto-map", TEACHER % "tokenizer-auto-map", 4, ["tokenizer_config.json has 'auto_map'"]),
    ("text-id2label-not-indices", TEACHER % "id2label-names", 4, ["'id2label' keys must be class indices"]),
    ("text-id2label-superscript", TEACHER % "id2label-superscript", 4, ["'id2label' keys must be class indices", "'²'"]),
    ("text-id2label-label-number", TEACHER % "id2label-number", 4, ["'id2label.0' must be a string"]),
    ("text-pooling-not-json", TEACHER % "pooling-not-json", 4, ["1_Pooling/config.json: not valid JSON"]),
    ("text-pooling-wrong-type", TEACHER % "pooling-wrong-type", 4, ["'pooling_mode_mean_tokens' must be true or false"]),
    ("text-modules-not-list", TEACHER % "modules-not-list", 4, ["modules.json: the file must be a list"]),
    ("text-modules-type-number", TEACHER % "modules-type-number", 4, ["'[0].type' must be a string"]),
    ("text-tokenizer-not-json", TEACHER % "tokenizer-not-json", 4, ["tokenizer.json: not valid JSON"]),
    ("text-tokenizer-not-a-tokenizer", TEACHER % "tokenizer-wrong", 4, ["not a tokenizer the tokenizers library reads"]),
    ("text-tokenizer-fifo", TEACHER % "tokenizer-fifo", 4, ["tokenizer.json: is a FIFO"]),
    ("text-tokenizer-deep", TEACHER % "tokenizer-deep", 4, ["tokenizer.json: nested too deeply"]),
    ("text-passages-fifo", "text --teacher-folder {w}/teachers/base --text {w}/fifo.txt --out {w}/t-out "
     "--cache-dir {w}/never", 3, ["fifo.txt: is a FIFO"]),
    ("text-passages-missing", "text --teacher-folder {w}/teachers/base --text {w}/absent.txt --out {w}/t-out "
     "--cache-dir {w}/never", 3, ["absent.txt: file not found"]),
    ("text-passages-not-utf8", "text --teacher-folder {w}/teachers/base --text {w}/latin1.txt --out {w}/t-out "
     "--cache-dir {w}/never", 3, ["latin1.txt: not UTF-8"]),
    ("text-labeled-fifo", LABELED % "fifo.jsonl", 3, ["fifo.jsonl: is a FIFO"]),
    ("text-labeled-folder", LABELED % "userfolder", 3, ["userfolder: is a folder"]),
    ("text-labeled-5000-digit-label", LABELED % "long-integer.jsonl", 3, ["long-integer.jsonl:1: not JSON"]),
    ("text-labeled-deep-line", LABELED % "deep.jsonl", 3, ["deep.jsonl:1: nested too deeply"]),
    ("text-labeled-label-too-long", LABELED % "long-label.jsonl", 3, ["'label'", "is not a class name or an integer"]),
    ("text-tokenizer-backtracking-regex", "text --teacher-folder {w}/teachers/regex-bert --text {w}/backtracking.txt "
     "--max-length 32 --out {w}/t-out --cache-dir {w}/cache", 4, ["the tokenizers library failed", "retry-limit-in-match"]),
    ("text-tokenizer-ids-beyond-vocabulary", TEACHER % "ids-beyond", 4, ["token id 2 is beyond the model's vocabulary",
                                                                        "vocab_size 2"]),
    # any file read is a regular file; any measurement is bounded
    ("data-image-fifo", "data -p rpi4 --data {w}/fifo-images", 3, ["x.png: is a FIFO"]),
    ("data-npz-fifo", "data -p rpi4 --data {w}/fifo.npz", 3, ["data.source", "fifo.npz: is a FIFO"]),
    ("teacher-checkpoint-fifo", "teacher -p rpi4 --teacher-checkpoint {w}/fifo.pt", 3, ["teacher.checkpoint",
                                                                                        "fifo.pt: is a FIFO"]),
    ("teacher-file-fifo", "teacher -p rpi4 --teacher-file {w}/fifo.onnx", 3, ["teacher.file", "fifo.onnx: is a FIFO"]),
    ("input-artifact-fifo", "quantize -p rpi4 --input student_fp32.onnx={w}/fifo.onnx", 3,
     ["--input student_fp32.onnx", "is a FIFO"]),
    ("config-fifo", "data -p rpi4 --config {w}/fifo.toml", 2, ["fifo.toml: is a FIFO"]),
    ("profile-fifo", "data -p {w}/fifo.toml", 2, ["fifo.toml: is a FIFO"]),
    ("estimate-measure-endless-loop", "estimate {w}/loop.onnx -p rpi4 --measure --time-limit 1", 4,
     ["stopped after the time limit of 1 s", "benchmark.time_limit_s (--time-limit)"]),
    ("optimize-endless-loop", OPTIMIZE % ("loop.onnx", "loop.npz") + " --time-limit 1", 4,
     ["loop.onnx on the first sample", "stopped after the time limit of 1 s"]),
    ("estimate-model-is-folder", "estimate {w}/userfolder -p rpi4", 3, ["userfolder: is a folder"]),
    ("text-min-quality-nan", TEACHER % "base" + " --min-quality nan", 2, ["--min-quality", "finite"]),
    ("text-max-latency-inf", TEACHER % "base" + " --max-latency-ms inf", 2, ["--max-latency-ms", "finite"]),
    ("text-out-holds-user-symlink", "text --teacher-folder {w}/teachers/base --text {w}/passages.txt "
     "--out {w}/bundle-with-link --cache-dir {w}/never", 3, ["does not list: my-notes"]),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    w = tmp_path_factory.mktemp("hostile")
    (w / "notes.txt").write_text("not data")
    (w / "userfolder" / "photos" / "2024").mkdir(parents=True)  # a second-level folder, as cache entries are
    (w / "userfolder" / "photos" / "2024" / "a.jpg").write_bytes(b"\xff\xd8 a photo")
    (w / "userfolder" / "stage.json").write_text("{}")
    cache = w / "real-cache"
    cache.mkdir()
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (w / "cache-link").symlink_to(cache, target_is_directory=True)
    _samples(w)
    _bundles(w)
    _inventories(w)
    _teachers(w)
    stop = threading.Event()
    threading.Thread(target=_unblock_fifos, args=(w, stop), daemon=True).start()
    yield w
    stop.set()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gives_one_line_and_its_exit_code(case, workspace):
    check_case(case, workspace)
    assert not (workspace / "t-out").exists() and not (workspace / "o-out").exists()


def test_the_corpus_covers_every_command_that_reads_others_files():
    from tests.test_bad_input import CASES as BUILD_CASES

    assert len(CASES) >= 100 and len({c[0] for c in CASES + BUILD_CASES}) == len(CASES) + len(BUILD_CASES)
    commands = {c[1].split()[0] for c in CASES}
    assert {"optimize", "text", "predict", "bench", "verify", "cache"} <= commands
    assert sum("--devices" in c[1] for c in CASES) >= 10


def test_the_user_folder_is_byte_for_byte_as_it_was(workspace):
    for case in CASES[:9]:
        check_case(case, workspace)
    assert sorted(p.name for p in (workspace / "userfolder").rglob("*")) == ["2024", "a.jpg", "photos", "stage.json"]
    assert (workspace / "userfolder" / "photos" / "2024" / "a.jpg").read_bytes() == b"\xff\xd8 a photo"
    assert not (workspace / "userfolder" / "CACHEDIR.TAG").exists()


def test_an_auto_map_teachers_code_never_runs_and_nothing_prompts(workspace, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "stdin", _NoInput())  # a prompt would read here and fail the test
    for case in [c for c in CASES if "auto-map" in c[0]]:
        check_case(case, workspace)
    assert not (workspace / MARKER).exists() and (workspace / "teachers" / "auto-map" / "modeling_evil.py").is_file()


class _NoInput:
    def read(self, *_):
        raise AssertionError("something asked for input")

    readline = read


def _unblock_fifos(w: Path, stop: threading.Event) -> None:
    fifos = [p for p in w.rglob("*") if not p.is_symlink() and p.exists() and p.is_fifo()]
    while not stop.wait(1.0):
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # succeeds only while a reader waits
            except OSError:
                pass


# ---- the workspace's files -------------------------------------------------------------------------


def _samples(w: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    np.save(w / "x.npy", rng.standard_normal((1, 8, 8)).astype(np.float32))
    np.save(w / "nan.npy", np.full((1, 8, 8), np.nan, np.float32))
    np.save(w / "huge.npy", np.full((1, 8, 8), 1e300))
    np.save(w / "short.npy", np.zeros((1, 4, 4), np.float32))
    np.save(w / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name in ("fifo.npy", "fifo.onnx", "fifo.npz", "fifo.txt", "fifo.jsonl", "fifo.pt", "fifo.toml"):
        os.mkfifo(w / name)
    handmade.three_input_model(w / "three.onnx")
    handmade.linear_classifier(w / "symbolic.onnx", ("batch", 1, "h", "w"))
    for kind in ("custom-op", "no-outputs", "bfloat16", "expand-160gb"):
        handmade.hostile_model(w / f"{kind}.onnx", kind)
    np.savez(w / "x.npz", x=rng.standard_normal((10, 1, 1, 8, 8)).astype(np.float32))
    handmade.three_input_samples(w / "three.npz")
    handmade.three_input_samples(w / "complex.npz", audio=rng.standard_normal((30, 16)) * (1 + 1j))
    handmade.three_input_samples(w / "uint64-sr.npz", sr=np.full(30, 2**63 + 5, np.uint64))
    handmade.three_input_samples(w / "huge-audio.npz", audio=np.full((30, 16), 3e38, np.float32))
    handmade.three_input_samples(w / "bool-audio.npz", audio=np.ones((30, 16), bool))
    handmade.three_input_samples(w / "float-labels.npz", y=np.zeros(30, np.float32))
    (w / "samples-with-fifo").mkdir()
    handmade.three_input_samples(w / "samples-with-fifo" / "a.npz")
    os.mkfifo(w / "samples-with-fifo" / "b.npz")
    with zipfile.ZipFile(w / "declares-8gb.npz", "w") as archive:  # a header promising 8 GiB, a few bytes stored
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (134217728, 1, 16), }"
        header += " " * (63 - (10 + len(header)) % 64) + "\n"
        archive.writestr("audio.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    handmade.loop_model(w / "loop.onnx")
    np.savez(w / "loop.npz", x=np.zeros((10, 1), np.float32))
    for label in ("a", "b"):
        (w / "fifo-images" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(w / "fifo-images" / label / f"{i}.png")
    os.mkfifo(w / "fifo-images" / "a" / "x.png")
    (w / "backtracking.txt").write_text("\n".join("a" * 60 + f"b {i}" for i in range(12)))
    (w / "passages.txt").write_text("\n".join(f"passage number {i} about a topic" for i in range(12)))
    (w / "latin1.txt").write_bytes("caf\u00e9\n".encode("latin-1") * 12)
    (w / "long-integer.jsonl").write_text('{"text": "a", "label": ' + "7" * 5000 + "}\n")
    (w / "deep.jsonl").write_text('{"text": "a", "label": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (w / "long-label.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": "x" * 300}) + "\n"
                                                for i in range(12)))


def _bundles(w: Path) -> None:
    from edge_distill.hashing import sha256

    handmade.bundle(w / "bundle-with-link")
    (w / "bundle-with-link" / "my-notes").symlink_to(w / "notes.txt")
    secret = handmade.linear_classifier(w / "secret.onnx", seed=7)

    def variant(name: str, change=None) -> Path:
        folder = handmade.bundle(w / "bundles" / name)
        manifest = json.loads((folder / "manifest.json").read_text())
        if name != "plain":  # what `predict` needs of a classifier's bundle
            manifest |= {"preprocessing": {"mean": [0.0], "std": [1.0], "pixel_scale": 1.0, "color_mode": "grayscale",
                                           "layout": "NCHW"}, "raw_input": {"kind": "array (.npy)"}}
        if change is not None:
            change(manifest, folder)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    def point_model_at(location: str):
        def change(manifest, folder):
            manifest["model"]["file"] = location
            manifest["files"] = {location: {"sha256": sha256(secret)}} | {
                k: v for k, v in manifest["files"].items() if k != "model.onnx"}
            (folder / "model.onnx").unlink()
        return change

    def replace_model(kind: str):
        def change(manifest, folder):
            handmade.hostile_model(folder / "model.onnx", kind)
            manifest["files"]["model.onnx"]["sha256"] = sha256(folder / "model.onnx")
        return change

    def symlinked_file(manifest, folder):
        shutil.move(folder / "golden.json", w / "golden-copy.json")
        (folder / "golden.json").symlink_to(w / "golden-copy.json")

    for name in ("good", "plain"):
        variant(name)
    variant("outside", point_model_at("../../secret.onnx"))
    variant("absolute", point_model_at(str(secret)))
    variant("tampered", lambda m, f: handmade.linear_classifier(f / "model.onnx", seed=3))
    variant("symlinked-folder", lambda m, f: (f / "extra").symlink_to("/", target_is_directory=True))
    variant("symlinked-file", symlinked_file)
    variant("unlisted", lambda m, f: (f / "libextra.so").write_bytes(b"\x7fELF"))
    variant("custom-op", replace_model("custom-op"))
    variant("runtime-empty", lambda m, f: m.update(runtime={}))
    variant("threads-string", lambda m, f: m["profile"]["benchmark"].update(threads="two"))
    variant("no-benchmark", lambda m, f: m["profile"].pop("benchmark"))
    variant("profile-name-number", lambda m, f: m["profile"].update(name=5))
    variant("max-length-string", lambda m, f: m.update(text={"tokenizer": "t.json", "golden_text": "g.json",
                                                             "max_length": "abc"}))
    variant("nul-label", lambda m, f: m.update(labels=["a\0", "b", "c"]))
    variant("std-zero", lambda m, f: m["preprocessing"].update(std=[0.0]))
    variant("record-number", lambda m, f: m["files"]["model.onnx"].update(sha256=5))
    variant("shape-not-list", lambda m, f: m["inputs"][0].update(shape="batch x 1 x 8 x 8"))
    (variant("deep") / "manifest.json").write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    (variant("fifo-manifest") / "manifest.json").unlink()
    os.mkfifo(w / "bundles" / "fifo-manifest" / "manifest.json")


def _inventories(w: Path) -> None:
    folder = w / "inventories"
    folder.mkdir()
    files = {"good": 'host = "pi@127.0.0.1"', "integer-host": "host = 5", "integer-profile": 'host = "pi"\nprofile = 3',
             "nul-host": 'host = "pi\\u0000x"', "empty-name": 'host = "pi"\nname = ""',
             "host-option": 'host = "-oProxyCommand=touch PWNED"', "unknown-profile": 'host = "pi"\nprofile = "rpi9"'}
    for name, body in files.items():
        (folder / f"{name}.toml").write_text(f"[[device]]\n{body}\n")
    (folder / "not-tables.toml").write_text("device = [1, 2]\n")
    (folder / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    os.mkfifo(folder / "fifo.toml")


def _teachers(w: Path) -> None:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel

    base = w / "teachers" / "base"
    base.mkdir(parents=True)
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "passage": 1, "topic": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(base / "tokenizer.json"))
    config = {"model_type": "bert", "architectures": ["BertModel"], "max_position_embeddings": 64}
    (base / "config.json").write_text(json.dumps(config))

    def teacher(name: str, files: dict[str, str | None]) -> None:
        folder = w / "teachers" / name
        shutil.copytree(base, folder)
        for file, text in files.items():
            (folder / file).parent.mkdir(exist_ok=True)
            if text is None:
                (folder / file).unlink()
            else:
                (folder / file).write_text(text)

    def configured(**changes) -> str:
        return json.dumps({**config, **changes})

    deep = "[" * 200_000 + "]" * 200_000
    evil = f"import pathlib\npathlib.Path({str(w / MARKER)!r}).touch()\n"
    teacher("no-config", {"config.json": None})
    teacher("config-not-json", {"config.json": "{model_type: bert"})
    teacher("config-array", {"config.json": "[]"})
    teacher("config-deep", {"config.json": deep})
    teacher("config-fifo", {"config.json": None})
    os.mkfifo(w / "teachers" / "config-fifo" / "config.json")
    teacher("no-model-type", {"config.json": json.dumps({"architectures": ["BertModel"]})})
    teacher("layers-string", {"config.json": configured(num_hidden_layers="six")})
    teacher("auto-map", {"config.json": configured(auto_map={"AutoModel": "modeling_evil.EvilModel"}),
                         "modeling_evil.py": evil})
    teacher("tokenizer-auto-map", {"tokenizer_config.json": json.dumps({"auto_map": {"AutoTokenizer": ["t.Evil", None]}}),
                                   "t.py": evil})
    teacher("id2label-names", {"config.json": configured(id2label={"a": "first", "b": "second"})})
    teacher("id2label-superscript", {"config.json": configured(id2label={"²": "two"})})
    teacher("id2label-number", {"config.json": configured(id2label={"0": 7})})
    teacher("pooling-not-json", {"1_Pooling/config.json": "{mean"})
    teacher("pooling-wrong-type", {"1_Pooling/config.json": json.dumps({"pooling_mode_mean_tokens": "yes"})})
    teacher("modules-not-list", {"modules.json": json.dumps({"type": "Normalize"})})
    teacher("modules-type-number", {"modules.json": json.dumps([{"type": 3}])})
    teacher("tokenizer-not-json", {"tokenizer.json": "{vocab"})
    teacher("tokenizer-wrong", {"tokenizer.json": json.dumps({"model": {"type": "NoSuchModel"}})})
    teacher("tokenizer-deep", {"tokenizer.json": deep})
    teacher("ids-beyond", {"config.json": configured(vocab_size=2)})
    regex_bert = w / "teachers" / "regex-bert"  # a loadable model whose pre-tokenizer backtracks without end
    shutil.copytree(base, regex_bert)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+$"), behavior="isolated")
    tokenizer.save(str(regex_bert / "tokenizer.json"))
    BertModel(BertConfig(vocab_size=3, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8, max_position_embeddings=64)).save_pretrained(str(regex_bert))
    teacher("tokenizer-fifo", {"tokenizer.json": None})
    os.mkfifo(w / "teachers" / "tokenizer-fifo" / "tokenizer.json")
