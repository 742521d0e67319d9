"""Battle-of-the-Backbones aggregation: settings, seed means, z-scores, task and overall scores, ranks.

The rules (they are also printed in the report):

- A setting is (task, dataset, protocol, metric) where metric is the run's `primary_metric`, made
  exact by the protocol version, a digest of the resolved protocol config and the dataset
  fingerprint: runs that differ in any of these are never averaged together. When one (task, dataset,
  protocol, metric) has several such variants (two kNN configs, protocol versions 1 and 2, a dataset
  edited in place), each is its own setting, labelled with what differs. An external score (which
  carries no version, config or fingerprint) joins the measured setting of the same name when there
  is exactly one such variant. Only finished runs of non-cost tasks count; a run whose primary
  metric is missing or not a finite number is skipped with a warning. Cost tasks ("efficiency", "serving") are never ranked; they feed the
  latency/params columns (`bobench.analysis.costs`).
- Seeds are averaged first: one value per (setting, backbone).
- Each backbone's value is z-scored across the backbones evaluated in that setting, with the
  population standard deviation (ddof = 0). This is this project's choice: the BoB paper does not
  say which standard deviation it uses. A setting whose values are all equal (std <= 1e-12 x max(1, |mean|))
  gives z = 0 to every backbone. A setting with a single backbone (e.g. fine-tuning only one small
  backbone) compares nothing: it is reported but left out of task and overall scores and coverage,
  so it neither lifts nor drags that backbone towards 0.
- The sign is flipped when lower is better, so a higher z is always better.
- Tasks come from the task map: "records" (default) uses each run's own task (linear probe and kNN
  are "classification", fine-tuning is "finetune", detection and instance segmentation are
  "detection", OOD detection is "ood"); "bob" follows Battle of the Backbones, where fine-tuning and
  linear probing are both classification settings and detection, instance segmentation and OOD
  detection are grouped as above. The report names the map used.
- A backbone's task score is the mean of its z over the settings of that task it has; its overall
  score is the mean of its task scores (every task weighs the same, however many settings it has).
- Missing data: a backbone is averaged over the settings it has. Its coverage is
  settings present / all settings.
- Ranks: 1 = best; scores equal to 12 decimals share the smallest rank of their group ("1, 2, 2, 4").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from bobench.analysis.external import ExternalScore
from bobench.errors import InvalidArgument
from bobench.hashing import CONFIG_DIGEST_HEX, json_digest
from bobench.results import RunRecord

log = logging.getLogger(__name__)

COST_TASKS = frozenset({"efficiency", "serving"})
ITEM_COUNT_KEYS = ("n_test", "n_queries")  # the metric fields that say how many items a value is over
# task map name -> {protocol name: task}; protocols not listed keep the task their records carry
TASK_MAPS: dict[str, dict[str, str]] = {
    "records": {},
    "bob": {
        "linear_probe": "classification",
        "finetune": "classification",
        "knn": "classification",
        "detection": "detection",
        "instance_segmentation": "detection",
        "ood_detection": "ood",
    },
}
DEFAULT_TASK_MAP = "records"
_FLAT_STD_REL = 1e-12
_TIE_DECIMALS = 12


@dataclass(frozen=True, order=True)
class SettingKey:
    """(task, dataset, protocol, metric) + (protocol version, config digest, dataset fingerprint).

    The unit that z-scores are computed over. The last three are "" where unknown (external rows).
    """

    task: str
    dataset: str
    protocol: str
    metric: str
    protocol_version: str = ""
    config_digest: str = ""
    dataset_fingerprint: str = ""

    @property
    def base(self) -> SettingKey:
        """The key without version, config and fingerprint (what older analyses called a setting)."""
        return SettingKey(self.task, self.dataset, self.protocol, self.metric)

    def label(self) -> str:
        return f"{self.task}/{self.dataset}/{self.protocol}:{self.metric}"

    def variant(self) -> str:
        """ "v<version> cfg <digest> data <fingerprint[:8]>" (parts that are known)."""
        parts = [f"v{self.protocol_version}" if self.protocol_version else ""]
        parts.append(f"cfg {self.config_digest}" if self.config_digest else "")
        parts.append(f"data {self.dataset_fingerprint[:8]}" if self.dataset_fingerprint else "")
        return " ".join(p for p in parts if p)


def config_digest(config: Mapping[str, object]) -> str:
    """First 8 hex digits of the sha256 of the resolved config as sorted JSON."""
    return json_digest(config, CONFIG_DIGEST_HEX)


@dataclass(frozen=True)
class Observation:
    """One ranked value: a seed of a finished run, or one external CSV row."""

    backbone: str
    setting: SettingKey
    value: float
    higher_is_better: bool
    source: str  # "run <run_key>" or "<file> row <n>"
    external: bool = False
    ci: tuple[float, float] | None = None  # the record's <metric>_ci_low/_ci_high, when it has them
    n_items: int | None = None  # test items the value is over (n_test, n_queries), when recorded


@dataclass(frozen=True)
class BackboneValue:
    """A backbone's seed-averaged value in one setting and its z-score."""

    mean: float
    std: float | None  # sample std over seeds; None with one seed
    n_seeds: int
    z: float
    external: bool
    seed_values: tuple[float, ...] = ()
    ci: tuple[float, float] | None = None  # mean over seeds of the per-run interval bounds
    n_items: int | None = None  # test items per run (the smallest over seeds)


@dataclass(frozen=True)
class Setting:
    """One setting with every backbone evaluated in it."""

    key: SettingKey
    higher_is_better: bool
    values: dict[str, BackboneValue]
    variant_label: str = ""  # set when another setting shares this one's (task, dataset, protocol, metric)

    def label(self) -> str:
        return self.key.label() + (f" [{self.variant_label}]" if self.variant_label else "")


def task_of(protocol: str, recorded_task: str, task_map: str = DEFAULT_TASK_MAP) -> str:
    """The task a run counts under in `task_map`. Raises InvalidArgument for an unknown map."""
    return _task_map(task_map).get(protocol, recorded_task)


def _task_map(name: str) -> dict[str, str]:
    if name not in TASK_MAPS:
        raise InvalidArgument(f"unknown task map {name!r}; choose one of {sorted(TASK_MAPS)}")
    return TASK_MAPS[name]


def observations_from_records(
    records: Iterable[RunRecord], task_map: str = DEFAULT_TASK_MAP
) -> list[Observation]:
    """The ranked observations in `records`: finished runs of non-cost tasks with a usable primary metric."""
    _task_map(task_map)  # an unknown map is an error even when no record would use it
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
        key = setting_key(rec, task_map)
        hib = bool(rec.higher_is_better[metric])
        out.append(
            Observation(
                rec.backbone,
                key,
                float(value),
                hib,
                f"run {rec.run_key}",
                ci=_ci(rec.metrics, metric),
                n_items=_n_items(rec.metrics),
            )
        )
    return out


def setting_key(rec: RunRecord, task_map: str = DEFAULT_TASK_MAP) -> SettingKey:
    """The setting a record's primary metric counts in (its task under `task_map`)."""
    return SettingKey(
        task_of(rec.protocol, rec.task, task_map),
        rec.dataset,
        rec.protocol,
        rec.primary_metric or "",
        str(rec.protocol_version or ""),
        config_digest(rec.config or {}),
        rec.dataset_fingerprint or "",
    )


def _ci(metrics: Mapping[str, object], metric: str) -> tuple[float, float] | None:
    """The record's interval for `metric`, or None when it has none (older records) or a broken one."""
    low, high = metrics.get(f"{metric}_ci_low"), metrics.get(f"{metric}_ci_high")
    if not (_finite(low) and _finite(high)) or low > high:  # type: ignore[operator]
        return None
    return float(low), float(high)  # type: ignore[arg-type]


def _n_items(metrics: Mapping[str, object]) -> int | None:
    for key in ITEM_COUNT_KEYS:
        if _finite(metrics.get(key)):
            return int(metrics[key])  # type: ignore[call-overload]
    return None


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def observations_from_external(
    rows: Iterable[ExternalScore], task_map: str = DEFAULT_TASK_MAP
) -> list[Observation]:
    """The ranked observations among external rows (cost-task rows are left to the costs module)."""
    return [
        Observation(
            r.backbone,
            SettingKey(task_of(r.protocol, r.task, task_map), r.dataset, r.protocol, r.metric),
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
    observations = _attach_external(list(observations))
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
    variants: dict[SettingKey, int] = defaultdict(int)
    for key in grouped:
        variants[key.base] += 1
    settings = []
    for key in sorted(grouped):
        hib = direction[key].higher_is_better
        label = key.variant() if variants[key.base] > 1 else ""
        settings.append(Setting(key, hib, _values(key, grouped[key], hib), label))
    return settings


def _attach_external(observations: list[Observation]) -> list[Observation]:
    """External observations moved into the one measured variant of their setting, if there is one."""
    measured: dict[SettingKey, set[SettingKey]] = defaultdict(set)
    for o in observations:
        if not o.external:
            measured[o.setting.base].add(o.setting)
    out = []
    for o in observations:
        candidates = measured.get(o.setting, set()) if o.external else set()
        if len(candidates) == 1:
            o = dataclasses.replace(o, setting=next(iter(candidates)))
        out.append(o)
    return out


def _values(
    key: SettingKey, per_backbone: dict[str, list[Observation]], hib: bool
) -> dict[str, BackboneValue]:
    means: dict[str, float] = {}
    for backbone, group in per_backbone.items():
        if len({o.external for o in group}) > 1:
            ext = next(o for o in group if o.external)
            raise InvalidArgument(
                f"{ext.source}: backbone {backbone!r} is also measured in setting {key.label()}; "
                "give the external backbone a distinct name"
            )
        means[backbone] = float(np.mean([o.value for o in group]))
    z = zscores(means, hib)
    return {
        b: BackboneValue(
            mean=means[b],
            std=float(np.std([o.value for o in g], ddof=1)) if len(g) > 1 else None,
            n_seeds=len(g),
            z=z[b],
            external=g[0].external,
            seed_values=tuple(o.value for o in g),
            ci=_mean_ci(g),
            n_items=min((o.n_items for o in g if o.n_items is not None), default=None),
        )
        for b, g in sorted(per_backbone.items())
    }


def _mean_ci(group: list[Observation]) -> tuple[float, float] | None:
    """Mean of the seeds' interval bounds; None unless every seed has an interval."""
    cis = [o.ci for o in group]
    if not cis or any(c is None for c in cis):
        return None
    return float(np.mean([c[0] for c in cis])), float(np.mean([c[1] for c in cis]))  # type: ignore[index]


def zscores(values: Mapping[str, float], higher_is_better: bool) -> dict[str, float]:
    """Population z-score of each value, sign-flipped when lower is better; all 0 when flat or single."""
    names = list(values)
    arr = np.array([values[n] for n in names], dtype=np.float64)
    if arr.size < 2:
        return dict.fromkeys(names, 0.0)
    mean = float(arr.mean())
    std = float(arr.std())  # ddof=0: population std, this project's choice (see the module doc)
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
