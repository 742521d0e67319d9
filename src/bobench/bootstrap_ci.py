"""Bootstrap confidence intervals over test items, shared by every protocol, fine-tuning and detection.

A metric computed on n test items (images, queries) gets a percentile bootstrap interval: the items are
resampled with replacement `resamples` times (seeded, so the interval is reproducible), the statistic
is recomputed on each resample, and the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of
those values are the interval. Resampling is vectorised: one (resamples, n) index matrix, no Python
loop over resamples, so thousands of resamples of a few thousand items take milliseconds.

Records carry an interval as two plain floats, `<metric>_ci_low` and `<metric>_ci_high` (see
`ci_fields`), plus the item count the interval is over (`n_test`, `n_queries`, ...), so every
consumer of a record's metrics (aggregation, CSV export) keeps seeing only numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bobench.errors import InvalidArgument

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
_MAX_CELLS = 20_000_000  # index-matrix cells per chunk (~160 MB of int64): bounds memory on big sets

Statistic = Callable[[np.ndarray], np.ndarray]  # (resamples, n) item indices -> (resamples,) values


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """A (resamples, n) matrix of item indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(
    statistic: Statistic,
    n: int,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of `statistic` over `n` items. `statistic` maps an index matrix to one value
    per row. Raises InvalidArgument for n < 1 or a confidence outside (0, 1)."""
    _check(n, resamples, confidence)
    rng = np.random.default_rng(seed)
    rows = max(1, min(resamples, _MAX_CELLS // max(n, 1)))
    values = []
    for start in range(0, resamples, rows):
        count = min(rows, resamples - start)
        values.append(np.asarray(statistic(rng.integers(0, n, size=(count, n))), dtype=np.float64))
    return _interval(np.concatenate(values), confidence)


def bootstrap_mean_ci(
    values: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval of the mean of per-item `values` (e.g. 1.0/0.0 correctness, a query's AP)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise InvalidArgument("bootstrap: per-item values must be finite")
    return bootstrap_ci(
        lambda idx: v[idx].mean(axis=1), v.size, resamples=resamples, confidence=confidence, seed=seed
    )


def ci_fields(name: str, interval: tuple[float, float]) -> dict[str, float]:
    """`{name}_ci_low` / `{name}_ci_high` entries for a record's metrics."""
    low, high = interval
    return {f"{name}_ci_low": float(low), f"{name}_ci_high": float(high)}


def is_ci_field(metric: str) -> bool:
    """Whether a metric name is an interval bound written by `ci_fields`."""
    return metric.endswith(("_ci_low", "_ci_high"))


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _check(n: int, resamples: int, confidence: float) -> None:
    if n < 1:
        raise InvalidArgument(f"bootstrap: need at least one item, got {n}")
    if resamples < 1:
        raise InvalidArgument(f"bootstrap: resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise InvalidArgument(f"bootstrap: confidence must be in (0, 1), got {confidence}")
