"""Retrieval quality of an embedding: each query has one relevant document (the same index);
documents are ranked by cosine similarity. recall@k: the share of queries whose document ranks
in the top k; nDCG@10 with one relevant document: 1 / log2(rank + 1) when it ranks in the top
10, else 0, averaged."""

from __future__ import annotations

import numpy as np


def retrieval_scores(queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
    """`queries` (N, H) and `documents` (N, H) embeddings; query i's document is document i."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = documents / np.maximum(np.linalg.norm(documents, axis=1, keepdims=True), 1e-12)
    similarity = q @ d.T  # (N, N)
    relevant = np.diag(similarity)[:, None]
    rank = 1 + (similarity > relevant).sum(axis=1)  # 1 = first; ties resolved in the document's favour
    return {"recall@1": float((rank <= 1).mean()), "recall@10": float((rank <= 10).mean()),
            "ndcg@10": float(np.where(rank <= 10, 1 / np.log2(rank + 1), 0.0).mean()),
            "queries": len(q)}


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)))
