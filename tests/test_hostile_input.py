"""The bad-input corpus for the commands that read what others made (issue 22): optimize, text,
predict, bench (here, over SSH and on an inventory of devices), verify and cache, fed broken and
hostile files as a new user and an attacker would. Each row runs through the CLI as in
test_bad_input.py: its exit code, one line holding its words, the same error as JSON with --json,
no traceback, no code run, nothing written to a cache.

FIFOs stand in wherever a file is read: a reader that opened one would wait for a writer forever,
so a daemon thread opens any FIFO a reader holds open and closes it again, turning such a hang
into a wrong outcome that fails its row."""

from __future__ import annotations

import threading

import pytest

from tests.hostile import make_workspace, unblock_fifos
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
    ("predict-not-a-bundle", "predict {w}/userfolder {w}/x.npy", 3, ["manifest.json: missing"]),
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
    ("verify-text-section-without-ids", f"verify {BUNDLE}/text-without-ids", 1,
     ["FAIL  golden tokenization", "hold no input:input_ids"]),
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
    ("text-labeled-5000-digit-label", LABELED % "long-integer.jsonl", 3, ["long-integer.jsonl:1: not valid JSON"]),
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
    # issue 34's leftovers from the last round: each was a traceback or a silent wrong result
    ("predict-empty-labels", f"predict {BUNDLE}/empty-labels {{w}}/x.npy", 3, ["'labels' holds 0 name(s), the model scores 3"]),
    ("predict-fewer-labels", f"predict {BUNDLE}/fewer-labels {{w}}/x.npy", 3, ["'labels' holds 1 name(s), the model scores 3"]),
    ("predict-symbolic-sample-shape", f"predict {BUNDLE}/symbolic-input {{w}}/x.npy", 3,
     ["'inputs[0].shape' is ['batch', 1, 'height', 8]", "must be fixed"]),
    ("predict-image-without-color-mode", f"predict {BUNDLE}/no-color-mode {{w}}/gray.png", 3,
     ["missing 'preprocessing.color_mode'"]),
    ("verify-labels-metadata-not-json", f"verify {BUNDLE}/labels-metadata-not-json", 1,
     ["FAIL  model metadata labels", "is not JSON: 'zero, one, two'"]),
    ("verify-empty-labels", f"verify {BUNDLE}/empty-labels", 1, ["FAIL  model metadata labels"]),
    ("verify-image-without-color-mode", f"verify {BUNDLE}/no-color-mode", 1,
     ["FAIL  image conversion stated", "preprocessing.color_mode is missing"]),
    ("optimize-labels-empty", OPTIMIZE % ("three.onnx", "empty-labels.npz") + " --labels y", 3,
     ["--labels y: 0 int64 value(s) for 30 samples"]),
    ("optimize-integers-for-a-float-input", OPTIMIZE % ("three.onnx", "int-audio.npz"), 3,
     ["'audio' is int64, the model's input is float32"]),
    ("optimize-distill-labels-empty", OPTIMIZE % ("three.onnx", "empty-labels.npz") + " --labels y --distill", 3,
     ["--labels y: 0 int64 value(s)"]),
    ("optimize-distill-integers-for-float", OPTIMIZE % ("three.onnx", "int-audio.npz") + " --distill", 3,
     ["'audio' is int64"]),
    ("optimize-distill-custom-op", OPTIMIZE % ("custom-op.onnx", "x.npz") + " --distill", 4,
     ["ONNX Runtime cannot load it"]),
    ("cache-clean-inside-a-bundle", f"cache clean --all --cache-dir {BUNDLE}/good", 3, ["not an edge-distill cache"]),
    ("build-cache-inside-a-bundle", f"data -p rpi4 --cache-dir {BUNDLE}/good/cache", 3, ["inside the edge-distill bundle"]),
    ("text-out-holds-user-symlink", "text --teacher-folder {w}/teachers/base --text {w}/passages.txt "
     "--out {w}/bundle-with-link --cache-dir {w}/never", 3, ["does not list: my-notes"]),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    w = tmp_path_factory.mktemp("hostile")
    make_workspace(w)
    stop = threading.Event()
    threading.Thread(target=unblock_fifos, args=(w, stop), daemon=True).start()
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
