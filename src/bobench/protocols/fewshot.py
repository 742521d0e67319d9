"""Few-shot linear probe (ELEVATER-style): k labelled images per class, repeated over sampling draws.

For each shot count k and each draw, k train items per class are drawn without replacement and the
linear probe's C grid is fitted on those shots in one batched pass (the same solver as
`linear_probe`). C is then chosen without the full validation split, which a real k-shot user would
not have (`selection`, recorded in the record):

- "kshot_val" (default): on a k-shot validation draw, k val items per class (every item of a class
  with fewer), drawn in the same draw;
- "cv": stratified cross-validation on the shots themselves (min(k, `cv_folds`) folds, accuracy then
  log-loss pooled over folds); a 1-shot draw cannot be split, so it falls back to "kshot_val" and
  `selection_{k}shot` says so;
- "full_val": the whole val split (the previous behaviour, for comparison only).

Ties go to the lower validation log-loss, then the stronger penalty. The model fitted on the shots at
the chosen C is scored on test — no refit, so the classifier only ever sees k·classes labels.

Metrics, per k: `top1_{k}shot_mean`, `top1_{k}shot_std` (sample std over draws; None for a single
draw), and per draw r `top1_{k}shot_r{r}` with its bootstrap interval over the test images
(`top1_{k}shot_r{r}_ci_low/_ci_high`) and `chosen_C_{k}shot_r{r}`. `top1_fewshot_mean` — the mean of
the per-k means — is the primary figure. The means carry intervals too (`top1_{k}shot_mean_ci_low/_high`,
`top1_fewshot_mean_ci_low/_high`): every draw is scored on the same test images, so a mean over draws
is the mean over test images of each image's hit rate, and its bootstrap resamples the test images
(uncertainty from the test set; the spread of the draws is the std). `shots` is a list or "elevater" (ELEVATER's 5, 20, 50). A k
larger than the smallest class's train count cannot be sampled: its figures are None and k is listed
in `skipped_shots` (with `min_train_per_class`), rather than failing. Draw r of shot count k uses the
random generator seeded by (run seed, k, r), so runs reproduce.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument
from bobench.protocols.base import RunContext, get_protocol
from bobench.protocols.classification_ci import accuracy_ci_fields
from bobench.protocols.linear_probe import (
    fit_logistic_grid,
    resolve_grid,
    select_C,
    solver_options,
    sweep_and_select,
    validation_log_loss,
)
from bobench.protocols.metrics import check_features, l2_normalize
from bobench.protocols.options import fewshot_options

log = logging.getLogger(__name__)


def sample_shots(
    y: np.ndarray, shots: int, rng: np.random.Generator, *, allow_fewer: bool = False
) -> np.ndarray:
    """Sorted indices of `shots` items per class of `y`, drawn without replacement.

    With `allow_fewer`, a class with fewer items contributes all of them; otherwise it raises
    InvalidArgument naming the class.
    """
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if members.size < shots and not allow_fewer:
            raise InvalidArgument(
                f"class {int(label)} has {members.size} train items, fewer than {shots} shots"
            )
        chosen.append(rng.choice(members, size=min(shots, members.size), replace=False))
    return np.sort(np.concatenate(chosen))


def stratified_folds(y: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id [n] per item: each class's items, shuffled, dealt round-robin over `n_folds` folds."""
    folds = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        folds[members] = np.arange(members.size) % n_folds
    return folds


def cross_validated_choice(
    x: np.ndarray, y: np.ndarray, grid: np.ndarray, n_folds: int, rng: np.random.Generator, **solver: Any
) -> int:
    """Grid index chosen by stratified `n_folds`-fold cross-validation on (x, y): pooled accuracy,
    ties by pooled log-loss, then the stronger penalty."""
    folds = stratified_folds(y, n_folds, rng)
    correct, loss = np.zeros(len(grid)), np.zeros(len(grid))
    for f in range(n_folds):
        held = folds == f
        fit = fit_logistic_grid(x[~held], y[~held], grid, **solver)
        correct += (fit.predict(x[held]) == y[held][None, :]).sum(axis=1)
        loss += validation_log_loss(fit, x[held], y[held]) * held.sum()
    return select_C(np.asarray(grid), correct / len(y), loss / len(y))


def fewshot_draw(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    shots: int,
    rng: np.random.Generator,
    grid: np.ndarray,
    selection: str = "full_val",
    cv_folds: int = 5,
    **solver: Any,
) -> tuple[np.ndarray, float, str]:
    """One few-shot draw: (per-test-item top-1 hits, chosen C, selection used); features as given."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits["train"], splits["val"], splits["test"]
    picked = sample_shots(y_tr, shots, rng)
    x_s, y_s = x_tr[picked], y_tr[picked]
    if selection == "cv" and shots < 2:
        selection = "kshot_val"
    if selection == "cv":
        fit = fit_logistic_grid(x_s, y_s, grid, **solver)
        chosen = cross_validated_choice(x_s, y_s, grid, min(shots, cv_folds), rng, **solver)
    else:
        if selection == "kshot_val":
            val = sample_shots(y_va, shots, rng, allow_fewer=True)
            x_va, y_va = x_va[val], y_va[val]
        fit, _, chosen = sweep_and_select(x_s, y_s, x_va, y_va, grid, **solver)
    return fit.predict(x_te)[chosen] == y_te, float(fit.Cs[chosen]), selection


def fewshot_top1(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    shots: int,
    rng: np.random.Generator,
    grid: np.ndarray,
    **solver: Any,
) -> tuple[float, float]:
    """(test top1, chosen C) of one draw with C chosen on the full val split; features as given."""
    splits = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    hits, chosen_C, _ = fewshot_draw(splits, shots, rng, grid, "full_val", **solver)
    return float(hits.mean()), chosen_C


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Few-shot top1 (mean ± std over draws, and per draw with its CI) per shot count; module docstring."""
    config = get_protocol("fewshot").resolve_config(config)
    shot_counts, n_repeats, selection, cv_folds = fewshot_options(config)
    grid, solver = resolve_grid(config, "fewshot"), solver_options(config, "fewshot")
    splits = {}
    for name in ("train", "val", "test"):
        x, y = check_features(*ctx.features(name), f"fewshot: split {name!r}")
        splits[name] = (l2_normalize(x), y)
    labels, counts = np.unique(splits["train"][1], return_counts=True)
    smallest = int(counts.min())
    metrics: dict[str, Any] = {
        "selection": selection,
        "min_train_per_class": smallest,
        "n_classes_train": int(labels.size),
        "n_test": len(splits["test"][1]),
    }
    skipped, means, item_means = [], [], []  # item_means[j][i]: test image i's hit rate over k's draws
    total, done = len(shot_counts) * n_repeats, 0
    for k in shot_counts:
        if k > smallest:
            log.warning(
                "fewshot: %d-shot skipped: class %d has only %d train items",
                k,
                int(labels[counts.argmin()]),
                smallest,
            )
            skipped.append(k)
            metrics.update({f"top1_{k}shot_mean": None, f"top1_{k}shot_std": None})
            metrics.update(accuracy_ci_fields(f"top1_{k}shot_mean", None, seed=seed))
            continue
        top1s, draw_hits = [], []
        for r in range(n_repeats):
            ctx.progress(done, total, f"few-shot: {k}-shot, draw {r + 1}/{n_repeats}")
            rng = np.random.default_rng([seed, k, r])
            hits, chosen_C, used = fewshot_draw(splits, k, rng, grid, selection, cv_folds, **solver)
            top1s.append(float(hits.mean()))
            draw_hits.append(np.asarray(hits, dtype=np.float64))
            metrics[f"top1_{k}shot_r{r}"] = top1s[-1]
            metrics.update(accuracy_ci_fields(f"top1_{k}shot_r{r}", hits, seed=seed))
            metrics[f"chosen_C_{k}shot_r{r}"] = chosen_C
            done += 1
        metrics[f"selection_{k}shot"] = used
        means.append(float(np.mean(top1s)))
        item_means.append(np.mean(draw_hits, axis=0))
        metrics[f"top1_{k}shot_mean"] = means[-1]
        # Every draw is tested on the same images, so the mean over draws is the mean over images of
        # each image's hit rate: its interval resamples the test images (the draws' spread is the std).
        metrics.update(accuracy_ci_fields(f"top1_{k}shot_mean", item_means[-1], seed=seed))
        metrics[f"top1_{k}shot_std"] = float(np.std(top1s, ddof=1)) if n_repeats > 1 else None
    ctx.progress(total, total, "few-shot: done")
    metrics["top1_fewshot_mean"] = float(np.mean(means)) if means else None
    metrics.update(
        accuracy_ci_fields(
            "top1_fewshot_mean", np.mean(item_means, axis=0) if item_means else None, seed=seed
        )
    )
    metrics["skipped_shots"] = skipped
    return metrics
