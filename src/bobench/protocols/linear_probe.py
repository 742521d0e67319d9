"""Linear probe: L2-regularised multinomial logistic regression on frozen, L2-normalised features.

The regularisation strength is chosen on the "val" split from a log grid (ties go to the stronger
penalty), the model is refit on train+val at that strength, and test is reported — never selected on.
The default grid spans 1e-6..1e4 at three values a decade (wide enough that L2-normalised pretrained
features do not pick its upper edge); `grid` may also name a preset of `GRIDS` ("dinov2": DINOv2's
45 values over 1e-6..1e5) or list the C values. Test top1, top5 and mean per-class recall carry
seeded bootstrap intervals over the test images (`<metric>_ci_low/_ci_high`, with `n_test`).

The objective is exactly scikit-learn's `LogisticRegression(C=C)` (lbfgs). The whole grid is fitted in
one vectorised pass by `bobench.protocols.logistic.fit_logistic_grid` (re-exported here with
`LogisticGridFit`, which few-shot and OOD import from this module).

`select_and_refit` (the sweep on train, the choice on val, the refit on train+val) is shared with the
OOD protocol, which trains the very same probe on the same features; its result is kept for the
last few distinct inputs in this process (keyed by a digest of the features, labels, grid and solver
options), so a battle fits that probe once per backbone and dataset, not once per protocol. The fit is
deterministic, so the kept result is the one a second fit would give.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bobench.bootstrap_ci import ci_fields
from bobench.protocols.base import RunContext, get_protocol
from bobench.protocols.classification_ci import accuracy_ci_fields, mean_per_class_recall_ci, topk_hits
from bobench.protocols.logistic import LogisticGridFit, fit_logistic_grid
from bobench.protocols.metrics import (
    check_features,
    l2_normalize,
    mean_per_class_recall,
    topk_accuracy,
)
from bobench.protocols.options import DEFAULT_GRID, GRIDS, resolve_grid, solver_options

__all__ = [
    "DEFAULT_GRID",
    "GRIDS",
    "LogisticGridFit",
    "classification_metrics",
    "evaluate",
    "fit_logistic_grid",
    "resolve_grid",
    "select_C",
    "select_and_refit",
    "solver_options",
    "sweep_and_select",
    "validation_log_loss",
]

log = logging.getLogger(__name__)


def select_C(Cs: np.ndarray, val_accuracy: np.ndarray, val_loss: np.ndarray | None = None) -> int:
    """Index of the best validation accuracy. Ties (common when val accuracy saturates) go to the lowest
    validation log-loss when given, then to the smallest C (the strongest penalty)."""
    Cs = np.asarray(Cs, dtype=np.float64)
    acc = np.asarray(val_accuracy, dtype=np.float64)
    best = np.flatnonzero(acc == acc.max())
    if val_loss is not None and best.size > 1:
        loss = np.asarray(val_loss, dtype=np.float64)[best]
        best = best[np.isclose(loss, loss.min(), rtol=1e-9, atol=1e-12)]
    return int(best[np.argmin(Cs[best])])


def validation_log_loss(fit: LogisticGridFit, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean cross-entropy [G] of each grid model on (x, y); labels unseen in training count as inf."""
    scores = torch.from_numpy(fit.decision_scores(x))
    log_p = torch.log_softmax(scores, dim=-1).numpy()
    y = np.asarray(y)
    idx = np.searchsorted(fit.classes, y)
    known = (idx < len(fit.classes)) & (fit.classes[np.minimum(idx, len(fit.classes) - 1)] == y)
    if not known.all():
        return np.full(log_p.shape[0], np.inf)
    return -log_p[:, np.arange(y.size), idx].mean(axis=1)


def sweep_and_select(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    Cs: np.ndarray | list[float],
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
) -> tuple[LogisticGridFit, np.ndarray, int]:
    """Fit the grid on train, score it on val. Returns (fit, val_accuracy [G], chosen index)."""
    fit = fit_logistic_grid(x_train, y_train, Cs, max_iter=max_iter, tol=tol)
    val_accuracy = (fit.predict(x_val) == np.asarray(y_val)[None, :]).mean(axis=1)
    return fit, val_accuracy, select_C(fit.Cs, val_accuracy, validation_log_loss(fit, x_val, y_val))


@dataclass(frozen=True)
class SelectedProbe:
    """The grid fitted on train (`sweep`), its val accuracy per C, the chosen index, and the refit on
    train+val at that C (`final`)."""

    sweep: LogisticGridFit
    val_accuracy: np.ndarray
    chosen: int
    chosen_C: float
    final: LogisticGridFit


_SELECTED: OrderedDict[str, SelectedProbe] = OrderedDict()
_SELECTED_KEPT = 4  # a battle asks again within one backbone's runs (linear_probe, then ood)


def _probe_digest(arrays: tuple[np.ndarray, ...], grid: np.ndarray, options: dict[str, Any]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for a in (*arrays, np.asarray(grid, dtype=np.float64)):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    h.update(repr(sorted(options.items())).encode())
    return h.hexdigest()


def select_and_refit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    grid: np.ndarray,
    options: dict[str, Any],
) -> SelectedProbe:
    """`sweep_and_select` on train/val, then the refit on train+val at the chosen C (module
    docstring: the result is kept for repeated identical inputs)."""
    key = _probe_digest((x_train, y_train, x_val, y_val), grid, options)
    kept = _SELECTED.get(key)
    if kept is not None:
        _SELECTED.move_to_end(key)
        return kept
    sweep, val_accuracy, chosen = sweep_and_select(x_train, y_train, x_val, y_val, grid, **options)
    chosen_C = float(grid[chosen])
    final = fit_logistic_grid(
        np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), [chosen_C], **options
    )
    selected = SelectedProbe(sweep, val_accuracy, chosen, chosen_C, final)
    _SELECTED[key] = selected
    while len(_SELECTED) > _SELECTED_KEPT:
        _SELECTED.popitem(last=False)
    return selected


def classification_metrics(
    fit: LogisticGridFit, g: int, x: np.ndarray, y: np.ndarray, *, ci_seed: int | None = None
) -> dict[str, float | None]:
    """top1, top5 (None with fewer than 5 classes) and mean per-class recall of grid entry `g` on (x, y).

    With `ci_seed`, each also gets its bootstrap interval over the items (`<metric>_ci_low/_ci_high`).
    """
    scores = fit.decision_scores(x)[g]
    column = {int(c): i for i, c in enumerate(fit.classes)}
    y_col = np.array([column.get(int(label), -1) for label in y])  # -1: a class never seen in training
    predicted = fit.classes[scores.argmax(axis=1)]
    metrics: dict[str, float | None] = {
        "top1": topk_accuracy(scores, y_col, 1),
        "top5": topk_accuracy(scores, y_col, 5),
        "mean_per_class_recall": mean_per_class_recall(y, predicted),
    }
    if ci_seed is not None:
        metrics.update(accuracy_ci_fields("top1", topk_hits(scores, y_col, 1), seed=ci_seed))
        metrics.update(accuracy_ci_fields("top5", topk_hits(scores, y_col, 5), seed=ci_seed))
        metrics.update(
            ci_fields("mean_per_class_recall", mean_per_class_recall_ci(y, predicted, seed=ci_seed))
        )
    return metrics


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Select C on val, refit on train+val, report test. The fit is deterministic; `seed` seeds only the
    bootstrap intervals."""
    config = get_protocol("linear_probe").resolve_config(config)
    grid, options = resolve_grid(config, "linear_probe"), solver_options(config, "linear_probe")
    splits = {}
    for name in ("train", "val", "test"):
        x, y = check_features(*ctx.features(name), f"linear_probe: split {name!r}")
        splits[name] = (l2_normalize(x), y)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits["train"], splits["val"], splits["test"]
    ctx.progress(0, 2, f"linear probe: fitting {len(grid)} C values, refit at the chosen one")
    selected = select_and_refit(x_tr, y_tr, x_va, y_va, grid, options)
    chosen_C, final = selected.chosen_C, selected.final
    if chosen_C in (grid.min(), grid.max()):
        log.warning(
            "linear_probe: chosen C=%.3g is at the edge of the grid; the optimum may lie beyond it", chosen_C
        )
    ctx.progress(1, 2, f"linear probe: scoring test at C={chosen_C:.3g}")
    metrics: dict[str, Any] = classification_metrics(final, 0, x_te, y_te, ci_seed=seed)
    ctx.progress(2, 2, "linear probe: done")
    metrics.update(
        val_top1=float(selected.val_accuracy[selected.chosen]),
        chosen_C=chosen_C,
        n_train=int(len(y_tr)),
        n_val=int(len(y_va)),
        n_test=int(len(y_te)),
        converged=bool(final.converged[0] and selected.sweep.converged[selected.chosen]),
        n_iter=int(final.n_iter[0]),
    )
    return metrics
