"""Battle-of-the-Backbones aggregation: settings, seed means, z-scores, task and overall scores, ranks.

The rules (they are also printed in the report):

- A setting is (task, dataset, protocol, metric) where metric is the run's `primary_metric`. Only
  finished runs of non-cost tasks count; a run whose primary metric is missing or not a finite number
  is skipped with a warning. Cost tasks ("efficiency", "serving") are never ranked; they feed the
  latency/params columns (`bobench.analysis.costs`).
- Seeds are averaged first: one value per (setting, backbone).
- Each backbone's value is z-scored across the backbones evaluated in that setting, with the
  population standard deviation. A setting whose values are all equal (std <= 1e-12 x max(1, |mean|))
  gives z = 0 to every backbone. A setting with a single backbone (e.g. fine-tuning only one small
  backbone) compares nothing: it is reported but left out of task and overall scores and coverage,
  so it neither lifts nor drags that backbone towards 0.
- The sign is flipped when lower is better, so a higher z is always better.
- A backbone's task score is the mean of its z over the settings of that task it has; its overall
  score is the mean of its task scores (every task weighs the same, however many settings it has).
- Missing data: a backbone is averaged over the settings it has. Its coverage is
  settings present / all settings.
- Ranks: 1 = best; scores equal to 12 decimals share the smallest rank of their group ("1, 2, 2, 4").
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from bobench.analysis.external import ExternalScore
from bobench.battle.records import RunRecord
from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)

COST_TASKS = frozenset({"efficiency", "serving"})
_FLAT_STD_REL = 1e-12
_TIE_DECIMALS = 12


@dataclass(frozen=True, order=True)
class SettingKey:
    """(task, dataset, protocol, metric): the unit that z-scores are computed over."""

    task: str
    dataset: str
    protocol: str
    metric: str

    def label(self) -> str:
        return f"{self.task}/{self.dataset}/{self.protocol}:{self.metric}"


@dataclass(frozen=True)
class Observation:
    """One ranked value: a seed of a finished run, or one external CSV row."""

    backbone: str
    setting: SettingKey
    value: float
    higher_is_better: bool
    source: str  # "run <run_key>" or "<file> row <n>"
    external: bool = False


@dataclass(frozen=True)
class BackboneValue:
    """A backbone's seed-averaged value in one setting and its z-score."""

    mean: float
    std: float | None  # sample std over seeds; None with one seed
    n_seeds: int
    z: float
    external: bool


@dataclass(frozen=True)
class Setting:
    """One setting with every backbone evaluated in it."""

    key: SettingKey
    higher_is_better: bool
    values: dict[str, BackboneValue]


def observations_from_records(records: Iterable[RunRecord]) -> list[Observation]:
    """The ranked observations in `records`: finished runs of non-cost tasks with a usable primary metric."""
    out = []
    for rec in records:
        if not rec.finished or rec.task in COST_TASKS:
            continue
        where = f"run {rec.run_key} ({rec.backbone}, {rec.task}/{rec.dataset}/{rec.protocol})"
        metric = rec.primary_metric
        if not metric:
            log.warning("%s: no primary_metric; not ranked", where)
            continue
        value = rec.metrics.get(metric)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            log.warning("%s: primary metric %r is %r, not a finite number; not ranked", where, metric, value)
            continue
        if metric not in rec.higher_is_better:
            raise InvalidArgument(f"{where}: higher_is_better has no entry for primary metric {metric!r}")
        key = SettingKey(rec.task, rec.dataset, rec.protocol, metric)
        out.append(
            Observation(
                rec.backbone, key, float(value), bool(rec.higher_is_better[metric]), f"run {rec.run_key}"
            )
        )
    return out


def observations_from_external(rows: Iterable[ExternalScore]) -> list[Observation]:
    """The ranked observations among external rows (cost-task rows are left to the costs module)."""
    return [
        Observation(
            r.backbone,
            SettingKey(r.task, r.dataset, r.protocol, r.metric),
            r.value,
            r.higher_is_better,
            r.source,
            external=True,
        )
        for r in rows
        if r.task not in COST_TASKS
    ]


def build_settings(observations: Iterable[Observation]) -> list[Setting]:
    """Group observations into settings, average seeds, z-score. Sorted by setting key.

    Raises InvalidArgument when observations of one setting disagree on the metric's direction, or
    when an external row names a backbone that was also measured in the same setting (rename one).
    """
    grouped: dict[SettingKey, dict[str, list[Observation]]] = defaultdict(lambda: defaultdict(list))
    direction: dict[SettingKey, Observation] = {}
    for obs in observations:
        first = direction.setdefault(obs.setting, obs)
        if obs.higher_is_better != first.higher_is_better:
            raise InvalidArgument(
                f"{obs.source}: setting {obs.setting.label()} has higher_is_better={obs.higher_is_better}, "
                f"but {first.source} says {first.higher_is_better}"
            )
        grouped[obs.setting][obs.backbone].append(obs)
    settings = []
    for key in sorted(grouped):
        per_backbone = grouped[key]
        means: dict[str, float] = {}
        for backbone, group in per_backbone.items():
            if len({o.external for o in group}) > 1:
                ext = next(o for o in group if o.external)
                raise InvalidArgument(
                    f"{ext.source}: backbone {backbone!r} is also measured in setting {key.label()}; "
                    "give the external backbone a distinct name"
                )
            means[backbone] = float(np.mean([o.value for o in group]))
        hib = direction[key].higher_is_better
        z = zscores(means, hib)
        values = {
            b: BackboneValue(
                mean=means[b],
                std=float(np.std([o.value for o in g], ddof=1)) if len(g) > 1 else None,
                n_seeds=len(g),
                z=z[b],
                external=g[0].external,
            )
            for b, g in sorted(per_backbone.items())
        }
        settings.append(Setting(key, hib, values))
    return settings


def zscores(values: Mapping[str, float], higher_is_better: bool) -> dict[str, float]:
    """Population z-score of each value, sign-flipped when lower is better; all 0 when flat or single."""
    names = list(values)
    arr = np.array([values[n] for n in names], dtype=np.float64)
    if arr.size < 2:
        return dict.fromkeys(names, 0.0)
    mean = float(arr.mean())
    std = float(arr.std())  # ddof=0: population std, as in the paper
    if std <= _FLAT_STD_REL * max(1.0, abs(mean)):
        return dict.fromkeys(names, 0.0)
    sign = 1.0 if higher_is_better else -1.0
    return {n: sign * (float(v) - mean) / std for n, v in zip(names, arr, strict=True)}


def rankable(settings: Iterable[Setting]) -> list[Setting]:
    """Settings that compare at least two backbones (the others carry no ranking signal)."""
    return [s for s in settings if len(s.values) >= 2]


def task_scores(settings: Iterable[Setting]) -> dict[str, dict[str, float]]:
    """task -> backbone -> mean z over that task's settings the backbone has."""
    zs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in rankable(settings):
        for backbone, v in s.values.items():
            zs[s.key.task][backbone].append(v.z)
    return {t: {b: float(np.mean(z)) for b, z in sorted(per.items())} for t, per in sorted(zs.items())}


def overall_scores(per_task: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """backbone -> mean of its task scores over the tasks it has."""
    collected: dict[str, list[float]] = defaultdict(list)
    for scores in per_task.values():
        for backbone, score in scores.items():
            collected[backbone].append(score)
    return {b: float(np.mean(s)) for b, s in sorted(collected.items())}


def coverage(settings: Iterable[Setting], task: str | None = None) -> tuple[dict[str, int], int]:
    """(backbone -> number of settings it has, total settings), optionally within one task."""
    chosen = [s for s in rankable(settings) if task is None or s.key.task == task]
    counts: dict[str, int] = defaultdict(int)
    for s in chosen:
        for backbone in s.values:
            counts[backbone] += 1
    return dict(counts), len(chosen)


def competition_ranks(scores: Mapping[str, float]) -> list[tuple[str, float, int]]:
    """(backbone, score, rank) best first; ties (equal to 12 decimals) share the min rank; names break order."""
    ordered = sorted(scores.items(), key=lambda kv: (-round(kv[1], _TIE_DECIMALS), kv[0]))
    out: list[tuple[str, float, int]] = []
    for i, (name, score) in enumerate(ordered):
        tied = out and round(out[-1][1], _TIE_DECIMALS) == round(score, _TIE_DECIMALS)
        out.append((name, score, out[-1][2] if tied else i + 1))
    return out


def spearman(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Spearman rho (Pearson correlation of average ranks); None for < 3 pairs or a constant side."""
    a = np.asarray(list(x), dtype=np.float64)
    b = np.asarray(list(y), dtype=np.float64)
    if a.shape != b.shape:
        raise InvalidArgument(f"spearman: lengths differ ({a.size} vs {b.size})")
    if a.size < 3:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    if denom == 0.0:
        return None
    return float((ra * rb).sum() / denom)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ascending, with tied values sharing the average of their positions."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_vals = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_vals[end + 1] == sorted_vals[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks
