"""The workspace of the language-model bad-input corpus (tests/test_hostile_llm.py): teacher folders
and GGUF files broken in each way a download or an attacker breaks them, texts, and a real generator
bundle (a tiny `edge-distill llm` build) with each of its files damaged and the manifest's hashes
made to match again, so that only the generator kind's own checks can catch it."""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.lm.conftest import SENTENCES, tiny_llama_folder


def make_llm_workspace(w: Path, generator_bundle: Path) -> None:
    """`generator_bundle`: a bundle `verify` passes, copied and damaged here under gen/."""
    _texts(w)
    _teachers(w)
    _gguf_files(w)
    _generator_bundles(w, generator_bundle)
    (w / "userfolder").mkdir()
    (w / "userfolder" / "notes.txt").write_text("mine")
    os.mkfifo(w / "fifo.txt")


def _texts(w: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(SENTENCES, 3)) for _ in range(200)]
    (w / "passages.txt").write_text("\n".join(lines) + "\n")
    (w / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin1") * 50)
    (w / "empty.txt").write_text("")
    (w / "two-lines.txt").write_text("The fox jumps.\nThe cat walks.\n")


def _teachers(w: Path) -> None:
    base = tiny_llama_folder(w / "teachers" / "base", layers=2)

    def teacher(name: str, change: Callable[[Path], None]) -> None:
        folder = w / "teachers" / name
        shutil.copytree(base, folder)
        change(folder)

    def config(**changes) -> Callable[[Path], None]:
        def change(folder: Path) -> None:
            data = json.loads((folder / "config.json").read_text())
            for key, value in changes.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            (folder / "config.json").write_text(json.dumps(data))
        return change

    def write(name: str, content: str | bytes) -> Callable[[Path], None]:
        def change(folder: Path) -> None:
            (folder / name).unlink(missing_ok=True)
            if isinstance(content, bytes):
                (folder / name).write_bytes(content)
            else:
                (folder / name).write_text(content)
        return change

    def fifo(name: str) -> Callable[[Path], None]:
        def change(folder: Path) -> None:
            (folder / name).unlink()
            os.mkfifo(folder / name)
        return change

    teacher("no-config", lambda f: (f / "config.json").unlink())
    teacher("no-tokenizer", lambda f: (f / "tokenizer.json").unlink())
    teacher("config-not-json", write("config.json", "{model_type: llama"))
    teacher("config-array", write("config.json", "[1, 2, 3]"))
    teacher("config-deep", write("config.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"))
    # 17 MB of small values: under the 256 MB JSON bound, but Python's json would hold it at 50-100x.
    teacher("config-huge", write("config.json", '{"model_type": "llama", "pad": [' + "0," * 8_500_000 + "0]}"))
    teacher("config-fifo", fifo("config.json"))
    teacher("auto-map", config(auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}))
    teacher("tokenizer-config-auto-map", write("tokenizer_config.json", json.dumps({"auto_map": {"AutoTokenizer": "x.Y"}})))
    teacher("tokenizer-config-huge", write("tokenizer_config.json", '{"pad": "' + "x" * (17 * 1024**2) + '"}'))
    teacher("not-causal", config(architectures=["LlamaModel"]))
    teacher("bert", config(model_type="bert", architectures=["BertForMaskedLM"]))
    teacher("unknown-architecture", config(model_type="mamba", architectures=["MambaForCausalLM"]))
    teacher("no-model-type", config(model_type=None))
    teacher("layers-string", config(num_hidden_layers="two"))
    teacher("vocab-zero", config(vocab_size=0))
    teacher("no-eos", config(eos_token_id=None))
    teacher("eos-string", config(eos_token_id="</s>"))
    teacher("eos-beyond-vocabulary", config(eos_token_id=5000))
    teacher("tokenizer-beyond-vocabulary", config(vocab_size=200))  # the tokenizer has 300 tokens
    teacher("tokenizer-not-json", write("tokenizer.json", "not json"))
    teacher("tokenizer-truncated", lambda f: (f / "tokenizer.json").write_text((f / "tokenizer.json").read_text()[:500]))
    teacher("tokenizer-fifo", fifo("tokenizer.json"))
    teacher("tokenizer-huge", write("tokenizer.json", " " * (65 * 1024**2)))
    teacher("generation-config-not-json", write("generation_config.json", "{eos: 2"))
    teacher("chat-template-number", write("tokenizer_config.json", json.dumps({"chat_template": 5})))
    teacher("chat-template-list-of-numbers", write("tokenizer_config.json", json.dumps({"chat_template": [1, 2]})))
    teacher("weights-not-safetensors", write("model.safetensors", b"\x00" * 64))

    def nan_weights(folder: Path) -> None:
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        name = sorted(tensors)[0]
        tensors[name] = np.full_like(tensors[name], np.nan)
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})

    teacher("nan-weights", nan_weights)
    (w / "teachers" / "a-file").write_text("not a folder")


def _gguf_files(w: Path) -> None:
    """Files named .gguf that are not one gguf can read, headers crafted to claim too much."""
    folder = w / "gguf"
    folder.mkdir()
    (folder / "text.gguf").write_text("not a gguf file")
    (folder / "empty.gguf").write_bytes(b"")
    (folder / "magic-only.gguf").write_bytes(b"GGUF")
    header = b"GGUF" + struct.pack("<I", 3)
    (folder / "version-99.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 99, 0, 0))
    (folder / "billions-of-tensors.gguf").write_bytes(header + struct.pack("<QQ", 2**40, 0))
    (folder / "billions-of-keys.gguf").write_bytes(header + struct.pack("<QQ", 0, 2**40))
    # One key whose name claims 2^62 bytes.
    (folder / "huge-key-name.gguf").write_bytes(header + struct.pack("<QQQ", 0, 1, 2**62) + b"general.name")
    # A string array claiming 2^40 entries.
    (folder / "huge-array.gguf").write_bytes(header + struct.pack("<QQQ", 0, 1, 12) + b"general.tags"
                                             + struct.pack("<IIQ", 9, 8, 2**40))
    os.mkfifo(folder / "fifo.gguf")


# ---- the generator bundle and its damaged copies ---------------------------------------------------


def _generator_bundles(w: Path, good: Path) -> None:
    from edge_distill.hashing import sha256

    def variant(name: str, change: Callable[[dict, Path], None]) -> None:
        folder = w / "gen" / name
        shutil.copytree(good, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest, folder)
        for file in manifest["files"]:  # vouched for again: only the kind's own checks may refuse it
            if (folder / file).is_file() and not (folder / file).is_symlink():
                manifest["files"][file] = {"sha256": sha256(folder / file), "size_bytes": (folder / file).stat().st_size}
        manifest["model"]["sha256"] = manifest["files"]["model.onnx"]["sha256"]
        (folder / "manifest.json").write_text(json.dumps(manifest))

    def settings(**changes) -> Callable[[dict, Path], None]:
        def change(manifest: dict, folder: Path) -> None:
            data = json.loads((folder / "generation.json").read_text())
            data.update(changes)
            (folder / "generation.json").write_text(json.dumps(data))
        return change

    def both(**changes) -> Callable[[dict, Path], None]:  # generation.json and the manifest, agreeing
        def change(manifest: dict, folder: Path) -> None:
            settings(**changes)(manifest, folder)
            manifest["generation"].update(changes)
        return change

    def file(name: str, content: str | bytes) -> Callable[[dict, Path], None]:
        def change(manifest: dict, folder: Path) -> None:
            (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        return change

    def golden(edit: Callable[[dict], None], **manifest_golden) -> Callable[[dict, Path], None]:
        def change(manifest: dict, folder: Path) -> None:
            with np.load(folder / "golden.npz") as f:
                arrays = {k: f[k].copy() for k in f.files}
            edit(arrays)
            np.savez(folder / "golden.npz", **arrays)
            (folder / "golden.json").write_text(json.dumps({k: a.tolist() for k, a in arrays.items()}))
            manifest["golden"].update(manifest_golden)
        return change

    def other_tokenizer(size: int, sentences: list[str]) -> Callable[[dict, Path], None]:
        def change(manifest: dict, folder: Path) -> None:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

            tokenizer = Tokenizer(models.BPE())
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=["<unk>", "<s>", "</s>"],
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
            tokenizer.train_from_iterator(sentences, trainer)
            tokenizer.save(str(folder / "tokenizer.json"))
        return change

    def failing_tokenizer(manifest: dict, folder: Path) -> None:
        from tokenizers import Tokenizer, models

        Tokenizer(models.WordLevel({"hello": 0})).save(str(folder / "tokenizer.json"))  # no unk: every word fails

    text = (good / "tokenizer.json").read_text()
    variant("good-copy", lambda m, f: None)
    variant("tokenizer-truncated", file("tokenizer.json", text[: len(text) // 2]))
    variant("tokenizer-not-json", file("tokenizer.json", "not json"))
    variant("tokenizer-deep", file("tokenizer.json", '{"a": ' + "[" * 5000 + "]" * 5000 + "}"))
    variant("tokenizer-huge", file("tokenizer.json", " " * (65 * 1024**2)))
    variant("tokenizer-fails-on-every-input", failing_tokenizer)
    variant("tokenizer-of-other-text", other_tokenizer(300, [s.upper() for s in SENTENCES]))
    variant("tokenizer-bigger-than-model", other_tokenizer(600, SENTENCES + [s[::-1] for s in SENTENCES]))
    variant("eos-beyond-vocabulary", both(eos_token_ids=[5000]))
    variant("eos-disagrees", settings(eos_token_ids=[1]))
    variant("max-length-disagrees", settings(max_length=999))
    variant("max-length-string", settings(max_length="32"))
    variant("eos-empty", both(eos_token_ids=[]))
    variant("temperature-nan", settings(sampling={"temperature": float("nan"), "top_k": 50, "top_p": 0.9}))
    variant("top-p-above-one", settings(sampling={"temperature": 0.7, "top_k": 50, "top_p": 2.0}))
    variant("top-k-negative", settings(sampling={"temperature": 0.7, "top_k": -1, "top_p": 0.9}))
    variant("chat-template-number", settings(chat_template=42))
    variant("chat-template-named-list", settings(chat_template=[{"name": "tool_use", "template": "{{ 'x' }}"}]))
    variant("chat-template-repeat", settings(chat_template="{{ 'A' * 1000000000 }}"))
    variant("chat-template-escape", settings(chat_template="{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    variant("chat-template-long-output", settings(chat_template="{% for i in range(100000) %}{{ 'x' * 99 }}{% endfor %}"))
    variant("settings-not-json", file("generation.json", "{eos: 2"))
    variant("settings-array", file("generation.json", "[2]"))
    variant("settings-deep", file("generation.json", '{"a": ' + "[" * 200_000 + "]" * 200_000 + "}"))
    variant("settings-huge", file("generation.json", '{"pad": "' + "x" * (5 * 1024**2) + '"}'))
    variant("settings-outside", lambda m, f: m["generation"].update(settings="../../passages.txt"))
    variant("settings-unlisted", lambda m, f: (m["files"].pop("generation.json"), (f / "generation.json").unlink()))
    variant("golden-count-disagrees", golden(lambda a: None, count=5))
    variant("golden-prompts-missing", lambda m, f: m["golden"].pop("prompts"))
    variant("golden-prompts-fewer", lambda m, f: m["golden"].update(prompts=m["golden"]["prompts"][:2]))
    variant("golden-ids-negative", golden(lambda a: a["prompt_ids"].__setitem__((0, 0), -5)))
    variant("golden-ids-beyond-vocabulary", golden(lambda a: a["greedy_ids"].__setitem__((0, 0), 999)))
    variant("golden-lengths-beyond", golden(lambda a: a["prompt_lengths"].__setitem__(0, 500)))
    variant("manifest-vocabulary-disagrees", lambda m, f: m["outputs"][0].update(shape=["batch", "sequence", 400]))

    def model_of_other_vocabulary(manifest: dict, folder: Path) -> None:
        """A decoder of 320 tokens where the tokenizer and the manifest say 300: the shipped one with
        its ids spread over 320 (the graph edit a cut-vocabulary student gets)."""
        import onnx

        from edge_distill.lm.export import cut_vocabulary

        model = onnx.load(str(folder / "model.onnx"))
        for node in model.graph.node:  # its own vocabulary edit renamed, to take a second one
            node.name = node.name.replace("vocabulary/", "first/")
            node.input[:] = [name.replace("vocabulary/", "first/") for name in node.input]
            node.output[:] = [name.replace("vocabulary/", "first/") for name in node.output]
        for weight in model.graph.initializer:
            weight.name = weight.name.replace("vocabulary.", "first.")
        for node in model.graph.node:
            node.input[:] = [name.replace("vocabulary.", "first.") for name in node.input]
        cut_vocabulary(model, np.arange(299), 320)
        onnx.save(model, str(folder / "model.onnx"))

    variant("model-of-other-vocabulary", model_of_other_vocabulary)
