"""`edge-distill text`: a transformer distilled into a small int8 ONNX model with its tokenizer,
judged on held-out text, and shipped as a bundle `verify` checks. Two tasks:

- embedding: a sentence-embedding teacher; the student reproduces its embeddings of unlabeled
  text; judged on a held-out retrieval task.
- classification: a teacher with a classification head (one is fine-tuned here first when the
  folder has none); the student learns its logits on labeled and unlabeled text; judged by
  accuracy and agreement with the teacher on held-out labeled text.

Its stages (pipeline/stages/text.py, which also assembles and runs them) run on the one runner, so a
rebuild with nothing changed reads them all from the cache; its settings are in text/settings.py.
What each stage calls is here:

  text-classifier  teacher/..., fine_tune.json      fine_tune_teacher (classification, a folder without a head)
  text-teacher     teacher_outputs.npy              teacher_outputs
  text-student     student_fp32.onnx, model.onnx,   make_student (made from the teacher, distilled, exported,
                   tokenizer.json, student.json       int8, judged and timed)
  text-package     the bundle's files               write_text_bundle
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.text.distill import TextTrainingSettings
from edge_distill.text.settings import GOLDEN_COUNT, INT8, TextBuildSettings, TextData

def text_data(settings: TextBuildSettings, folder: Path) -> tuple[TextData, Any]:
    """(what the student trains on and is judged by, the labeled task a teacher without a
    classification head is fine-tuned on first, or None)."""
    if settings.task != "classification":
        return _embedding_data(settings), None
    return _classification_data(folder, settings)


def _embedding_data(settings: TextBuildSettings) -> TextData:
    """The corpus's training text; judged on its held-out retrieval task, or where it makes none
    (passages of one sentence) on the held-out text's cosine to the teacher."""
    from edge_distill.text.corpus import default_corpus, read_passages, retrieval_pairs, split_passages, training_texts

    corpus = default_corpus() if settings.text is None else split_passages(read_passages(settings.text), str(settings.text))
    texts = training_texts(corpus)
    queries, documents = retrieval_pairs(corpus.test)
    held_out = queries + documents or corpus.test or texts[:64]  # a task, else held-out text, else some
    return TextData(corpus.source, texts, held_out, (queries or held_out)[:GOLDEN_COUNT], queries=len(queries))


def _classification_data(folder: Path, settings: TextBuildSettings) -> tuple[TextData, Any]:
    """The labeled training text and the unlabeled text (labels -1), judged on the held-out labeled
    text, classes in the teacher's order; and the task to fine-tune on where the folder has no
    classification head (the fine-tuned teacher numbers the classes in the task's order)."""
    from edge_distill.data.dataset import UNLABELED
    from edge_distill.errors import DataError
    from edge_distill.text.corpus import read_passages
    from edge_distill.text.labeled import default_labeled_task, in_teacher_order, labeled_from_file
    from edge_distill.text.teacher import has_classification_head, teacher_labels

    unlabeled = None if settings.text is None else read_passages(settings.text)
    task = default_labeled_task(unlabeled) if settings.labeled is None else labeled_from_file(settings.labeled, unlabeled or [])
    if not (task.test or task.val):
        raise DataError(f"{task.source}: no example was held out (a tenth goes to test by a hash of its text)",
                        "give more labeled examples: a few dozen at least")
    fine_tune_on = None if has_classification_head(folder) else task
    if fine_tune_on is None:
        task = in_teacher_order(task, teacher_labels(folder), folder)
    held_out = task.test or task.val
    texts = [text for text, _ in task.train] + task.unlabeled
    labels = [label for _, label in task.train] + [UNLABELED] * len(task.unlabeled)
    source = task.source + (f" (+ {len(task.unlabeled)} unlabeled texts)" if task.unlabeled else "")
    return TextData(source, texts, [text for text, _ in held_out], [text for text, _ in held_out][:GOLDEN_COUNT],
                    labels=labels, held_out_labels=[label for _, label in held_out], names=task.names), fine_tune_on


def fine_tune_teacher(folder: Path, max_length: int, training: TextTrainingSettings, task, staged: Path,
                       progress) -> None:
    """An encoder with a new classification head, fine-tuned on the labeled training text and saved
    as a model folder (teacher/), with its held-out accuracy (fine_tune.json)."""
    import shutil

    import torch

    from edge_distill.text.distill import fine_tune
    from edge_distill.text.teacher import load_teacher, text_outputs

    torch.set_num_threads(training.threads)
    torch.manual_seed(training.seed)  # the new head's initial weights
    teacher = load_teacher(folder, max_length, new_labels=task.names)
    progress(f"fine-tuning {folder} ({teacher.parameters:,} parameters) with a new head on {len(task.train)} "
             f"labeled texts, {len(task.names)} classes")
    report = fine_tune(teacher.model, teacher.tokenizer, [text for text, _ in task.train],
                       np.array([label for _, label in task.train], np.int64), training, progress)
    accuracy = {}
    for name, part in (("val", task.val), ("test", task.test)):
        if part:
            logits = text_outputs(teacher.model, teacher.tokenizer, None, [text for text, _ in part])
            accuracy[name] = float(np.mean(logits.argmax(1) == np.array([label for _, label in part])))
    progress(f"fine-tuned teacher: held-out accuracy {accuracy}")
    teacher.model.save_pretrained(str(staged / "teacher"))
    shutil.copy(folder / "tokenizer.json", staged / "teacher" / "tokenizer.json")
    (staged / "fine_tune.json").write_text(json.dumps({"from": str(folder), "training": report,
                                                       "accuracy": accuracy}, indent=2))


def teacher_outputs(folder: Path, settings: TextBuildSettings, texts: list[str], staged: Path, progress) -> None:
    import torch

    from edge_distill.text.teacher import load_teacher, text_outputs

    torch.set_num_threads(settings.distill.threads)
    classifier = settings.task == "classification"
    teacher = load_teacher(folder, settings.max_length, classifier=classifier)
    progress(f"running the teacher ({teacher.parameters:,} parameters) on {len(texts)} texts")
    np.save(staged / "teacher_outputs.npy", text_outputs(teacher.model, teacher.tokenizer,
                                                         None if classifier else teacher.pooling, texts, progress=progress))


def make_student(folder: Path, settings: TextBuildSettings, data: TextData, targets: Path, staged: Path,
             progress) -> None:
    """Make, distill, export, quantize (dynamic int8) and judge the student; write STUDENT_FILES."""
    import torch
    from edge_distill.bundle.reader import read_tokenizer
    from edge_distill.device.runner import compare_latency
    from edge_distill.pipeline.staging import staging_folder
    from edge_distill.text.distill import distill_embeddings, distill_logits
    from edge_distill.text.export import check_text_parity, export_text_encoder
    from edge_distill.export.quantize import apply_recipe
    from edge_distill.text.student import StudentShape, student_from_teacher
    from edge_distill.text.teacher import load_teacher

    torch.set_num_threads(settings.distill.threads)
    classifier = settings.task == "classification"
    teacher = load_teacher(folder, settings.max_length, classifier=classifier)
    pooling = None if classifier else teacher.pooling  # a classifier's output is its logits
    student, tokenizer_json, report = student_from_teacher(
        teacher, data.texts, StudentShape(settings.layers, settings.min_token_count, settings.student_rank(teacher.model.config.hidden_size)))
    progress(f"student: layers {report['layers_from_teacher']} of the teacher's, vocabulary {report['vocabulary']:,} "
             f"of {report['teacher_vocabulary']:,}, {report['parameters']:,} parameters "
             f"({report['teacher_parameters'] / report['parameters']:.1f}x fewer)")
    (staged / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    tokenizer = read_tokenizer(staged / "tokenizer.json", settings.max_length)
    if classifier:
        training = distill_logits(student, tokenizer, data.texts, np.load(targets), np.array(data.labels, np.int64),
                                  settings.distill, progress)
    else:
        training = distill_embeddings(student, tokenizer, pooling, data.texts, np.load(targets), settings.distill,
                                      progress)
    with staging_folder(staged, ".scratch-") as tmp:  # the teacher's ONNX file is not part of the entry
        teacher_onnx = tmp / "teacher_fp32.onnx"
        export_text_encoder(teacher.model, pooling, teacher.tokenizer, teacher_onnx)
        export_text_encoder(student, pooling, tokenizer, staged / "student_fp32.onnx")
        parity = check_text_parity(student, pooling, tokenizer, staged / "student_fp32.onnx", data.held_out[:8])
        quantization = apply_recipe(INT8, staged / "student_fp32.onnx", staged / "student_int8.onnx")
        models = {"teacher_fp32": teacher_onnx, "student_fp32": staged / "student_fp32.onnx",
                  "student_int8": staged / "student_int8.onnx"}
        progress(f"judging on {len(data.held_out)} held-out texts")
        # Each model as an app runs it: ONNX Runtime, one text at a time, its own tokenizer.
        outputs = {name: onnx_outputs(path, teacher.tokenizer if name == "teacher_fp32" else tokenizer, data.held_out,
                                      settings.distill.threads) for name, path in models.items()}
        quality = {name: _quality(data, values, outputs["teacher_fp32"]) for name, values in outputs.items()}
        sizes = {name: path.stat().st_size for name, path in models.items()}
        latency = {}
        for length in settings.lengths:
            progress(f"timing teacher and student side by side at length {length}")
            # The student's ids are valid for the teacher too: its vocabulary holds them.
            feed = length_feed(tokenizer, " ".join(data.held_out[:8]), length)
            timed = compare_latency(models, feed, ["CPUExecutionProvider"], settings.distill.threads,
                                    settings.benchmark_seconds)
            latency[str(length)] = {name: timed[name].get("p50", timed[name].get("error")) for name in models}
    (staged / "student.json").write_text(json.dumps({
        "student": report, "training": training, "parity_max_abs_diff": parity, "quality": quality,
        "size_bytes": sizes, "p50_ms": latency, "threads": settings.distill.threads, "quantization": quantization,
        "pooling": None if pooling is None else dataclasses.asdict(pooling), "max_length": settings.max_length,
        "teacher": {"folder": str(folder), "parameters": teacher.parameters,
                    "model_type": teacher.model.config.model_type}}, indent=2))


def _quality(data: TextData, outputs: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """Classification: accuracy and agreement with the teacher's class. Embedding: retrieval
    scores where there is a task, and the mean cosine to the teacher's embeddings."""
    from edge_distill.text.retrieval import mean_cosine, retrieval_scores

    if data.names is not None:
        return {"accuracy": float(np.mean(outputs.argmax(1) == np.array(data.held_out_labels))),
                "teacher_agreement": float(np.mean(outputs.argmax(1) == teacher.argmax(1))),
                "examples": len(outputs)}
    retrieval = (retrieval_scores(outputs[: data.queries], outputs[data.queries:]) if data.queries
                 else {"queries": 0})
    return {**retrieval, "cosine_to_teacher": mean_cosine(outputs, teacher)}


def onnx_outputs(path: Path, tokenizer, texts: list[str], threads: int) -> np.ndarray:
    """The model's output (embeddings or logits) by ONNX Runtime, one text at a time and unpadded,
    as an app runs it."""
    from edge_distill.sessions import open_session
    from edge_distill.text.teacher import batch_ids

    session = open_session(path, threads=threads)
    rows = []
    for text in texts:
        ids, mask = batch_ids(tokenizer, [text])
        rows.append(session.run(None, {"input_ids": ids, "attention_mask": mask})[0][0])
    return np.stack(rows)


def length_feed(tokenizer, text: str, length: int) -> dict[str, np.ndarray]:
    """One text's ids cut or repeated to exactly `length` tokens, batch 1."""
    from edge_distill.text.teacher import batch_ids

    ids, _ = batch_ids(tokenizer, [text])
    ids = np.resize(ids[0], length)[None].astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

