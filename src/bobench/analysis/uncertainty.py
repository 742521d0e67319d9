"""Uncertainty of the rankings: rank intervals and statistically tied backbones (a bootstrap of the whole aggregation).

Each replicate redraws every (setting, backbone) value and redoes the BoB aggregation (z-scores with
the population std, task means, overall mean), then ranks the backbones:

- a value whose runs carry a confidence interval (`<metric>_ci_low/_ci_high`) is drawn from the normal
  distribution that interval describes (sd = width / (2 x 1.96)); with several seeds the seeds are
  also resampled and the interval's sd is divided by sqrt(seeds);
- a value without an interval but with several seeds is the mean of its seeds resampled with
  replacement;
- any other value (one seed of an older record, an external score) is held fixed.

A backbone's rank interval is the 2.5 % and 97.5 % quantiles of its rank over the replicates (rank
1 = best, a backbone's rank = 1 + the number of backbones with a strictly higher score). Two
backbones are *not distinguishable at 95 %* when the 95 % interval of their score difference over
the replicates contains 0. The bootstrap is seeded, so an analysis is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bobench.analysis.aggregate import Setting, rankable
from bobench.errors import InvalidArgument

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
_Z95 = 1.959963984540054
_FLAT_STD_REL = 1e-12


@dataclass(frozen=True)
class RankUncertainty:
    """Rank intervals and ties of one ranking (the overall one or one task's)."""

    rank_interval: dict[str, tuple[int, int]]
    tied_with: dict[str, list[str]]  # backbone -> others whose scores it cannot be told apart from


@dataclass(frozen=True)
class Replicates:
    """Bootstrapped task scores: `task_scores[task]` is (resamples, backbones); NaN = not in the task."""

    backbones: list[str]
    task_scores: dict[str, np.ndarray]

    def overall(self) -> np.ndarray:
        """(resamples, backbones) overall scores: the mean over the tasks each backbone has."""
        if not self.task_scores:
            return np.zeros((0, len(self.backbones)))
        stacked = np.stack(list(self.task_scores.values()))  # (tasks, R, B)
        present = ~np.isnan(stacked)
        total = np.where(present, stacked, 0.0).sum(axis=0)
        count = present.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def replicate_task_scores(
    settings: Iterable[Setting], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Replicates:
    """Redraw every rankable setting `resamples` times and recompute the task scores. Raises
    InvalidArgument for resamples < 2."""
    chosen = rankable(settings)
    return aggregate_draws(chosen, draw_values(chosen, resamples, seed))


def draw_values(settings: Sequence[Setting], resamples: int, seed: int) -> list[np.ndarray]:
    """Per setting, a (resamples, backbones in `setting.values` order) matrix of redrawn values."""
    if resamples < 2:
        raise InvalidArgument(f"rank intervals need at least 2 resamples, got {resamples}")
    rng = np.random.default_rng(seed)
    return [np.stack([_draw(v, resamples, rng) for v in s.values.values()], axis=1) for s in settings]


def aggregate_draws(settings: Sequence[Setting], drawn: Sequence[np.ndarray]) -> Replicates:
    """The BoB aggregation (z-scores, task means) of every replicate at once."""
    backbones = sorted({b for s in settings for b in s.values})
    col = {b: i for i, b in enumerate(backbones)}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for s, values in zip(settings, drawn, strict=True):
        z = np.full((values.shape[0], len(backbones)), np.nan)
        z[:, [col[b] for b in s.values]] = _zscores(values, s.higher_is_better)
        task = s.key.task
        sums.setdefault(task, np.zeros_like(z))
        counts.setdefault(task, np.zeros(z.shape))
        sums[task] += np.nan_to_num(z)
        counts[task] += ~np.isnan(z)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = {t: np.where(counts[t] > 0, sums[t] / counts[t], np.nan) for t in sorted(sums)}
    return Replicates(backbones, scores)


def _draw(value, resamples: int, rng: np.random.Generator) -> np.ndarray:
    seeds = np.asarray(value.seed_values or (value.mean,), dtype=np.float64)
    if seeds.size > 1:
        drawn = seeds[rng.integers(0, seeds.size, size=(resamples, seeds.size))].mean(axis=1)
    else:
        drawn = np.full(resamples, value.mean)
    if value.ci is not None:
        sd = (value.ci[1] - value.ci[0]) / (2 * _Z95) / np.sqrt(seeds.size)
        drawn = drawn + sd * rng.standard_normal(resamples)
    return drawn


def _zscores(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Row-wise population z-scores of (resamples, n) values; 0 where a row is flat."""
    mean = values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    flat = std <= _FLAT_STD_REL * np.maximum(1.0, np.abs(mean))
    z = np.where(flat, 0.0, (values - mean) / np.where(flat, 1.0, std))
    return z if higher_is_better else -z


def rank_uncertainty(scores: np.ndarray, backbones: Sequence[str], keep: Iterable[str]) -> RankUncertainty:
    """Rank intervals and ties among `keep` from (resamples, len(backbones)) replicate scores."""
    names = [b for b in backbones if b in set(keep)]
    if not names:
        return RankUncertainty({}, {})
    cols = [list(backbones).index(b) for b in names]
    sub = scores[:, cols]
    if np.isnan(sub).any():
        raise InvalidArgument("rank intervals: a ranked backbone has no score in some replicate")
    better = (sub[:, None, :] > sub[:, :, None]).sum(axis=2)  # (R, B): how many score strictly higher
    ranks = 1 + better
    alpha = (1 - CONFIDENCE) / 2
    lows = np.quantile(ranks, alpha, axis=0, method="lower")
    highs = np.quantile(ranks, 1 - alpha, axis=0, method="higher")
    interval = {b: (int(lo), int(hi)) for b, lo, hi in zip(names, lows, highs, strict=True)}
    tied: dict[str, list[str]] = {b: [] for b in names}
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            diff = sub[:, i] - sub[:, j]
            lo, hi = np.quantile(diff, [alpha, 1 - alpha])
            if lo <= 0.0 <= hi:
                tied[a].append(names[j])
                tied[names[j]].append(a)
    return RankUncertainty(interval, tied)
