"""`edge-distill text --task classification` on the tiny models: a teacher fine-tuned here from an
encoder (cached), or one with its own head; a bundle verify passes; labeled-data errors."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from edge_distill.bundle.verify import verify_bundle
from edge_distill.errors import DataError
from edge_distill.text.labeled import LabeledTexts, in_teacher_order, read_labeled
from tests.test_cli import invoke
from tests.text.conftest import SENTENCES
from tests.text.test_build import NODE_DIR, needs_node_tokenizers

CLASSES = {"io": [1, 6, 7], "text": [0, 2, 3, 5], "threads": [9, 10]}  # indices into SENTENCES


def labeled_file(folder, names=("io", "text", "threads"), count=90):
    """`count` examples: a sentence of the class, then a sentence of any, as JSON lines."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        name = names[i % len(names)]
        own = SENTENCES[rng.choice(list(CLASSES.values())[i % len(names)])]
        rows.append({"text": f"{own} {rng.choice(SENTENCES)} ({i})", "label": name})
    (folder / "labeled.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return folder / "labeled.jsonl"


def args(teacher, folder, *more):
    return ["text", "--task", "classification", "--teacher-folder", str(teacher), "--labeled", str(labeled_file(folder)),
            "--epochs", "1", "--max-length", "32", "--cache-dir", str(folder / "cache"), "--out", str(folder / "b"), *more]


@pytest.fixture(scope="module")
def fine_tuned(tiny_bert, tmp_path_factory):
    """(the build's folder, its result): the tiny encoder fine-tuned, then distilled; one build for the module."""
    folder = tmp_path_factory.mktemp("classification")
    result = invoke(*args(tiny_bert, folder, "--layers", "1", "--embedding-rank", "8"), "--json")
    assert result.exit_code == 0, result.output
    return folder, result


@pytest.mark.slow  # fine-tunes a teacher, then distils and exports a student
def test_an_encoder_is_fine_tuned_then_distilled_into_a_verified_classifier_bundle(tiny_bert, fine_tuned):
    tmp_path, result = fine_tuned
    manifest = json.loads(result.stdout)
    assert manifest["task"] == "text-classification" and manifest["labels"] == ["io", "text", "threads"]
    assert [o["name"] for o in manifest["outputs"]] == ["logits"] and "pooling" not in manifest["text"]
    assert manifest["model"]["embedding_rank"] == 8 and manifest["model"]["layers_from_teacher"] == [3]
    quality = manifest["metrics"]["quality"]
    assert set(quality) == {"teacher_fp32", "student_fp32", "student_int8"}
    assert quality["teacher_fp32"]["teacher_agreement"] == 1.0 and quality["teacher_fp32"]["examples"] > 0
    assert all(0 <= q["accuracy"] <= 1 for q in quality.values())
    checks = {c.name: c for c in verify_bundle(tmp_path / "b")}
    assert all(c.passed for c in checks.values()) and "golden tokenization" in checks
    assert "fine-tuning" in result.stderr
    again = invoke(*args(tiny_bert, tmp_path, "--layers", "1", "--embedding-rank", "8"))
    # The fine-tuned teacher, its logits and the student, all read back.
    assert again.exit_code == 0 and "plan: all 7 stage(s) cached" in again.stderr and "fine-tuning" not in again.stderr
    assert "x fewer than the teacher's" in again.stdout


@pytest.mark.node
@needs_node_tokenizers
def test_a_javascript_app_gets_the_golden_logits(fine_tuned):
    done = subprocess.run(["node", str(NODE_DIR / "check_text_golden.mjs"), str(fine_tuned[0] / "b")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["idsMatch"] == 8


@pytest.mark.slow  # a second classification build
def test_a_teacher_with_its_own_head_is_distilled_without_fine_tuning(tiny_classifier, tmp_path):
    result = invoke(*args(tiny_classifier, tmp_path, "--layers", "2"), "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert "fine-tuning" not in result.stderr and manifest["labels"] == ["io", "text", "threads"]
    assert manifest["model"]["embedding_rank"] is None  # the default 128 is past the tiny teacher's hidden size (32)


def test_training_and_held_out_labels_are_in_the_teachers_order(tiny_classifier, tmp_path):
    """The tiny classifier's classes are io, text, threads; a teacher listing them in another order
    gets every label, held out ones included, renumbered to its own."""
    from edge_distill.text.build import text_data
    from edge_distill.text.settings import TextBuildSettings

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_classifier, teacher)
    config = json.loads((teacher / "config.json").read_text())
    config["id2label"] = {"0": "threads", "1": "io", "2": "text"}
    (teacher / "config.json").write_text(json.dumps(config))
    path = labeled_file(tmp_path)
    name_of = {json.loads(line)["text"]: json.loads(line)["label"] for line in path.read_text().splitlines()}
    settings = TextBuildSettings(task="classification", teacher_folder=teacher, labeled=path, max_length=32)
    data, fine_tune_on = text_data(settings, teacher)
    assert fine_tune_on is None and data.names == ["threads", "io", "text"]
    assert [data.names[label] for label in data.held_out_labels] == [name_of[text] for text in data.held_out]
    labeled = [(text, label) for text, label in zip(data.texts, data.labels) if label >= 0]
    assert labeled and all(data.names[label] == name_of[text] for text, label in labeled)


def test_labels_follow_the_teachers_order_and_a_mismatch_is_one_line(tiny_classifier, tmp_path):
    task = LabeledTexts("data", ["io", "text", "threads"], [("a", 0), ("b", 2)], [], [("c", 1)], [])
    reordered = in_teacher_order(task, {0: "threads", 1: "io", 2: "text"}, tmp_path)
    assert reordered.names == ["threads", "io", "text"] and reordered.train == [("a", 1), ("b", 0)]
    assert in_teacher_order(task, {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, tmp_path) is task
    with pytest.raises(DataError, match="has 2 labels .*; data has 3"):
        in_teacher_order(task, {0: "io", 1: "text"}, tmp_path)
    with pytest.raises(DataError, match="label.s. threads are not among"):
        in_teacher_order(task, {0: "io", 1: "text", 2: "sockets"}, tmp_path)
    result = invoke("text", "--task", "classification", "--teacher-folder", str(tiny_classifier), "--labeled",
                    str(labeled_file(tmp_path, names=("io", "text"))), "--out", str(tmp_path / "b"),
                    "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code != 0 and "has 3 labels (io, text, threads)" in result.output and "has 2 (io, text)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "b").exists()


@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "label": "x"}\nnot json\n', r":2: not valid JSON"),
    ('{"label": "x"}\n', r":1: no non-empty string 'text'"),
    ('{"text": "a", "label": [1]}\n', r":1: 'label' \[1\] is not a class name or an integer"),
    ('{"text": "a", "label": "x"}\n', r"1 example\(s\); at least 10"),
    ("".join(f'{{"text": "t{i}", "label": "same"}}\n' for i in range(12)), "every example has the label 'same'"),
])
def test_bad_labeled_text_is_one_line_naming_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_labeled(path)


def test_labeled_text_that_is_not_utf8_or_not_a_file_is_one_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "caf\u00e9", "label": "x"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.jsonl: not UTF-8 \(byte 13"):
        read_labeled(path)
    with pytest.raises(DataError, match="a folder"):
        read_labeled(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        read_labeled(tmp_path / "nope.jsonl")


def test_labeled_text_is_for_the_classification_task(tiny_bert, tmp_path):
    result = invoke("text", "--teacher-folder", str(tiny_bert), "--labeled", str(labeled_file(tmp_path)),
                    "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code != 0 and "add --task classification" in result.output and "Traceback" not in result.output
