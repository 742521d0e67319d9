"""Metric and input-checking helpers shared by the feature-based protocols.

Every protocol reads (features, labels) from the feature cache; these helpers make the checks and
the metric definitions identical across linear probe, kNN, few-shot and retrieval, so that a
"top1" means the same thing wherever it appears.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument


def check_features(x: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split's features and labels and return them as (float32 [n, d], int64 [n]).

    `where` names the source for error messages (e.g. "linear_probe: split 'train'"). Raises
    InvalidArgument for a wrong shape, a length mismatch, an empty split, a non-finite feature (naming
    the first bad row) or a negative / non-integer label (naming the row).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2:
        raise InvalidArgument(f"{where}: features must be 2-D [n, d], got shape {list(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise InvalidArgument(
            f"{where}: labels must be 1-D with one label per feature row; got labels {list(y.shape)} "
            f"for features {list(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidArgument(f"{where}: empty features {list(x.shape)}")
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidArgument(f"{where}: feature row {row} has a NaN or infinite value")
    if y.dtype.kind == "f":
        bad = np.flatnonzero(y != np.round(y))
        if bad.size:
            raise InvalidArgument(f"{where}: label at row {int(bad[0])} is not an integer ({y[bad[0]]!r})")
    elif y.dtype.kind not in "iu":
        raise InvalidArgument(f"{where}: labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    negative = np.flatnonzero(y < 0)
    if negative.size:
        raise InvalidArgument(f"{where}: label at row {int(negative[0])} is negative ({int(y[negative[0]])})")
    return x, y


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32). An all-zero row stays zero rather than becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def class_ranking(scores: np.ndarray) -> np.ndarray:
    """Column indices of `scores` [n, K] ordered best first; ties go to the lower column index."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")


def topk_accuracy(scores: np.ndarray, y: np.ndarray, k: int) -> float | None:
    """Share of rows whose true column `y` is among the k highest `scores` (ties: lower column first).

    Returns None when k exceeds the number of columns (the figure would be trivially 1).
    """
    scores = np.asarray(scores)
    if k > scores.shape[1]:
        return None
    top = class_ranking(scores)[:, :k]
    return float((top == np.asarray(y)[:, None]).any(axis=1).mean())


def mean_per_class_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Recall averaged over the classes present in `y_true` (scikit-learn's balanced accuracy)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    recalls = [float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def n_classes(ctx: Any, *label_arrays: np.ndarray) -> int:
    """Number of classes: the dataset's class list when the context has one, else max label + 1."""
    top = max(int(y.max()) for y in label_arrays if len(y)) + 1
    classes = getattr(getattr(ctx, "dataset", None), "classes", None)
    return max(top, len(classes)) if classes is not None else top


def positive_float(value: Any, where: str) -> float:
    """`value` as a float > 0, or InvalidArgument naming `where`."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{where} must be a number, got {value!r}") from None
    if not np.isfinite(out) or out <= 0:
        raise InvalidArgument(f"{where} must be > 0, got {value!r}")
    return out


def positive_ints(values: Any, where: str) -> list[int]:
    """A non-empty list of distinct positive ints, sorted, or InvalidArgument naming `where`."""
    if isinstance(values, int | np.integer):
        values = [values]
    if not isinstance(values, Iterable) or isinstance(values, str | bytes):
        raise InvalidArgument(f"{where} must be a list of positive integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0:
            raise InvalidArgument(f"{where} must hold positive integers, got {v!r}")
        out.append(int(v))
    if not out:
        raise InvalidArgument(f"{where} must not be empty")
    return sorted(set(out))
