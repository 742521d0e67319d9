"""Few-shot probe: shot sampling, reproducibility, skipped shot counts, agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from array_context import ArrayContext
from sklearn.linear_model import LogisticRegression

from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.fewshot import fewshot_top1, sample_shots
from bobench.protocols.linear_probe import select_C
from bobench.protocols.metrics import l2_normalize

torch.set_num_threads(1)

GRID = [0.1, 1.0, 10.0, 100.0]


def make_splits(seed: int = 0, n_classes: int = 5, dim: int = 16, per_class_train: int = 12):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * 0.7
    out = {}
    for name, y in (
        ("train", np.repeat(np.arange(n_classes), per_class_train)),
        ("val", rng.integers(0, n_classes, 100)),
        ("test", rng.integers(0, n_classes, 200)),
    ):
        out[name] = ((centers[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y.astype(np.int64))
    return out


def test_sample_shots_draws_k_per_class_reproducibly():
    y = np.repeat(np.arange(4), 9)
    picked = sample_shots(y, 3, np.random.default_rng([0, 3, 0]))
    assert np.bincount(y[picked]).tolist() == [3, 3, 3, 3]
    assert len(set(picked.tolist())) == 12
    assert np.array_equal(picked, sample_shots(y, 3, np.random.default_rng([0, 3, 0])))
    assert not np.array_equal(picked, sample_shots(y, 3, np.random.default_rng([0, 3, 1])))
    with pytest.raises(InvalidArgument, match="class 2 has 1 train items"):
        sample_shots(np.array([0, 0, 1, 1, 2]), 2, np.random.default_rng(0))


def test_one_repeat_matches_sklearn_on_the_same_shots():
    data = make_splits(2)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (
        (l2_normalize(data[s][0]), data[s][1]) for s in ("train", "val", "test")
    )
    top1, chosen_C = fewshot_top1(
        x_tr, y_tr, x_va, y_va, x_te, y_te, 5, np.random.default_rng(7), np.array(GRID)
    )
    picked = sample_shots(y_tr, 5, np.random.default_rng(7))  # the same draw
    fits = [LogisticRegression(C=C, max_iter=5000).fit(x_tr[picked], y_tr[picked]) for C in GRID]
    ref = fits[select_C(np.array(GRID), np.array([f.score(x_va, y_va) for f in fits]))]
    assert chosen_C == ref.C
    assert abs(top1 - ref.score(x_te, y_te)) <= 0.01


def test_protocol_reports_mean_and_std_per_shot_count_and_reproduces():
    ctx = ArrayContext(make_splits(2), 5)
    config = {"shots": [1, 5], "seeds": 3, "grid": GRID}
    metrics = get_protocol("fewshot").evaluate(ctx, config, 11)
    for k in (1, 5):
        assert 0.0 <= metrics[f"top1_{k}shot_mean"] <= 1.0
        assert metrics[f"top1_{k}shot_std"] >= 0.0
        assert len(metrics[f"chosen_C_{k}shot"]) == 3
    assert metrics["top1_5shot_mean"] > metrics["top1_1shot_mean"]
    assert metrics["top1_fewshot_mean"] == pytest.approx(
        (metrics["top1_1shot_mean"] + metrics["top1_5shot_mean"]) / 2
    )
    assert metrics["skipped_shots"] == []
    assert get_protocol("fewshot").evaluate(ctx, config, 11) == metrics
    assert get_protocol("fewshot").evaluate(ctx, config, 12) != metrics


def test_shot_count_above_smallest_class_is_skipped_with_null():
    data = make_splits(3, per_class_train=12)
    x, y = data["train"]
    keep = np.ones(len(y), bool)
    keep[np.flatnonzero(y == 4)[4:]] = False  # class 4 keeps only 4 train items
    ctx = ArrayContext(dict(data, train=(x[keep], y[keep])), 5)
    metrics = get_protocol("fewshot").evaluate(ctx, {"shots": [2, 8], "seeds": 1, "grid": GRID}, 0)
    assert metrics["skipped_shots"] == [8]
    assert metrics["top1_8shot_mean"] is None and metrics["top1_8shot_std"] is None
    assert metrics["top1_2shot_mean"] is not None and metrics["top1_2shot_std"] is None  # one repeat: no std
    assert metrics["min_train_per_class"] == 4
    assert metrics["top1_fewshot_mean"] == metrics["top1_2shot_mean"]


def test_bad_shots_config_is_rejected():
    ctx = ArrayContext(make_splits(4), 5)
    with pytest.raises(InvalidArgument, match="shots"):
        get_protocol("fewshot").evaluate(ctx, {"shots": [0, 5]}, 0)
    with pytest.raises(InvalidArgument, match="seeds"):
        get_protocol("fewshot").evaluate(ctx, {"seeds": [1, 2]}, 0)
