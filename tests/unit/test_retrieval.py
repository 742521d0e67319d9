"""Retrieval: tie-aware AP against scikit-learn, @k metrics and MRR against brute force, protocol wiring."""

from __future__ import annotations

import numpy as np
import pytest
from array_context import ArrayContext
from sklearn.metrics import average_precision_score

from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.metrics import l2_normalize
from bobench.protocols.retrieval import order_ranking, per_query_metrics, retrieval_metrics

KS = [1, 5, 10]


def brute_force(scores: np.ndarray, relevant: np.ndarray, k: int) -> dict[str, float]:
    """One query: rank by (score desc, index asc) with Python's sort, then count."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    ranked = [bool(relevant[j]) for j in order]
    hits = sum(ranked[:k])
    return {
        "RR": 1.0 / (ranked.index(True) + 1),
        f"precision@{k}": hits / k,
        f"recall@{k}": hits / sum(ranked),
        f"hit@{k}": float(hits > 0),
    }


def tied_rankings(seed: int, nq: int = 30, ng: int = 40):
    """Integer scores in 0..5 (so many ties) and random relevance with ≥ 1 positive per row."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=(nq, ng)).astype(np.float32)
    relevant = rng.random((nq, ng)) < 0.2
    relevant[np.arange(nq), rng.integers(0, ng, nq)] = True
    return scores, relevant


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_equals_sklearn_with_ties(seed):
    scores, relevant = tied_rankings(seed)
    idx = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    sorted_scores, sorted_idx = order_ranking(scores, idx)
    sorted_rel = np.take_along_axis(relevant, sorted_idx, axis=1)
    ap = per_query_metrics(sorted_scores, sorted_rel, KS)["AP"]
    reference = [average_precision_score(relevant[q], scores[q]) for q in range(len(scores))]
    np.testing.assert_allclose(ap, reference, rtol=1e-12)
    # a tie-unaware AP (rank by index within ties) would differ on these rankings
    naive = [
        np.mean([sorted_rel[q][: i + 1].mean() for i in np.flatnonzero(sorted_rel[q])])
        for q in range(len(scores))
    ]
    assert not np.allclose(naive, reference)


@pytest.mark.parametrize("seed", [3, 4])
def test_at_k_metrics_and_mrr_equal_brute_force_with_ties(seed):
    scores, relevant = tied_rankings(seed)
    idx = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    sorted_scores, sorted_idx = order_ranking(scores, idx)
    got = per_query_metrics(sorted_scores, np.take_along_axis(relevant, sorted_idx, axis=1), KS)
    for q in range(len(scores)):
        for k in KS:
            for name, value in brute_force(scores[q], relevant[q], k).items():
                assert got[name][q] == pytest.approx(value), (q, name)


def test_faiss_pipeline_equals_numpy_reference_with_duplicate_gallery_items():
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(25, 8)).astype(np.float32)
    gallery = np.concatenate([gallery, gallery[:10]])  # exact duplicates → tied scores
    g_labels = rng.integers(0, 4, len(gallery))
    queries = rng.normal(size=(20, 8)).astype(np.float32)
    q_labels = rng.integers(0, 5, 20)  # label 4 never occurs in the gallery
    got = retrieval_metrics(
        l2_normalize(queries), q_labels, l2_normalize(gallery), g_labels, KS, query_block=7
    )

    # per-pair float64 dot products: duplicates tie exactly (a BLAS matmul may not tie them)
    q64, g64 = l2_normalize(queries).astype(np.float64), l2_normalize(gallery).astype(np.float64)
    scores = np.array([[np.dot(q, g) for g in g64] for q in q64])
    keep = [q for q in range(20) if (g_labels == q_labels[q]).any()]
    per_q = {"AP": [], "RR": [], **{f"{m}@{k}": [] for m in ("precision", "recall", "hit") for k in KS}}
    for q in keep:
        relevant = g_labels == q_labels[q]
        per_q["AP"].append(average_precision_score(relevant, scores[q]))
        for k in KS:
            for name, value in brute_force(scores[q], relevant, k).items():
                if name != "RR" or k == 1:
                    per_q[name].append(value)
    assert got["mAP"] == pytest.approx(np.mean(per_q["AP"]), abs=1e-6)
    # MRR over all 20 queries as BoB averages: a query without positives scores 0
    assert got["MRR"] == pytest.approx(np.sum(per_q["RR"]) / 20, abs=1e-9)
    for k in KS:
        for m in ("precision", "recall", "hit"):
            assert got[f"{m}@{k}"] == pytest.approx(np.mean(per_q[f"{m}@{k}"]), abs=1e-9)
    assert got["n_queries_without_positives"] == 20 - len(keep) > 0
    assert got["n_queries"] == len(keep)


def test_recall_and_hit_are_different_metrics():
    # one query, 3 positives, ranking: + - + - - +
    scores = np.array([[6, 5, 4, 3, 2, 1]], dtype=np.float32)
    relevant = np.array([[1, 0, 1, 0, 0, 1]], dtype=bool)
    got = per_query_metrics(scores, relevant, [1, 5])
    assert got["hit@1"][0] == 1.0 and got["recall@1"][0] == pytest.approx(1 / 3)
    assert got["recall@5"][0] == pytest.approx(2 / 3) and got["precision@5"][0] == pytest.approx(2 / 5)
    assert got["AP"][0] == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)


def test_same_split_excludes_each_query_itself():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 6)).astype(np.float32)
    y = np.arange(30) % 10
    ctx = ArrayContext({("test", None): (x, y)})
    metrics = get_protocol("retrieval").evaluate(ctx, {"query_split": "test", "gallery_split": "test"}, 0)
    assert metrics["n_gallery"] == 29
    assert metrics["hit@1"] < 1.0  # a query matching itself would make every hit@1 = 1


def test_query_variants_read_corrupted_queries_against_clean_gallery():
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(40, 16)).astype(np.float32)
    labels = np.arange(40) % 8
    clean = gallery + 0.05 * rng.normal(size=gallery.shape).astype(np.float32)
    noisy = gallery + 3.0 * rng.normal(size=gallery.shape).astype(np.float32)
    arrays = {
        ("gallery", None): (gallery, labels),
        ("query", None): (clean, labels),
        ("query", "noise"): (noisy, labels),
    }
    ctx = ArrayContext(arrays)
    metrics = get_protocol("retrieval").evaluate(ctx, {"query_variant": [None, "noise"]}, 0)
    assert ("gallery", None) in ctx.requests and ("gallery", "noise") not in ctx.requests
    assert metrics["clean/mAP"] > metrics["noise/mAP"]
    assert metrics["mAP"] == pytest.approx((metrics["clean/mAP"] + metrics["noise/mAP"]) / 2)
    single = get_protocol("retrieval").evaluate(ArrayContext(arrays), {"query_variant": "noise"}, 0)
    assert single["mAP"] == pytest.approx(metrics["noise/mAP"])


def test_k_beyond_gallery_is_null_and_bad_config_is_rejected():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(6, 4)).astype(np.float32), np.array([0, 1, 0, 1, 0, 1])
    got = retrieval_metrics(l2_normalize(x[:3]), y[:3], l2_normalize(x[3:]), y[3:], [1, 5])
    assert got["precision@5"] is None and got["hit@1"] is not None
    ctx = ArrayContext({("query", None): (x, y), ("gallery", None): (x, y)})
    with pytest.raises(InvalidArgument, match="query_variant"):
        get_protocol("retrieval").evaluate(ctx, {"query_variant": 3}, 0)
    with pytest.raises(InvalidArgument, match="ks"):
        get_protocol("retrieval").evaluate(ctx, {"ks": [0]}, 0)
