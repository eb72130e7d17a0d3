import numpy as np
import pytest

from edge_distill.text.retrieval import mean_cosine, retrieval_scores


def test_recall_and_ndcg_from_the_rank_of_each_querys_one_document():
    documents = np.eye(4)
    # Query 0 finds its document first; query 1 second (document 2 is closer); queries 2, 3 first.
    queries = np.array([[1, 0, 0, 0], [0, 0.5, 0.9, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    scores = retrieval_scores(queries, documents)
    assert scores["recall@1"] == 0.75 and scores["recall@10"] == 1.0
    assert scores["ndcg@10"] == pytest.approx((3 + 1 / np.log2(3)) / 4)
    assert mean_cosine(queries, queries) == pytest.approx(1.0)
