"""Bootstrap intervals: reproducible, cover the truth at the nominal rate, match a plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.bootstrap_ci import bootstrap_ci, bootstrap_mean_ci, ci_fields, is_ci_field
from bobench.errors import InvalidArgument


def loop_reference(values: np.ndarray, resamples: int, seed: int, confidence: float = 0.95):
    """The textbook percentile bootstrap, one resample at a time, from the same random stream."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    means = [values[row].mean() for row in idx]
    return tuple(np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2]))


def test_vectorised_interval_equals_the_loop_reference():
    values = np.random.default_rng(3).random(500)
    assert bootstrap_mean_ci(values, resamples=400, seed=11) == pytest.approx(loop_reference(values, 400, 11))


def test_interval_is_seeded_and_brackets_the_estimate():
    correct = (np.random.default_rng(0).random(300) < 0.7).astype(float)
    a = bootstrap_mean_ci(correct, seed=5)
    assert a == bootstrap_mean_ci(correct, seed=5)
    assert a[0] < correct.mean() < a[1]
    assert 0.05 < a[1] - a[0] < 0.15  # ~ 2 * 1.96 * sqrt(0.21 / 300) = 0.104


def test_95_percent_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    trials = 300
    for t in range(trials):
        sample = (rng.random(200) < 0.6).astype(float)
        low, high = bootstrap_mean_ci(sample, resamples=500, seed=t)
        covered += low <= 0.6 <= high
    assert 0.90 <= covered / trials <= 0.99


def test_chunked_statistic_sees_every_resample():
    seen = []

    def stat(idx):
        seen.append(idx.shape)
        return idx.mean(axis=1)

    bootstrap_ci(stat, 10_000_000 // 1000, resamples=3000, seed=0)
    assert sum(rows for rows, _ in seen) == 3000


def test_fields_and_bad_input():
    fields = ci_fields("top1", (0.5, 0.75))
    assert fields == {"top1_ci_low": 0.5, "top1_ci_high": 0.75}
    assert all(is_ci_field(k) for k in fields) and not is_ci_field("top1")
    with pytest.raises(InvalidArgument, match="at least one item"):
        bootstrap_mean_ci(np.array([]))
    with pytest.raises(InvalidArgument, match="confidence"):
        bootstrap_mean_ci(np.ones(3), confidence=1.5)
    with pytest.raises(InvalidArgument, match="finite"):
        bootstrap_mean_ci(np.array([1.0, np.nan]))
