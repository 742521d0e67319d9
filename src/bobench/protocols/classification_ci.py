"""Bootstrap confidence intervals of the classification figures (top-k accuracy, mean per-class recall).

Shared by the linear probe, kNN, few-shot and fine-tuning protocols: each computes per-test-image
outcomes once and resamples the test images (`bobench.bootstrap_ci`), so an interval costs a
few vectorised passes over a (resamples, n_test) index matrix, never a refit. Mean per-class recall is
recomputed on every resample over the classes present in that resample (scikit-learn's balanced
accuracy on the resampled set), so its interval covers both the per-class hits and the class mix.
"""

from __future__ import annotations

import numpy as np

from bobench.bootstrap_ci import bootstrap_ci, bootstrap_mean_ci, ci_fields
from bobench.errors import InvalidArgument
from bobench.protocols.metrics import class_ranking


def mean_per_class_recall_ci(
    y_true: np.ndarray, y_pred: np.ndarray, *, seed: int, resamples: int = 2000
) -> tuple[float, float]:
    """Percentile interval of the mean per-class recall of (y_true, y_pred) over resampled items.

    Raises InvalidArgument for empty or mismatched label arrays.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise InvalidArgument(
            f"mean per-class recall CI: need equal, non-empty label arrays, got {y_true.shape} and {y_pred.shape}"
        )
    classes, column = np.unique(y_true, return_inverse=True)
    hit = (y_pred == y_true).astype(np.float64)
    k = classes.size

    def statistic(idx: np.ndarray) -> np.ndarray:
        cells = np.arange(idx.shape[0])[:, None] * k + column[idx]
        counts = np.bincount(cells.ravel(), minlength=idx.shape[0] * k).reshape(-1, k)
        hits = np.bincount(cells.ravel(), weights=hit[idx].ravel(), minlength=idx.shape[0] * k).reshape(-1, k)
        present = counts > 0
        recall = np.divide(hits, counts, out=np.zeros_like(hits), where=present)
        return recall.sum(axis=1) / present.sum(axis=1)

    return bootstrap_ci(statistic, y_true.size, resamples=resamples, seed=seed)


def accuracy_ci_fields(name: str, hits: np.ndarray | None, *, seed: int) -> dict[str, float | None]:
    """`{name}_ci_low/high` of the mean of per-item 0/1 `hits`; None bounds when the figure is None."""
    if hits is None:
        return {f"{name}_ci_low": None, f"{name}_ci_high": None}
    return ci_fields(name, bootstrap_mean_ci(np.asarray(hits, dtype=np.float64), seed=seed))


def topk_hits(scores: np.ndarray, y_column: np.ndarray, k: int) -> np.ndarray | None:
    """Bool [n]: the true column `y_column` (-1: a class the model never saw) is among the k best
    scores (ties: lower column first, as `metrics.topk_accuracy`); None when k exceeds the columns."""
    scores = np.asarray(scores)
    if k > scores.shape[1]:
        return None
    top = class_ranking(scores)[:, :k]
    return (top == np.asarray(y_column)[:, None]).any(axis=1)
