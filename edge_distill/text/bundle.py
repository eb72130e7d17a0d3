"""A text bundle's files (`text-package`, pipeline/stages/text.py) in the one envelope
(bundle/writer: the labelled model, the profile section, finish_bundle) with the io kind's golden
vectors and the text kind's model card (bundle/kinds/), plus what only text has: tokenizer.json, the golden strings with their ids, the text
section, and a warning where the student keeps too little of the teacher's quality."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill import __version__
from edge_distill.text.settings import TextBuildSettings, TextData

KEPT_QUALITY_WARNING = 0.95  # a student keeping less of its teacher's quality gets a warning with a next step


def quality_warnings(manifest: dict[str, Any]) -> list[dict[str, str]]:
    """A warning where the shipped student keeps less than KEPT_QUALITY_WARNING of the teacher's
    quality, with what to try next."""

    measure, student = quality_of(manifest)
    teacher = quality_of(manifest, "teacher_fp32")[1]
    if teacher <= 0 or student >= KEPT_QUALITY_WARNING * teacher:
        return []
    layers = len(manifest["model"]["layers_from_teacher"])
    return [{"kind": "quality_kept", "message": (
        f"the {manifest['model']['precision']} student keeps {student / teacher:.0%} of the teacher's {measure} ({student:.3f} against "
        f"{teacher:.3f}), below {KEPT_QUALITY_WARNING:.0%}: try --layers {layers + 1}, more --epochs or more "
        "training text, or a budget sweep (--min-quality)")}]


def golden_text_feeds(tokenizer, strings: list[str]) -> tuple[list[dict[str, np.ndarray]], list[list[int]]]:
    """(feeds, ids): each string's ids padded to the longest with a mask of zeros, batch 1, as the
    io golden vectors hold them (one stacked row per sample); and the unpadded ids."""
    from edge_distill.text.teacher import batch_ids

    ids = [batch_ids(tokenizer, [s])[0][0].tolist() for s in strings]
    longest = max(len(row) for row in ids)
    feeds = []
    for row in ids:
        padded = np.zeros((1, longest), np.int64)
        padded[0, : len(row)] = row
        mask = np.zeros((1, longest), np.int64)
        mask[0, : len(row)] = 1
        feeds.append({"input_ids": padded, "attention_mask": mask})
    return feeds, ids


def write_text_bundle(student: dict[str, Path], data: TextData, settings: TextBuildSettings, out: Path) -> None:
    """The bundle's files in `out`: model.onnx (the float or int8 student text-benchmark chose), tokenizer.json, golden vectors (the io kind
    `verify` and `bench` run anywhere, plus golden_text.json: the strings and their ids, for
    checking a tokenizer) and manifest.json. `student`: the files of the stages before."""
    import shutil

    from edge_distill.bundle.kinds.io import write_io_golden
    from edge_distill.bundle.kinds.text import render_card
    from edge_distill.bundle.reader import read_tokenizer
    from edge_distill.bundle.writer import finish_bundle, label_model, profile_section
    from edge_distill.onnx_model import model_tensors
    from edge_distill.onnx_model import load_onnx
    from edge_distill.hashing import sha256
    from edge_distill.measure.harness import measurement_note

    report = json.loads(student["student.json"].read_text())
    judged = json.loads(student["judged.json"].read_text())
    timing = json.loads(student["timing.json"].read_text())
    variant = timing["variant"]
    precision = variant.removeprefix("student_")
    tokenizer = read_tokenizer(student["tokenizer.json"], settings.max_length)
    classifier = settings.task == "classification"
    task = "text-classification" if classifier else "sentence-embedding"
    strings = data.golden
    feeds, ids = golden_text_feeds(tokenizer, strings)
    inputs, outputs = model_tensors(load_onnx(student[f"{variant}.onnx"]), "the student")
    model = out / "model.onnx"
    label_model(student[f"{variant}.onnx"], model, precision=precision, task=task, labels=json.dumps(data.names or []))
    golden = write_io_golden(model, feeds, outputs, out)
    golden["source"] = (f"{'held-out labeled texts' if classifier else 'held-out retrieval queries'}, "
                        "padded to the longest with a mask of zeros")
    (out / "golden_text.json").write_text(json.dumps({"texts": strings, "input_ids": ids}, ensure_ascii=False)
                                          + "\n", encoding="utf-8")
    shutil.copyfile(student["tokenizer.json"], out / "tokenizer.json")
    host, where = timing["choice"]["host"], timing["choice"]["where"]
    profile = (profile_section(settings.profile) if settings.profile else
               {"name": None, "device": "any CPU", "benchmark": dataclasses.asdict(settings.benchmark)})
    profile["benchmark"] = dataclasses.asdict(settings.benchmark)  # the threads it was timed with here
    manifest = {
        "generator": {"name": "edge-distill", "version": __version__, "command": "text"},
        "task": task,
        # The settings `edge-distill bench` times the bundle with, here or on a device.
        "profile": profile,
        "runtime": {"intra_op_threads": timing["threads"], "why": timing["why"]},
        "model": {"file": "model.onnx", "sha256": sha256(model), "precision": precision, "variant": variant,
                  "why": timing["why"], "parameters": report["student"]["parameters"],
                  **({"quantization": "dynamic int8 (MatMul, Gather)",
                      "quantized_nodes": judged["quantization"]["quantized_nodes"]} if precision == "int8" else {}),
                  "teacher_parameters": report["student"]["teacher_parameters"],
                  "layers_from_teacher": report["student"]["layers_from_teacher"],
                  "vocabulary": report["student"]["vocabulary"],
                  "embedding_rank": report["student"]["embedding_rank"]},
        "inputs": [t.as_manifest() for t in inputs],
        "outputs": [t.as_manifest() for t in outputs],
        "labels": data.names or [],
        "text": {"tokenizer": "tokenizer.json", "golden_text": "golden_text.json", "max_length": settings.max_length,
                 **({"pooling": report["pooling"]["mode"], "normalized": report["pooling"]["normalize"]}
                    if report["pooling"] else {}),
                 "how": "tokenize with tokenizer.json (it adds [CLS] and [SEP]), cut at max_length, feed the ids "
                        "and a mask of ones (zeros where padded); " + (
                            "the output is the logits of the classes in `labels`' order: the argmax is the class"
                            if classifier else "the output is the sentence embedding, pooled and normalized in "
                            "the graph: compare two with a dot product")},
        "golden": golden,
        "teacher": report["teacher"],
        "training": {"data": data.source, **report["training"]},
        "metrics": {"quality": judged["quality"], "size_bytes": judged["size_bytes"], "p50_ms": timing["p50_ms"],
                    "threads": timing["threads"], "parity_max_abs_diff": report["parity_max_abs_diff"],
                    "int8_judgement": judged["judgement"]["summary"], "choice": timing["choice"],
                    "task": (f"{len(data.held_out)} held-out labeled texts: accuracy, and agreement with the "
                             "teacher's class" if classifier else
                             "each held-out passage's summary retrieves the rest of it among all others")},
        "measurement": {"host": host, "where": where,
                        "how": "p50 at batch 1 per sequence length, teacher and student timed side by side in "
                               "interleaved rounds with ONNX Runtime at the shipped thread count",
                        **({"measured_on": f"measured on the device ({where})" if where != "this host" else
                            measurement_note(host, settings.profile.device)} if settings.profile else {})},
    }
    manifest["warnings"] = quality_warnings(manifest)
    finish_bundle(manifest, out, ("model.onnx", "tokenizer.json", "golden.npz", "golden.json", "golden_text.json"),
                  render_card)


def render_text_summary(manifest: dict[str, Any], out: Path) -> str:
    """The table `edge-distill text` prints: each model's file, quality and p50 per length."""
    metrics = manifest["metrics"]
    lengths = list(metrics["p50_ms"])
    classifier = manifest["task"] == "text-classification"
    columns = ((("accuracy", 8), ("teacher_agreement", 9)) if classifier else
               (("recall@1", 6), ("recall@10", 6), ("ndcg@10", 8), ("cosine_to_teacher", 7)))
    headings = {"teacher_agreement": "agree", "recall@1": "R@1", "recall@10": "R@10", "ndcg@10": "nDCG@10",
                "cosine_to_teacher": "cosine"}
    lines = [f"{'model':14s} {'file MB':>8s} " + " ".join(f"{headings.get(k, k):>{w}s}" for k, w in columns) + " "
             + " ".join(f"{'p50@' + n:>8s}" for n in lengths)]
    for name, quality in metrics["quality"].items():
        scores = " ".join(f"{quality[k]:{w}.{4 if k == 'cosine_to_teacher' else 3}f}" if k in quality else f"{'-':>{w}s}"
                          for k, w in columns)
        lines.append(f"{name:14s} {metrics['size_bytes'][name] / 2**20:8.2f} {scores} "
                     + " ".join(_ms(metrics["p50_ms"][n][name]) for n in lengths))
    if classifier:
        what = f"Classification: {metrics['task']}; agree: the share where the model's class is the teacher's"
    else:
        queries = metrics["quality"]["teacher_fp32"]["queries"]
        what = (f"Retrieval: {metrics['task']} ({queries} queries); cosine: to the teacher's embeddings of the "
                "held-out text")
    model = manifest["model"]
    return "\n".join(lines + [f"{what}; p50 in ms at batch 1, {metrics['threads']} thread(s).",
                              f"Student: {model['parameters']:,} parameters, "
                              f"{model['teacher_parameters'] / model['parameters']:.1f}x fewer than the teacher's.",
                              f"Ships {model['variant']} at {metrics['threads']} thread(s): {model['why']}",
                              f"Bundle: {out}"])


def _ms(value) -> str:
    """A p50 in ms, or '-' where the model did not run at that length (its error is in the manifest)."""
    return f"{value:8.3f}" if isinstance(value, float) else f"{'-':>8s}"


def quality_of(manifest: dict[str, Any], model: str | None = None) -> tuple[str, float]:
    """(what the quality budget measures, the figure of `model`: the shipped student unless named)
    for a text bundle."""
    return quality_figure(manifest["metrics"]["quality"][model or manifest["model"]["variant"]])


def quality_figure(quality: dict[str, float]) -> tuple[str, float]:
    """(the measure, the figure) a text model is judged by: test accuracy for a classifier, else
    held-out recall@10 where there is a retrieval task, else the cosine to the teacher."""
    if "accuracy" in quality:
        return "test accuracy", quality["accuracy"]
    if quality.get("queries"):
        return "held-out recall@10", quality["recall@10"]
    return "cosine to the teacher", quality["cosine_to_teacher"]
