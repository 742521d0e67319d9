"""Linear probe: the batched grid solver against scikit-learn's LogisticRegression, selection rules, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from array_context import ArrayContext
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, log_loss, top_k_accuracy_score

from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol, logistic
from bobench.protocols.linear_probe import DEFAULT_GRID, fit_logistic_grid, select_C
from bobench.protocols.metrics import l2_normalize, mean_per_class_recall, topk_accuracy

torch.set_num_threads(1)


def mixture(n: int, n_classes: int, dim: int, rng: np.random.Generator, spread: float = 1.0):
    """Overlapping Gaussian classes (so regularisation matters) plus a shared offset, like real features."""
    centers = rng.normal(size=(n_classes, dim)) * spread
    offset = rng.normal(size=dim) * 3
    y = rng.integers(0, n_classes, n)
    return (offset + centers[y] + rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int64)


def split_mixture(n_classes: int, seed: int = 0, dim: int = 24):
    x, y = mixture(750, n_classes, dim, np.random.default_rng(seed), spread=0.6)
    return {"train": (x[:300], y[:300]), "val": (x[300:450], y[300:450]), "test": (x[450:], y[450:])}


def sklearn_objective(x: np.ndarray, y: np.ndarray, C: float, w: np.ndarray, b: np.ndarray) -> float:
    """scikit-learn's LogisticRegression objective: Σ log-loss + ||W||² / (2C); w [d, K], K = 1 for binary."""
    classes = np.unique(y)
    z = x.astype(np.float64) @ w + b
    if z.shape[1] == 1:
        z = np.concatenate([np.zeros_like(z), z], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), np.searchsorted(classes, y)].sum() + 0.5 / C * (w**2).sum())


@pytest.mark.parametrize("n_classes", [2, 5])
def test_batched_fit_reaches_sklearn_objective_for_every_C(n_classes):
    data = split_mixture(n_classes)
    x, y = l2_normalize(data["train"][0]), data["train"][1]
    grid = np.logspace(-4, 2, 7)
    fit = fit_logistic_grid(x, y, grid, tol=1e-6)
    assert fit.converged.all()
    predictions = fit.predict(x)
    for g, C in enumerate(grid):
        ref = LogisticRegression(C=C, tol=1e-8, max_iter=10_000).fit(x, y)
        ours = sklearn_objective(x, y, C, fit.weights[g].numpy(), fit.bias[g].numpy())
        theirs = sklearn_objective(x, y, C, ref.coef_.T, ref.intercept_)
        assert ours <= theirs * (1 + 1e-5) + 1e-6, (C, ours, theirs)
        assert (predictions[g] == ref.predict(x)).mean() >= 0.99


def test_more_dimensions_than_samples_reaches_sklearn_objective():
    rng = np.random.default_rng(9)
    x, y = mixture(24, 3, 80, rng, spread=0.5)  # few-shot shape: separable, d ≫ n
    x = l2_normalize(x)
    grid = [1e-2, 1.0, 100.0]
    fit = fit_logistic_grid(x, y, grid, tol=1e-6)
    assert fit.converged.all()
    for g, C in enumerate(grid):
        ref = LogisticRegression(C=C, tol=1e-8, max_iter=10_000).fit(x, y)
        ours = sklearn_objective(x, y, C, fit.weights[g].numpy(), fit.bias[g].numpy())
        assert ours <= sklearn_objective(x, y, C, ref.coef_.T, ref.intercept_) * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("n_classes", [2, 5])
def test_row_space_solve_equals_the_full_space_solve(monkeypatch, n_classes):
    # Fewer rows than features: the solver works in the rows' span (r = n unknowns per class, not d).
    # It must return weights in the full space that are the full-space solve's, to the tolerance, with
    # the same stopping rule (max |full gradient| ≤ tol) — checked here from the returned weights.
    rng = np.random.default_rng(3)
    x, y = mixture(30, n_classes, 200, rng, spread=0.8)
    x = l2_normalize(x)
    grid = [1e-2, 1.0, 100.0, 1e4]
    reduced = fit_logistic_grid(x, y, grid, tol=1e-6)
    monkeypatch.setattr(logistic, "_ROW_SPACE_SHARE", 0.0)  # never reduce
    full = fit_logistic_grid(x, y, grid, tol=1e-6)
    assert reduced.weights.shape == full.weights.shape == (len(grid), 200, 1 if n_classes == 2 else n_classes)
    assert reduced.converged.all() and full.converged.all()
    for g, C in enumerate(grid):
        ours = sklearn_objective(x, y, C, reduced.weights[g].numpy(), reduced.bias[g].numpy())
        theirs = sklearn_objective(x, y, C, full.weights[g].numpy(), full.bias[g].numpy())
        assert abs(ours - theirs) <= 1e-4 * theirs + 1e-6, (C, ours, theirs)
        grad = sklearn_gradient(x, y, C, reduced.weights[g].numpy(), reduced.bias[g].numpy())[:-1]  # over W
        assert np.abs(grad).max() <= 2e-6, (C, np.abs(grad).max())  # tol, with float32 products
    # the weights lie in the rows' span, as every iterate does
    w = reduced.weights[-1].numpy()
    coef, *_ = np.linalg.lstsq(x.astype(np.float64).T, w, rcond=None)
    np.testing.assert_allclose(x.astype(np.float64).T @ coef, w, atol=1e-6 * np.abs(w).max())


def test_intercept_newton_on_saturated_logits_takes_bounded_steps():
    # A line-search trial far out: one class dominates every row by 200 logits. Newton's intercept
    # Hessian is nearly singular there; without a trust region each step was ~1e9 long and halved ~30
    # times, 20 times over (hundreds of softmax passes for one evaluation, on the demo's probes).
    n, k = 40, 5
    y = torch.arange(n) % k
    problem = logistic._Problem(
        torch.randn(n, 3, generator=torch.Generator().manual_seed(0)), y, k, np.array([1.0]), 1e-4
    )
    scores = torch.zeros(1, k, n)
    scores[:, 0] = 200.0
    calls = 0
    probabilities = problem._probabilities

    def counted(*args):
        nonlocal calls
        calls += 1
        return probabilities(*args)

    problem._probabilities = counted
    start = torch.zeros(1, k, dtype=torch.float64)
    _, start_log_p = probabilities(scores, start)
    bias, _, log_p = problem._optimal_bias(scores, start.clone())
    assert calls <= 2 * logistic._MAX_NEWTON + 1, calls
    assert log_p.item() > start_log_p.item() + 1000  # every step moved the intercept the right way
    assert bias[0, 0] < bias[0, 1:].min()


def test_grid_fit_equals_one_fit_per_C():
    data = split_mixture(4, seed=1)
    x, y = l2_normalize(data["train"][0]), data["train"][1]
    grid = [1e-3, 0.1, 10.0]
    joint = fit_logistic_grid(x, y, grid, tol=1e-7)
    for g, C in enumerate(grid):
        alone = fit_logistic_grid(x, y, [C], tol=1e-7)
        np.testing.assert_allclose(joint.weights[g].numpy(), alone.weights[0].numpy(), atol=2e-4)
        np.testing.assert_allclose(joint.bias[g].numpy(), alone.bias[0].numpy(), atol=2e-4)


def test_protocol_matches_sklearn_sweep_select_refit():
    data = split_mixture(6, seed=2)
    metrics = get_protocol("linear_probe").evaluate(ArrayContext(data, 6), {}, 0)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (
        (l2_normalize(data[s][0]), data[s][1]) for s in ("train", "val", "test")
    )
    refs = [LogisticRegression(C=C, max_iter=5000).fit(x_tr, y_tr) for C in DEFAULT_GRID]
    val_acc = [f.score(x_va, y_va) for f in refs]
    val_loss = [log_loss(y_va, f.predict_proba(x_va), labels=f.classes_) for f in refs]
    ref_C = DEFAULT_GRID[select_C(np.array(DEFAULT_GRID), np.array(val_acc), np.array(val_loss))]
    ref = LogisticRegression(C=ref_C, max_iter=5000).fit(
        np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    )
    assert abs(metrics["top1"] - ref.score(x_te, y_te)) <= 0.01
    # the chosen C is as good on val for scikit-learn as it was for us
    assert metrics["val_top1"] == pytest.approx(
        val_acc[list(DEFAULT_GRID).index(metrics["chosen_C"])], abs=1e-9
    )
    assert abs(metrics["top5"] - top_k_accuracy_score(y_te, ref.predict_proba(x_te), k=5)) <= 0.01
    assert abs(metrics["mean_per_class_recall"] - balanced_accuracy_score(y_te, ref.predict(x_te))) <= 0.015
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (300, 150, 300)
    assert metrics["converged"] is True


def test_selection_ignores_test_labels():
    data = split_mixture(4, seed=3)
    x_te, y_te = data["test"]
    shuffled = dict(data, test=(x_te, np.random.default_rng(0).permutation(y_te)))
    config = {"grid": [1e-4, 1e-2, 1.0, 100.0]}
    a = get_protocol("linear_probe").evaluate(ArrayContext(data, 4), config, 0)
    b = get_protocol("linear_probe").evaluate(ArrayContext(shuffled, 4), config, 0)
    assert (a["chosen_C"], a["val_top1"]) == (b["chosen_C"], b["val_top1"])
    assert a["top1"] != b["top1"]


def test_select_C_breaks_ties_towards_stronger_regularisation():
    assert select_C(np.array([1e-2, 1e-1, 1.0, 10.0]), np.array([0.5, 0.7, 0.7, 0.6])) == 1
    assert select_C(np.array([10.0, 1.0, 0.1]), np.array([0.9, 0.9, 0.9])) == 2


def test_select_C_breaks_accuracy_ties_by_validation_loss_first():
    Cs, acc = np.array([1e-6, 1e-2, 1.0, 100.0]), np.array([1.0, 1.0, 1.0, 0.9])
    assert select_C(Cs, acc, np.array([0.69, 0.30, 0.05, 0.01])) == 2  # lowest loss among the tied
    assert select_C(Cs, acc, np.array([0.2, 0.2, 0.3, 0.0])) == 0  # equal loss too: strongest penalty


def test_saturated_validation_accuracy_does_not_pick_a_degenerate_model():
    x, y = mixture(750, 2, 24, np.random.default_rng(5), spread=4.0)  # well separated: val saturates
    data = {"train": (x[:300], y[:300]), "val": (x[300:450], y[300:450]), "test": (x[450:], y[450:])}
    metrics = get_protocol("linear_probe").evaluate(ArrayContext(data, 2), {}, 0)
    assert metrics["val_top1"] == 1.0
    assert metrics["chosen_C"] > DEFAULT_GRID[0]  # accuracy ties broken by val loss, not by the grid edge


def test_binary_problem_has_no_top5_and_matches_sklearn():
    data = split_mixture(2, seed=4)
    metrics = get_protocol("linear_probe").evaluate(ArrayContext(data, 2), {"grid": [0.01, 1.0, 100.0]}, 0)
    assert metrics["top5"] is None
    x_all = l2_normalize(np.concatenate([data["train"][0], data["val"][0]]))
    y_all = np.concatenate([data["train"][1], data["val"][1]])
    ref = LogisticRegression(C=metrics["chosen_C"]).fit(x_all, y_all)
    assert abs(metrics["top1"] - ref.score(l2_normalize(data["test"][0]), data["test"][1])) <= 0.01


def test_metric_helpers_match_sklearn():
    rng = np.random.default_rng(5)
    scores, y = rng.normal(size=(200, 7)), rng.integers(0, 7, 200)
    for k in (1, 3, 5):
        assert topk_accuracy(scores, y, k) == pytest.approx(
            top_k_accuracy_score(y, scores, k=k, labels=range(7))
        )
    assert topk_accuracy(scores, y, 8) is None
    pred = rng.integers(0, 7, 200)
    assert mean_per_class_recall(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))


def test_non_finite_feature_is_reported_with_split_and_row():
    data = split_mixture(3, seed=6)
    x_va = data["val"][0].copy()
    x_va[17, 2] = np.nan
    with pytest.raises(InvalidArgument, match=r"split 'val'.*row 17"):
        get_protocol("linear_probe").evaluate(ArrayContext(dict(data, val=(x_va, data["val"][1])), 3), {}, 0)


def test_bad_config_is_rejected_by_name():
    ctx = ArrayContext(split_mixture(3), 3)
    with pytest.raises(InvalidArgument, match="unknown config key"):
        get_protocol("linear_probe").evaluate(ctx, {"gird": [1.0]}, 0)
    with pytest.raises(InvalidArgument, match="grid value must be > 0"):
        get_protocol("linear_probe").evaluate(ctx, {"grid": [1.0, -2.0]}, 0)


def test_single_training_class_is_an_invalid_argument():
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(InvalidArgument, match="at least two classes"):
        fit_logistic_grid(x, np.zeros(10, np.int64), [1.0])


def sklearn_gradient(x: np.ndarray, y: np.ndarray, C: float, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Gradient of scikit-learn's mean objective over (W, b) in float64 (its lbfgs stopping test)."""
    classes = np.unique(y)
    z = x.astype(np.float64) @ w + b
    if z.shape[1] == 1:
        p = 1 / (1 + np.exp(-z))
        resid = p - (y == classes[1])[:, None]
    else:
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        resid = p - (y[:, None] == classes[None, :])
    n = len(y)
    return np.concatenate([(x.T @ resid) / n + w / (C * n), resid.mean(axis=0, keepdims=True)])


@pytest.mark.parametrize("n_classes", [2, 6])
def test_every_grid_value_meets_sklearn_stopping_rule_in_float64(n_classes):
    data = split_mixture(n_classes, seed=7, dim=40)
    x, y = l2_normalize(data["train"][0]), data["train"][1]
    grid = np.logspace(-6, 4, 11)
    fit = fit_logistic_grid(x, y, grid, tol=1e-4)
    assert fit.converged.all()
    for g, C in enumerate(grid):
        grad = sklearn_gradient(x, y, C, fit.weights[g].numpy(), fit.bias[g].numpy())
        assert np.abs(grad).max() <= 1e-4 * (1 + 1e-3), (C, np.abs(grad).max())


def synthetic_relu_features(n: int, dim: int, n_classes: int, seed: int):
    """Correlated non-negative features (latent mixture through a random ReLU layer), L2-normalised."""
    rng = np.random.default_rng(seed)
    centers, projection = rng.normal(size=(n_classes, 16)), rng.normal(size=(16, dim)) / 4
    y = rng.integers(0, n_classes, n)
    latent = 0.5 * centers[y] + rng.normal(size=(n, 16))
    x = np.maximum(latent @ projection, 0) + 0.05 * rng.normal(size=(n, dim))
    return l2_normalize(x.astype(np.float32)), y


def test_weak_penalty_objective_is_as_close_to_optimum_as_sklearn():
    # With a weak penalty the gradient test alone can pass far from the optimum (flat directions);
    # the solver must also be as close to the minimum as scikit-learn is at the same tol.
    x, y = synthetic_relu_features(500, 128, 4, seed=2)
    C = 100.0
    fit = fit_logistic_grid(x, y, [1.0, C], tol=1e-4)
    ref = LogisticRegression(C=C, tol=1e-4, max_iter=1000).fit(x, y)
    best = LogisticRegression(C=C, tol=1e-9, max_iter=10_000).fit(x, y)
    f_star = sklearn_objective(x, y, C, best.coef_.T, best.intercept_)
    ours = sklearn_objective(x, y, C, fit.weights[1].numpy(), fit.bias[1].numpy()) - f_star
    theirs = sklearn_objective(x, y, C, ref.coef_.T, ref.intercept_) - f_star
    assert ours <= max(theirs, 0.0) + 1e-5 * len(y), (ours, theirs)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_warm_started_path_equals_cold_start_for_every_C(n_classes):
    # The default grid in shuffled order: several warm-start blocks, each started from the secant through
    # earlier solutions, must land on the optimum as one cold batch from W = 0 does, in the caller's order.
    # Both are measured against a float64 solve at tol 1e-9: at the weakest penalties the float32 products
    # resolve the (near-separable, flat) optimum only to a few 1e-5 of the objective, whichever the path.
    x, y = synthetic_relu_features(400, 64, n_classes, seed=5)
    grid = np.random.default_rng(0).permutation(np.asarray(DEFAULT_GRID))
    warm = fit_logistic_grid(x, y, grid, tol=1e-6)
    cold = fit_logistic_grid(x, y, grid, tol=1e-6, warm_start=False)
    exact = fit_logistic_grid(x, y, grid, tol=1e-9, dtype=torch.float64, max_iter=5000)
    assert warm.converged.all() and cold.converged.all() and exact.converged.all()
    np.testing.assert_array_equal(warm.Cs, grid)
    warm_pred, cold_pred = warm.predict(x), cold.predict(x)
    for g, C in enumerate(grid):
        optimum = sklearn_objective(x, y, C, exact.weights[g].numpy(), exact.bias[g].numpy())
        for fit in (warm, cold):
            ours = sklearn_objective(x, y, C, fit.weights[g].numpy(), fit.bias[g].numpy())
            assert -1e-6 <= ours - optimum <= 1e-4 * optimum + 1e-6, (C, ours, optimum)
        assert (warm_pred[g] == cold_pred[g]).mean() >= 0.99, C
        if C <= 10:  # well-conditioned enough that the weights themselves are pinned down
            gap = float((warm.weights[g] - cold.weights[g]).norm())
            assert gap <= 1e-2 * float(cold.weights[g].norm()) + 1e-6, (C, gap)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_warm_started_path_takes_fewer_iterations_at_the_protocol_tolerance(n_classes):
    # The point of warm starts. (Not guaranteed everywhere: on this 4-class problem at tol=1e-6 the
    # near-separable weak-penalty fits take more iterations from a warm start than from W = 0.)
    x, y = synthetic_relu_features(400, 64, n_classes, seed=5)
    warm = fit_logistic_grid(x, y, DEFAULT_GRID, tol=1e-4)
    cold = fit_logistic_grid(x, y, DEFAULT_GRID, tol=1e-4, warm_start=False)
    assert warm.n_iter.sum() < cold.n_iter.sum()


def test_repeated_C_values_start_from_the_last_solution():
    x, y = synthetic_relu_features(200, 32, 3, seed=6)
    grid = [1e-2] * 9 + [1.0] * 9  # two blocks of equal C: no secant to extend
    fit = fit_logistic_grid(x, y, grid, tol=1e-6)
    assert fit.converged.all()
    np.testing.assert_allclose(fit.weights[9:].numpy(), fit.weights[17:].expand(9, -1, -1).numpy(), atol=1e-4)
    np.testing.assert_allclose(fit.weights[:9].numpy(), fit.weights[:1].expand(9, -1, -1).numpy(), atol=1e-4)


def well_separated_splits(seed: int = 11):
    """Pretrained-like features: classes far apart relative to the noise, so the best validation log-loss
    needs a weak penalty (C above the old grid's 1e2 edge)."""
    x, y = mixture(900, 5, 32, np.random.default_rng(seed), spread=0.8)
    return {"train": (x[:300], y[:300]), "val": (x[300:600], y[300:600]), "test": (x[600:], y[600:])}


def test_default_grid_puts_the_choice_inside_it_for_well_separated_features():
    metrics = get_protocol("linear_probe").evaluate(ArrayContext(well_separated_splits(), 5), {}, 0)
    assert min(DEFAULT_GRID) < metrics["chosen_C"] < max(DEFAULT_GRID)
    assert metrics["chosen_C"] > 100.0  # the old grid (1e-6..1e2) could only pick its edge here
    assert get_protocol("linear_probe").version == "2"


def test_named_dinov2_grid_and_unknown_name():
    from bobench.protocols.linear_probe import GRIDS, resolve_grid

    dinov2 = resolve_grid({"grid": "dinov2"}, "linear_probe")
    assert len(dinov2) == 45 and dinov2[0] == pytest.approx(1e-6) and dinov2[-1] == pytest.approx(1e5)
    assert np.array_equal(resolve_grid({"grid": "default"}, "lp"), np.asarray(GRIDS["default"]))
    with pytest.raises(InvalidArgument, match="unknown grid 'clip'"):
        resolve_grid({"grid": "clip"}, "linear_probe")


def brute_force_interval(values_of_resample, n: int, seed: int, resamples: int = 2000):
    """Percentile interval by a Python loop over the same resamples bobench draws (one chunk)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    stats = np.array([values_of_resample(row) for row in idx])
    return tuple(np.quantile(stats, [0.025, 0.975]))


def test_test_metrics_carry_bootstrap_intervals_matching_a_brute_force_loop():
    data = split_mixture(6, seed=4)
    metrics = get_protocol("linear_probe").evaluate(ArrayContext(data, 6), {"grid": [0.1, 10.0]}, 3)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (
        (l2_normalize(data[s][0]), data[s][1]) for s in ("train", "val", "test")
    )
    final = fit_logistic_grid(
        np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), [metrics["chosen_C"]], tol=1e-4
    )
    scores = final.decision_scores(x_te)[0]
    hit1 = scores.argmax(axis=1) == y_te
    hit5 = (np.argsort(-scores, axis=1)[:, :5] == y_te[:, None]).any(axis=1)
    pred = scores.argmax(axis=1)
    n = len(y_te)
    for name, stat in (
        ("top1", lambda r: hit1[r].mean()),
        ("top5", lambda r: hit5[r].mean()),
        ("mean_per_class_recall", lambda r: balanced_accuracy_score(y_te[r], pred[r])),
    ):
        low, high = brute_force_interval(stat, n, seed=3)
        assert metrics[f"{name}_ci_low"] == pytest.approx(low, abs=1e-9), name
        assert metrics[f"{name}_ci_high"] == pytest.approx(high, abs=1e-9), name
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
    assert metrics["n_test"] == n
