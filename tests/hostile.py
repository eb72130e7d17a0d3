"""The files of the hostile-input corpus (tests/test_hostile_input.py): broken and tampered
bundles, FIFOs where files belong, teacher folders whose config would run code, ONNX models ONNX
Runtime cannot load or run, calibration files that lie about their size, malformed inventories."""

from __future__ import annotations

import json
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np

from tests import handmade
from tests.test_bad_input import MARKER


def make_workspace(w: Path) -> None:
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


def unblock_fifos(w: Path, stop: threading.Event) -> None:
    """Open, every second, any FIFO of the workspace a reader is waiting on, and close it: the
    reader sees an empty file and fails its row instead of hanging the suite."""
    fifos = [p for p in w.rglob("*") if not p.is_symlink() and p.exists() and p.is_fifo()]
    while not stop.wait(1.0):
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # succeeds only while a reader waits
            except OSError:
                pass




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
    handmade.three_input_samples(w / "empty-labels.npz", y=np.zeros(0, np.int64))
    handmade.three_input_samples(w / "int-audio.npz", audio=np.ones((30, 16), np.int64))  # pixels not yet preprocessed
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(w / "gray.png")
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
    def text_section(manifest, folder):
        from tokenizers import Tokenizer, models

        Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(folder / "tokenizer.json"))
        (folder / "golden_text.json").write_text(json.dumps({"texts": ["a"], "input_ids": [[0]]}))
        manifest["text"] = {"tokenizer": "tokenizer.json", "golden_text": "golden_text.json", "max_length": 8}
        manifest["files"] |= {name: {"sha256": sha256(folder / name)} for name in ("tokenizer.json", "golden_text.json")}

    variant("text-without-ids", text_section)

    def labels_metadata(text: str):
        def change(manifest, folder):
            import onnx

            model = onnx.load(str(folder / "model.onnx"))
            for prop in model.metadata_props:
                if prop.key == "edge_distill.labels":
                    prop.value = text
            onnx.save(model, str(folder / "model.onnx"))
            manifest["files"]["model.onnx"]["sha256"] = manifest["model"]["sha256"] = sha256(folder / "model.onnx")
        return change

    # Issue 34's leftovers from the last round: each was a traceback.
    variant("empty-labels", lambda m, f: m.update(labels=[]))
    variant("fewer-labels", lambda m, f: m.update(labels=m["labels"][:1]))
    variant("labels-metadata-not-json", labels_metadata("zero, one, two"))
    variant("symbolic-input", lambda m, f: m["inputs"][0].update(shape=["batch", 1, "height", 8]))
    variant("no-color-mode", lambda m, f: (m["preprocessing"].pop("color_mode"),
                                           m.update(raw_input={"kind": "image file (PNG, JPEG)", "resize": "PIL bilinear"})))
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
