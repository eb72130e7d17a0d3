"""`edge-distill text`: a transformer distilled into a small ONNX model with its tokenizer (int8
where measured faster than float within the quality budget), judged on held-out text, and shipped
as a bundle `verify` checks. Two tasks:

- embedding: a sentence-embedding teacher; the student reproduces its embeddings of unlabeled
  text; judged on a held-out retrieval task.
- classification: a teacher with a classification head (one is fine-tuned here first when the
  folder has none); the student learns its logits on labeled and unlabeled text; judged by
  accuracy and agreement with the teacher on held-out labeled text.

Its stages (pipeline/stages/text.py, which also assembles and runs them) run on the one runner, so a
rebuild with nothing changed reads them all from the cache; its settings are in text/settings.py.
What each stage calls is here:

  text-classifier      teacher/..., fine_tune.json     fine_tune_teacher (classification, a folder
                                                       without a head)
  text-teacher         teacher_outputs.npy             teacher_outputs
  text-teacher-export  teacher_fp32.onnx               export_teacher
  text-student         student_fp32.onnx,              make_student (made from the teacher, distilled,
                       tokenizer.json, student.json    exported)
  text-quantize        student_int8.onnx, judged.json  quantize_and_judge (the int8 recipe; teacher,
                                                       float and int8 judged on held-out text)
  text-benchmark       timing.json                     time_and_choose (float or int8, and the threads,
                                                       by export/selection.choose; each length timed)
  text-package         the bundle's files              write_text_bundle (text/bundle.py)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.bundle.kinds.io import GOLDEN_COUNT
from edge_distill.text.distill import TextTrainingSettings
from edge_distill.text.settings import INT8, TextBuildSettings, TextData

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

    from edge_distill.distill.distributed import training_device

    torch.set_num_threads(settings.distill.threads)
    classifier = settings.task == "classification"
    teacher = load_teacher(folder, settings.max_length, classifier=classifier)
    teacher.model.to(training_device())  # a GPU where there is one
    progress(f"running the teacher ({teacher.parameters:,} parameters) on {len(texts)} texts")
    np.save(staged / "teacher_outputs.npy", text_outputs(teacher.model, teacher.tokenizer,
                                                         None if classifier else teacher.pooling, texts, progress=progress))


def export_teacher(folder: Path, settings: TextBuildSettings, staged: Path, progress) -> None:
    """The teacher as ONNX (teacher_fp32.onnx): what the student is judged and timed against."""
    import torch

    from edge_distill.text.export import export_text_encoder
    from edge_distill.text.teacher import load_teacher

    torch.set_num_threads(settings.distill.threads)
    classifier = settings.task == "classification"
    teacher = load_teacher(folder, settings.max_length, classifier=classifier)
    progress(f"exporting the teacher ({teacher.parameters:,} parameters) to ONNX")
    export_text_encoder(teacher.model, None if classifier else teacher.pooling, teacher.tokenizer,
                        staged / "teacher_fp32.onnx")


def make_student(folder: Path, settings: TextBuildSettings, data: TextData, targets: Path, staged: Path,
                 progress, writer: bool = True) -> None:
    """Make, distill and export the student, checked against PyTorch; write STUDENT_FILES. Under
    torchrun every process makes and trains it (the same weights, DistributedDataParallel) and the
    `writer` exports and writes."""
    import torch

    from edge_distill.bundle.reader import read_tokenizer
    from edge_distill.text.distill import distill_embeddings, distill_logits
    from edge_distill.text.export import check_text_parity, export_text_encoder
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
    if not writer:
        return
    export_text_encoder(student, pooling, tokenizer, staged / "student_fp32.onnx")
    parity = check_text_parity(student, pooling, tokenizer, staged / "student_fp32.onnx", data.held_out[:8])
    (staged / "student.json").write_text(json.dumps({
        "student": report, "training": training, "parity_max_abs_diff": parity,
        "pooling": None if pooling is None else dataclasses.asdict(pooling), "max_length": settings.max_length,
        "teacher": {"folder": str(folder), "parameters": teacher.parameters,
                    "model_type": teacher.model.config.model_type}}, indent=2))


def make_student_worker(spec: dict, progress, writer: bool) -> None:
    """One torchrun worker of text-student (distill/distributed.WORKERS["text-student"]): the
    settings that make the student, the node's threads shared among its processes."""
    from edge_distill.distill.distributed import threads_per_process
    from edge_distill.text.distill import TextTrainingSettings

    training = TextTrainingSettings(**spec["distill"])
    share = threads_per_process(training.threads)
    settings = TextBuildSettings(**spec["settings"], distill=dataclasses.replace(training, threads=share), threads=share)
    make_student(Path(spec["teacher"]), settings, TextData(**spec["data"]), Path(spec["targets"]), Path(spec["out"]),
                 progress, writer)


def quantize_and_judge(folder: Path, settings: TextBuildSettings, data: TextData, inputs: dict[str, Path],
                       staged: Path, progress) -> None:
    """The int8 student by the text recipe (its quantized nodes counted), and teacher, float and
    int8 judged on the held-out text as an app runs them (ONNX Runtime, one text at a time, each its
    own tokenizer); judged.json holds the figures and whether int8 keeps the float student's within
    settings.max_quality_drop points."""
    from edge_distill.bundle.reader import cut_at, read_tokenizer
    from edge_distill.export.quantize import apply_recipe
    from edge_distill.text.teacher import check_teacher_folder

    quantization = apply_recipe(INT8, inputs["student_fp32.onnx"], staged / "student_int8.onnx")
    models = {"teacher_fp32": inputs["teacher_fp32.onnx"], "student_fp32": inputs["student_fp32.onnx"],
              "student_int8": staged / "student_int8.onnx"}
    tokenizers = {"teacher_fp32": cut_at(check_teacher_folder(folder)[1], settings.max_length),
                  "student": read_tokenizer(inputs["tokenizer.json"], settings.max_length)}
    progress(f"judging teacher, float and int8 student on {len(data.held_out)} held-out texts")
    outputs = {name: onnx_outputs(path, tokenizers.get(name, tokenizers["student"]), data.held_out,
                                  settings.distill.threads) for name, path in models.items()}
    quality = {name: _quality(data, values, outputs["teacher_fp32"]) for name, values in outputs.items()}
    judgement = int8_judgement(quality, settings.max_quality_drop)
    progress(f"int8: {judgement.summary}")
    (staged / "judged.json").write_text(json.dumps({
        "quantization": quantization, "quality": quality,
        "size_bytes": {name: path.stat().st_size for name, path in models.items()},
        "judgement": {"ok": judgement.ok, "score": judgement.score, "summary": judgement.summary}}, indent=2))


def int8_judgement(quality: dict[str, dict[str, float]], max_drop: float):
    """export/budget.Judgement of the int8 student against the float one, on the task's figure
    (text/bundle.quality_figure), in points: within `max_drop` or not."""
    from edge_distill.export.budget import Judgement
    from edge_distill.text.bundle import quality_figure

    measure, float_figure = quality_figure(quality["student_fp32"])
    int8_figure = quality_figure(quality["student_int8"])[1]
    drop = 100.0 * (float_figure - int8_figure)
    ok = drop <= max_drop
    return Judgement(ok, -drop, f"{measure} {int8_figure:.4f} vs float {float_figure:.4f}, {drop:+.2f} points lost "
                                f"({'within' if ok else 'over'} the {max_drop:g}-point budget)", {}, None)


def time_and_choose(settings: TextBuildSettings, data: TextData, inputs: dict[str, Path], staged: Path,
                    progress) -> None:
    """What ships and at how many threads, by the rule `build` and `optimize` ship by
    (export/selection: float and int8 timed side by side at 1, 2, 4, ... threads at the longest
    sequence length, on the device over SSH or here, then `choose`); then teacher and student timed
    side by side at each sequence length at that thread count (timing.json). Where nothing can
    measure for the device (another architecture, no device.host), the table is timed at the
    profile's threads (at most this host's cores) and `choose` reads its rows, for the record."""
    from edge_distill.bundle.reader import read_tokenizer
    from edge_distill.export.budget import Judgement
    from edge_distill.export.selection import choose, time_candidates
    from edge_distill.measure.harness import provider_specs
    from edge_distill.sessions import onnxruntime_errors
    from edge_distill.targets.remote import device_target, time_side_by_side

    tokenizer = read_tokenizer(inputs["tokenizer.json"], settings.max_length)
    text = " ".join(data.held_out[:8])
    bench, device = settings.benchmark, settings.device
    judged = json.loads(inputs["judged.json"].read_text())["judgement"]
    judgement = Judgement(judged["ok"], judged["score"], judged["summary"], {}, None)
    # The student's ids are valid for the teacher too: its vocabulary holds them.
    feeds = {length: length_feed(tokenizer, text, length) for length in settings.lengths}
    candidates = {"fp32": inputs["student_fp32.onnx"], "int8": inputs["student_int8.onnx"]}
    models = {"teacher_fp32": inputs["teacher_fp32.onnx"], "student_fp32": candidates["fp32"],
              "student_int8": candidates["int8"]}

    remote = device_target(device)

    def time_lengths(threads: int) -> dict[int, dict]:
        rows = {}
        for length, feed in feeds.items():
            progress(f"timing teacher and student side by side at length {length}, {threads} thread(s)")
            with onnxruntime_errors(f"timing at length {length}"):
                rows[length] = time_side_by_side(models, feed, [threads], provider_specs(bench),
                                                 settings.benchmark_seconds, remote, not bench.allow_cpu_fallback,
                                                 progress, bench.time_limit_s)
        return rows

    longest = settings.lengths[-1]
    if remote is not None or device.is_host_arch:  # measured for the device: 1, 2, 4, ... threads
        timing = time_candidates(candidates, feeds[longest], bench, device, settings.benchmark_seconds, progress)
        precision, threads, why = choose(judgement, timing, device.arch)
        by_length = time_lengths(threads)
    else:  # for the record only: the table's own rows at the longest length serve the choice
        by_length = time_lengths(bench.threads)  # the settings' threads: resolved once, at most this host's cores
        timing = by_length[longest] | {"for_device": False, "threads": [bench.threads], "rows": [
            row | {"variant": row["variant"].removeprefix("student_")}
            for row in by_length[longest]["rows"] if row["variant"] != "teacher_fp32"]}
        precision, threads, why = choose(judgement, timing, device.arch)
    progress(f"shipping student_{precision} at {threads} thread(s): {why}")
    latency = {str(length): {row["variant"]: row.get("p50", row.get("error")) for row in timed["rows"]}
               for length, timed in by_length.items()}
    (staged / "timing.json").write_text(json.dumps({
        "variant": f"student_{precision}", "threads": threads, "why": why, "p50_ms": latency,
        "choice": {"where": timing["where"], "host": timing["host"], "for_device": timing["for_device"],
                   "length": longest, "candidates": timing["rows"], "judgement": judged["summary"]}},
        indent=2))


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

