"""Few-shot probe: shot sampling, reproducibility, skipped shot counts, agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from array_context import ArrayContext
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.fewshot import (
    cross_validated_choice,
    fewshot_draw,
    fewshot_top1,
    sample_shots,
    stratified_folds,
)
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
        assert all(metrics[f"chosen_C_{k}shot_r{r}"] in GRID for r in range(3))
        draws = [metrics[f"top1_{k}shot_r{r}"] for r in range(3)]
        assert metrics[f"top1_{k}shot_mean"] == pytest.approx(np.mean(draws))
        assert metrics[f"top1_{k}shot_std"] == pytest.approx(np.std(draws, ddof=1))
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
    assert "top1_8shot_r0" not in metrics
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
    with pytest.raises(InvalidArgument, match="selection"):
        get_protocol("fewshot").evaluate(ctx, {"selection": "test"}, 0)
    with pytest.raises(InvalidArgument, match="unknown 'shots' preset 'vtab'"):
        get_protocol("fewshot").evaluate(ctx, {"shots": "vtab"}, 0)
    with pytest.raises(InvalidArgument, match="cv_folds"):
        get_protocol("fewshot").evaluate(ctx, {"cv_folds": 1}, 0)


def sklearn_choice(x_s, y_s, x_sel, y_sel, grid):
    """scikit-learn reference: one fit per C on the shots, chosen by accuracy then log-loss on (x_sel, y_sel)."""
    fits = [LogisticRegression(C=C, max_iter=5000).fit(x_s, y_s) for C in grid]
    acc = np.array([f.score(x_sel, y_sel) for f in fits])
    loss = np.array([log_loss(y_sel, f.predict_proba(x_sel), labels=f.classes_) for f in fits])
    return fits[select_C(np.array(grid), acc, loss)]


def normalised(data):
    return {s: (l2_normalize(data[s][0]), data[s][1]) for s in ("train", "val", "test")}


def test_default_selection_uses_a_kshot_validation_draw_not_the_full_val_split():
    data = make_splits(5, per_class_train=12)
    metrics = get_protocol("fewshot").evaluate(
        ArrayContext(data, 5), {"shots": [3], "seeds": 2, "grid": GRID}, 4
    )
    assert metrics["selection"] == "kshot_val" and metrics["selection_3shot"] == "kshot_val"
    n = normalised(data)
    for r in range(2):
        rng = np.random.default_rng([4, 3, r])  # the draw's generator: train shots, then val shots
        picked = sample_shots(n["train"][1], 3, rng)
        val = sample_shots(n["val"][1], 3, rng, allow_fewer=True)
        assert np.bincount(n["val"][1][val]).max() == 3  # 3 val items per class, not the 100 of val
        ref = sklearn_choice(
            n["train"][0][picked], n["train"][1][picked], n["val"][0][val], n["val"][1][val], GRID
        )
        assert metrics[f"chosen_C_3shot_r{r}"] == ref.C
        assert abs(metrics[f"top1_3shot_r{r}"] - ref.score(*n["test"])) <= 0.01
    assert get_protocol("fewshot").version == "3"


def test_cross_validation_on_the_shots_matches_a_sklearn_loop_over_the_same_folds():
    n = normalised(make_splits(6, per_class_train=12))
    x, y = n["train"][0][:60], n["train"][1][:60]
    folds = stratified_folds(y, 4, np.random.default_rng(1))
    for label in np.unique(y):  # stratified: every fold holds 3 of each class's 12 items
        assert np.bincount(folds[y == label], minlength=4).tolist() == [3, 3, 3, 3]
    chosen = cross_validated_choice(
        x, y, np.array(GRID), 4, np.random.default_rng(1), max_iter=1000, tol=1e-6
    )
    correct, loss = np.zeros(len(GRID)), np.zeros(len(GRID))
    for f in range(4):
        held = folds == f
        for g, C in enumerate(GRID):
            ref = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(x[~held], y[~held])
            correct[g] += (ref.predict(x[held]) == y[held]).sum()
            loss[g] += log_loss(y[held], ref.predict_proba(x[held]), labels=ref.classes_) * held.sum()
    assert chosen == select_C(np.array(GRID), correct / 60, loss / 60)


def test_cv_selection_records_its_folds_and_falls_back_for_one_shot():
    ctx = ArrayContext(make_splits(7), 5)
    metrics = get_protocol("fewshot").evaluate(
        ctx, {"shots": [1, 4], "seeds": 1, "grid": GRID, "selection": "cv"}, 0
    )
    assert metrics["selection"] == "cv"
    assert metrics["selection_4shot"] == "cv"
    assert metrics["selection_1shot"] == "kshot_val"  # one shot per class cannot be split into folds


def test_elevater_shot_counts_and_per_draw_bootstrap_intervals():
    data = make_splits(8, per_class_train=50)
    config = {"shots": "elevater", "seeds": 1, "grid": GRID}
    metrics = get_protocol("fewshot").evaluate(ArrayContext(data, 5), config, 2)
    assert [k for k in (5, 20, 50) if metrics[f"top1_{k}shot_mean"] is not None] == [5, 20, 50]
    n = normalised(data)
    rng = np.random.default_rng([2, 20, 0])
    hits, chosen_C, _ = fewshot_draw(n, 20, rng, np.array(GRID), "kshot_val", max_iter=1000, tol=1e-4)
    assert chosen_C == metrics["chosen_C_20shot_r0"] and hits.mean() == metrics["top1_20shot_r0"]
    resamples = np.random.default_rng(2).integers(0, 200, size=(2000, 200))
    low, high = np.quantile([hits[r].mean() for r in resamples], [0.025, 0.975])
    assert metrics["top1_20shot_r0_ci_low"] == pytest.approx(low, abs=1e-12)
    assert metrics["top1_20shot_r0_ci_high"] == pytest.approx(high, abs=1e-12)
    assert metrics["n_test"] == 200


def test_the_means_carry_intervals_over_the_test_images():
    """A mean over draws has its own bootstrap interval (resampling the test images): with one draw it
    is the draw's interval; with several it brackets the mean and is recomputed here from the draws'
    per-image hits with a plain loop over resamples (independent of the vectorised bootstrap)."""
    data = make_splits(8, per_class_train=12)
    one = get_protocol("fewshot").evaluate(ArrayContext(data, 5), {"shots": [2], "seeds": 1, "grid": GRID}, 3)
    for side in ("low", "high"):
        assert one[f"top1_2shot_mean_ci_{side}"] == one[f"top1_2shot_r0_ci_{side}"]
        assert one[f"top1_fewshot_mean_ci_{side}"] == one[f"top1_2shot_r0_ci_{side}"]

    many = get_protocol("fewshot").evaluate(
        ArrayContext(data, 5), {"shots": [1, 3], "seeds": 3, "grid": GRID}, 3
    )
    assert many["top1_fewshot_mean_ci_low"] <= many["top1_fewshot_mean"] <= many["top1_fewshot_mean_ci_high"]
    for k in (1, 3):
        assert (
            many[f"top1_{k}shot_mean_ci_low"]
            <= many[f"top1_{k}shot_mean"]
            <= many[f"top1_{k}shot_mean_ci_high"]
        )
    assert many["top1_fewshot_mean_ci_high"] - many["top1_fewshot_mean_ci_low"] > 0

    # Reference: the per-image hit rates over the 6 draws, resampled with the same generator.
    n = normalised(data)
    rates = np.zeros(len(n["test"][1]))
    for k in (1, 3):
        for r in range(3):
            hits, _, _ = fewshot_draw(
                n,
                k,
                np.random.default_rng([3, k, r]),
                np.array(GRID),
                "kshot_val",
                5,
                max_iter=1000,
                tol=1e-4,
            )
            rates += hits / 6
    assert abs(rates.mean() - many["top1_fewshot_mean"]) < 1e-9
    rng = np.random.default_rng(3)
    boot = [rates[rng.integers(0, rates.size, rates.size)].mean() for _ in range(2000)]
    low, high = np.quantile(boot, [0.025, 0.975])
    assert abs(low - many["top1_fewshot_mean_ci_low"]) < 0.02
    assert abs(high - many["top1_fewshot_mean_ci_high"]) < 0.02
