"""kNN: block-wise torch implementation against a brute-force double-loop reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from array_context import ArrayContext

from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.knn import knn_metrics, nearest_neighbours
from bobench.protocols.metrics import l2_normalize

torch.set_num_threads(1)


def brute_force_knn(bank_x, bank_y, query_x, query_y, k, temperature, n_classes):
    """Reference: one query at a time, one bank item at a time, float64, then a full sort."""
    bank = [row / np.linalg.norm(row) for row in bank_x.astype(np.float64)]
    top1 = top5 = 0
    for q, label in zip(query_x.astype(np.float64), query_y, strict=True):
        q = q / np.linalg.norm(q)
        sims = [(float(np.dot(q, b)), j) for j, b in enumerate(bank)]
        sims.sort(key=lambda t: -t[0])
        votes = [0.0] * n_classes
        for sim, j in sims[:k]:
            votes[bank_y[j]] += np.exp(sim / temperature)
        ranked = sorted(range(n_classes), key=lambda c: (-votes[c], c))
        top1 += ranked[0] == label and votes[label] > 0
        top5 += label in ranked[:5] and votes[label] > 0
    return top1 / len(query_y), top5 / len(query_y)


def random_problem(seed: int, n_bank: int = 150, n_query: int = 40, dim: int = 12, n_classes: int = 7):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim))
    y_b, y_q = rng.integers(0, n_classes, n_bank), rng.integers(0, n_classes, n_query)
    x_b = (centers[y_b] + 1.5 * rng.normal(size=(n_bank, dim))).astype(np.float32)
    x_q = (centers[y_q] + 1.5 * rng.normal(size=(n_query, dim))).astype(np.float32)
    return x_b, y_b, x_q, y_q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_equals_brute_force_double_loop(seed):
    x_b, y_b, x_q, y_q = random_problem(seed)
    ks = [1, 5, 10, 20]
    metrics = knn_metrics(l2_normalize(x_b), y_b, l2_normalize(x_q), y_q, ks, 0.07, 7)
    for k in ks:
        top1, top5 = brute_force_knn(x_b, y_b, x_q, y_q, k, 0.07, 7)
        assert metrics[f"top1_k{k}"] == top1
        assert metrics[f"top5_k{k}"] == top5
    assert 0 < metrics["top1_k10"] < 1  # the data is neither trivial nor hopeless


def test_blocked_search_equals_single_block():
    x_b, _, x_q, _ = random_problem(3, n_bank=101, n_query=33)
    full_sims, full_idx = nearest_neighbours(l2_normalize(x_q), l2_normalize(x_b), 9)
    sims, idx = nearest_neighbours(l2_normalize(x_q), l2_normalize(x_b), 9, query_block=7, bank_block=13)
    np.testing.assert_array_equal(idx, full_idx)
    np.testing.assert_allclose(sims, full_sims, rtol=1e-6)
    assert (np.diff(sims, axis=1) <= 0).all()


def test_protocol_uses_train_and_val_as_bank():
    x_b, y_b, x_q, y_q = random_problem(4, n_bank=120)
    ctx = ArrayContext({"train": (x_b[:80], y_b[:80]), "val": (x_b[80:], y_b[80:]), "test": (x_q, y_q)}, 7)
    metrics = get_protocol("knn").evaluate(ctx, {}, 0)
    assert (metrics["n_bank"], metrics["n_test"]) == (120, 40)
    assert metrics["top1_k20"] == brute_force_knn(x_b, y_b, x_q, y_q, 20, 0.07, 7)[0]
    only_train = get_protocol("knn").evaluate(ctx, {"bank_splits": ["train"], "ks": [10]}, 0)
    assert only_train["n_bank"] == 80
    assert only_train["top1_k10"] == brute_force_knn(x_b[:80], y_b[:80], x_q, y_q, 10, 0.07, 7)[0]


def test_temperature_changes_the_vote():
    x_b, y_b, x_q, y_q = random_problem(5)
    sharp = knn_metrics(l2_normalize(x_b), y_b, l2_normalize(x_q), y_q, [20], 0.01, 7)
    flat = knn_metrics(l2_normalize(x_b), y_b, l2_normalize(x_q), y_q, [20], 10.0, 7)
    assert sharp["top1_k20"] == brute_force_knn(x_b, y_b, x_q, y_q, 20, 0.01, 7)[0]
    assert flat["top1_k20"] == brute_force_knn(x_b, y_b, x_q, y_q, 20, 10.0, 7)[0]


def test_few_classes_and_large_k_give_null_not_zero():
    x_b, y_b, x_q, y_q = random_problem(6, n_bank=30, n_classes=3)
    metrics = knn_metrics(l2_normalize(x_b), y_b, l2_normalize(x_q), y_q, [10, 50], 0.07, 3)
    assert metrics["top5_k10"] is None and metrics["top1_k10"] is not None
    assert metrics["top1_k50"] is None


def test_query_split_in_bank_is_rejected():
    x_b, y_b, x_q, y_q = random_problem(7)
    ctx = ArrayContext({"train": (x_b, y_b), "val": (x_b, y_b), "test": (x_q, y_q)}, 7)
    with pytest.raises(InvalidArgument, match="must not contain the query split"):
        get_protocol("knn").evaluate(ctx, {"bank_splits": ["train", "test"]}, 0)
    with pytest.raises(InvalidArgument, match="temperature"):
        get_protocol("knn").evaluate(ctx, {"temperature": 0}, 0)


def test_missing_split_names_the_split():
    x_b, y_b, x_q, y_q = random_problem(8)
    ctx = ArrayContext({"train": (x_b, y_b), "test": (x_q, y_q)}, 7)
    with pytest.raises(InvalidArgument, match="no split 'val'"):
        get_protocol("knn").evaluate(ctx, {}, 0)


def test_ranked_top1_is_at_the_largest_k_so_custom_ks_still_rank():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 8)).astype(np.float32), rng.integers(0, 3, 60)
    ctx = ArrayContext({"train": (x[:40], y[:40]), "val": (x[40:45], y[40:45]), "test": (x[45:], y[45:])}, 3)
    protocol = get_protocol("knn")
    metrics = protocol.evaluate(ctx, {"ks": [3, 5]}, 0)
    assert protocol.primary_metric == "top1" and protocol.higher_is_better["top1"] is True
    assert metrics["top1"] == metrics["top1_k5"] and metrics["top1_at_k"] == 5


def brute_force_top1_hits(bank_x, bank_y, query_x, query_y, k, temperature, n_classes) -> np.ndarray:
    """Per-query top-1 correctness by the brute-force reference (one query at a time)."""
    return np.array(
        [
            brute_force_knn(
                bank_x, bank_y, query_x[i : i + 1], query_y[i : i + 1], k, temperature, n_classes
            )[0]
            for i in range(len(query_y))
        ]
    )


def test_top1_at_each_k_carries_a_seeded_bootstrap_interval_over_queries():
    x_b, y_b, x_q, y_q = random_problem(5, n_bank=120, n_query=60)
    ctx = ArrayContext({"train": (x_b[:80], y_b[:80]), "val": (x_b[80:], y_b[80:]), "test": (x_q, y_q)}, 7)
    metrics = get_protocol("knn").evaluate(ctx, {"ks": [1, 10, 500]}, 9)
    resamples = np.random.default_rng(9).integers(0, 60, size=(2000, 60))  # what the bootstrap draws
    for k in (1, 10):
        hits = brute_force_top1_hits(x_b, y_b, x_q, y_q, k, 0.07, 7)
        low, high = np.quantile(np.array([hits[r].mean() for r in resamples]), [0.025, 0.975])
        assert metrics[f"top1_k{k}_ci_low"] == pytest.approx(low, abs=1e-12)
        assert metrics[f"top1_k{k}_ci_high"] == pytest.approx(high, abs=1e-12)
        assert low <= metrics[f"top1_k{k}"] <= high
    assert metrics["top1_k500_ci_low"] is None and metrics["top1_k500_ci_high"] is None  # k > bank
    assert metrics["n_test"] == 60
    assert get_protocol("knn").version == "3"
    ranked = get_protocol("knn").evaluate(ctx, {"ks": [1, 10]}, 9)
    assert (ranked["top1_ci_low"], ranked["top1_ci_high"]) == (
        ranked["top1_k10_ci_low"],
        ranked["top1_k10_ci_high"],
    )
