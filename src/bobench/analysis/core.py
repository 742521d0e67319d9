"""`analyze(records)` -> Analysis: leaderboards, task correlations, RQ2 breakdowns, Pareto fronts, RQ4.

Minimum-coverage rule: a backbone whose coverage (settings it has / all settings) is below
`min_coverage` still takes part in every setting's z-scores (its measurements are real), but it is
not ranked in the overall leaderboard, nor counted in the by-method/by-family means, Pareto fronts
and recommendations; it is listed in `Analysis.excluded` with its partial score. Per-task
leaderboards rank every backbone with data for the task and show its coverage within the task.

Task correlation: Spearman rho between two tasks' scores over the backbones scored on both; None
(NaN in plots) when fewer than 3 backbones are common or one side is constant, including on the
diagonal. With fewer than MIN_CORRELATION_BACKBONES common backbones a rho is too noisy to read
(with 4 backbones, rho = 0.8 is one swapped pair away from 0.4): the heatmap is not drawn and the
report flags the cells.

OOD corruption error: `Analysis.ood_mce` holds mCE and relative mCE per OOD setting against a
reference backbone, beside (not in) the ranking (`bobench.analysis.corruption`).

Detection: `Analysis.detection` holds AP per regime and backbone, the fine-tuned-minus-frozen gap per
architecture family and the OOD-detection figures (`bobench.analysis.detection`); the detection runs
also rank, as the "detection" task (and "ood" for ood_detection), like any other protocol.

Uncertainty: every overall and per-task entry carries `rank_low`/`rank_high` (its 95 % rank
interval) and `tied_with` (backbones whose scores it cannot be told apart from at 95 %), from a
seeded bootstrap of the whole aggregation (`bobench.analysis.uncertainty`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import bobench.analysis.aggregate as agg
import bobench.analysis.uncertainty as unc
from bobench.analysis.corruption import MceTable, ood_mce
from bobench.analysis.costs import BackboneCosts, CostBasis, collect_costs
from bobench.analysis.detection import DetectionSummary, summarize_detection
from bobench.analysis.external import ExternalScore
from bobench.errors import InvalidArgument
from bobench.results import RunRecord, RunStatus

DEFAULT_MIN_COVERAGE = 0.5
MIN_CORRELATION_BACKBONES = 5
PARETO_COSTS = ("latency_ms", "served_latency_ms", "params", "flops")


@dataclass(frozen=True)
class CorrelationMatrix:
    """Symmetric task x task Spearman matrix; `rho[i][j]` is None where undefined (see module doc)."""

    tasks: list[str]
    rho: list[list[float | None]]
    n_common: list[list[int]]

    def get(self, a: str, b: str) -> float | None:
        return self.rho[self._index(a)][self._index(b)]

    def _index(self, task: str) -> int:
        try:
            return self.tasks.index(task)
        except ValueError:
            raise InvalidArgument(f"unknown task {task!r}; tasks: {self.tasks}") from None

    def to_json(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "rho": self.rho, "n_common": self.n_common}


@dataclass
class Analysis:
    """Everything the leaderboard, report and recommender show. Entries are plain dicts, best first."""

    settings: list[agg.Setting]
    task_scores: dict[str, dict[str, float]]
    overall: list[dict[str, Any]]
    excluded: list[dict[str, Any]]
    per_task: dict[str, list[dict[str, Any]]]
    task_correlation: CorrelationMatrix
    by_method: dict[str, dict[str, Any]]
    by_family: dict[str, dict[str, Any]]
    costs: dict[str, BackboneCosts]
    backbone_info: dict[str, dict[str, Any]]
    environments: list[dict[str, Any]]
    failed_runs: list[dict[str, Any]]
    run_counts: dict[str, int]
    min_coverage: float
    cost_basis: dict[str, CostBasis] = field(default_factory=dict)
    task_map: str = agg.DEFAULT_TASK_MAP
    resamples: int = unc.DEFAULT_RESAMPLES
    ood_mce: list[MceTable] = field(default_factory=list)  # per OOD setting (analysis.corruption)
    detection: DetectionSummary = field(default_factory=DetectionSummary)  # (analysis.detection)

    @property
    def correlation_meaningful(self) -> bool:
        """Whether some pair of tasks shares at least MIN_CORRELATION_BACKBONES backbones."""
        n = self.task_correlation.n_common
        return any(
            n[i][j] >= MIN_CORRELATION_BACKBONES for i in range(len(n)) for j in range(len(n)) if i != j
        )

    @property
    def tasks(self) -> list[str]:
        return list(self.task_scores)

    def cost(self, backbone: str, column: str) -> float | None:
        c = self.costs.get(backbone)
        return c.get(column) if c is not None else None

    def pareto(self, x: str = "latency_ms", task: str | None = None) -> list[dict[str, Any]]:
        """Non-dominated ranked backbones (higher score, lower `x`), cheapest first.

        `x` is one of PARETO_COSTS; backbones without that cost are left out. A backbone is dominated
        when another is at least as good on both axes and strictly better on one.
        """
        if x not in PARETO_COSTS:
            raise InvalidArgument(f"pareto: x must be one of {PARETO_COSTS}, got {x!r}")
        points = [(e, self.cost(e["backbone"], x)) for e in self.ranked_entries(task)]
        points = [(e, c) for e, c in points if c is not None]
        front = [
            {**e, x: c}
            for e, c in points
            if not any(
                oc <= c and o["score"] >= e["score"] and (oc < c or o["score"] > e["score"])
                for o, oc in points
            )
        ]
        return sorted(front, key=lambda e: (e[x], -e["score"], e["backbone"]))

    def ranked_entries(self, task: str | None = None) -> list[dict[str, Any]]:
        """The ranked overall entries, or the per-task entries of those backbones when `task` is given."""
        if task is None:
            return self.overall
        if task not in self.per_task:
            raise InvalidArgument(f"unknown task {task!r}; tasks with scores: {self.tasks}")
        ranked = {e["backbone"] for e in self.overall}
        return [e for e in self.per_task[task] if e["backbone"] in ranked]

    def settings_table(self) -> list[dict[str, Any]]:
        """One row per (setting, backbone): value (seed mean), std, seeds, z, direction, external flag."""
        return settings_rows(self.settings)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no NaN): overall, per_task, excluded, settings, correlations, groups, costs."""
        return _clean(
            {
                "min_coverage": self.min_coverage,
                "task_map": self.task_map,
                "rank_interval_resamples": self.resamples,
                "cost_basis": {c: b.to_json() for c, b in self.cost_basis.items()},
                "overall": self.overall,
                "excluded": self.excluded,
                "per_task": self.per_task,
                "settings": self.settings_table(),
                "task_correlation": self.task_correlation.to_json(),
                "by_method": self.by_method,
                "by_family": self.by_family,
                "costs": {b: c.to_json() for b, c in self.costs.items()},
                "pareto": {x: self.pareto(x) for x in ("latency_ms", "served_latency_ms", "params")},
                "backbone_info": self.backbone_info,
                "environments": self.environments,
                "failed_runs": self.failed_runs,
                "run_counts": self.run_counts,
                "ood_mce": {t.label: t.to_json() for t in self.ood_mce},
                "detection": self.detection.to_json(),
            }
        )


def analyze(
    records: Iterable[RunRecord],
    external: Iterable[ExternalScore] = (),
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    task_map: str = agg.DEFAULT_TASK_MAP,
    resamples: int = unc.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Analysis:
    """Aggregate finished runs (plus external scores) into an Analysis; see the module doc for the rules.

    `task_map` is a key of `aggregate.TASK_MAPS`; `resamples` and `seed` drive the rank-interval
    bootstrap. Raises InvalidArgument for a `min_coverage` outside [0, 1], an unknown task map,
    resamples < 2, and inconsistent inputs (a metric direction that differs within a setting, an
    external backbone also measured in that setting).
    """
    if not 0.0 <= min_coverage <= 1.0:
        raise InvalidArgument(f"min_coverage must be in [0, 1], got {min_coverage}")
    records = list(records)
    external = list(external)
    settings = agg.build_settings(
        agg.observations_from_records(records, task_map) + agg.observations_from_external(external, task_map)
    )
    per_task_scores = agg.task_scores(settings)
    overall_scores = agg.overall_scores(per_task_scores)
    counts, total = agg.coverage(settings)
    external_only = _external_only(settings)

    def entry(backbone: str, score: float | None, rank: int | None, n: int, of: int) -> dict[str, Any]:
        return {
            "backbone": backbone,
            "score": score,
            "rank": rank,
            "coverage": n / of if of else 0.0,
            "n_settings": n,
            "n_settings_total": of,
            "external": backbone in external_only,
        }

    kept = {b: s for b, s in overall_scores.items() if total and counts[b] / total >= min_coverage}
    overall = [
        {**entry(b, s, r, counts[b], total), "n_tasks": _n_tasks(per_task_scores, b)}
        for b, s, r in agg.competition_ranks(kept)
    ]
    excluded = [
        {**entry(b, s, None, counts[b], total), "n_tasks": _n_tasks(per_task_scores, b)}
        for b, s, _ in agg.competition_ranks({b: s for b, s in overall_scores.items() if b not in kept})
    ]
    # backbones seen only in single-backbone settings: listed, never scored
    unscored = sorted({b for s in settings for b in s.values} - set(overall_scores))
    excluded += [{**entry(b, None, None, 0, total), "n_tasks": 0} for b in unscored]
    per_task = {}
    for task, scores in per_task_scores.items():
        task_counts, task_total = agg.coverage(settings, task)
        per_task[task] = [
            entry(b, s, r, task_counts[b], task_total) for b, s, r in agg.competition_ranks(scores)
        ]
    _add_uncertainty(settings, overall, per_task, resamples, seed)
    info = _backbone_info(records, external)
    costs, basis = collect_costs(records, external, info)
    return Analysis(
        settings=settings,
        task_scores=per_task_scores,
        overall=overall,
        excluded=excluded,
        per_task=per_task,
        task_correlation=task_correlation(per_task_scores),
        by_method=_group_means(overall, info, "pretraining_method"),
        by_family=_group_means(overall, info, "family"),
        costs=costs,
        backbone_info=info,
        environments=_environments(records),
        failed_runs=_failed(records),
        run_counts=_status_counts(records),
        min_coverage=min_coverage,
        cost_basis=basis,
        task_map=task_map,
        resamples=resamples,
        ood_mce=ood_mce(records, {s.key: s.label() for s in settings}, task_map),
        detection=summarize_detection(records),
    )


def _add_uncertainty(
    settings: list[agg.Setting],
    overall: list[dict[str, Any]],
    per_task: dict[str, list[dict[str, Any]]],
    resamples: int,
    seed: int,
) -> None:
    """Set rank_low/rank_high/tied_with on every ranked entry (see bobench.analysis.uncertainty)."""
    reps = unc.replicate_task_scores(settings, resamples, seed)
    rankings = [(reps.overall(), overall)] + [(reps.task_scores[t], per_task[t]) for t in per_task]
    for scores, entries in rankings:
        result = unc.rank_uncertainty(scores, reps.backbones, [e["backbone"] for e in entries])
        for e in entries:
            e["rank_low"], e["rank_high"] = result.rank_interval[e["backbone"]]
            e["tied_with"] = result.tied_with[e["backbone"]]


def task_correlation(per_task: dict[str, dict[str, float]]) -> CorrelationMatrix:
    """Spearman rho between every pair of tasks over their common backbones."""
    tasks = list(per_task)
    rho: list[list[float | None]] = [[None] * len(tasks) for _ in tasks]
    n_common = [[0] * len(tasks) for _ in tasks]
    for i, a in enumerate(tasks):
        for j in range(i, len(tasks)):
            b = tasks[j]
            common = sorted(set(per_task[a]) & set(per_task[b]))
            r = agg.spearman([per_task[a][k] for k in common], [per_task[b][k] for k in common])
            if i == j and r is not None:
                r = 1.0  # exactly 1, not 0.9999999999999998
            rho[i][j] = rho[j][i] = r
            n_common[i][j] = n_common[j][i] = len(common)
    return CorrelationMatrix(tasks, rho, n_common)


def settings_rows(settings: Iterable[agg.Setting]) -> list[dict[str, Any]]:
    """One row per (setting, backbone): the long table shown in the report and in analysis.json."""
    return [
        {
            "task": s.key.task,
            "dataset": s.key.dataset,
            "protocol": s.key.protocol,
            "metric": s.key.metric,
            "protocol_version": s.key.protocol_version,
            "config_digest": s.key.config_digest,
            "dataset_fingerprint": s.key.dataset_fingerprint,
            "variant": s.variant_label,
            "higher_is_better": s.higher_is_better,
            "backbone": b,
            "value": v.mean,
            "ci_low": v.ci[0] if v.ci else None,
            "ci_high": v.ci[1] if v.ci else None,
            "n_items": v.n_items,
            "std": v.std,
            "n_seeds": v.n_seeds,
            "z": v.z,
            "external": v.external,
        }
        for s in settings
        for b, v in s.values.items()
    ]


def _n_tasks(per_task: dict[str, dict[str, float]], backbone: str) -> int:
    return sum(backbone in scores for scores in per_task.values())


def _external_only(settings: list[agg.Setting]) -> set[str]:
    flags: dict[str, set[bool]] = defaultdict(set)
    for s in settings:
        for b, v in s.values.items():
            flags[b].add(v.external)
    return {b for b, f in flags.items() if f == {True}}


def _backbone_info(records: list[RunRecord], external: list[ExternalScore]) -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = defaultdict(dict)
    for rec in records:
        for k, v in (rec.backbone_info or {}).items():
            info[rec.backbone].setdefault(k, v)
    for row in external:
        for k, v in row.info.items():
            info[row.backbone].setdefault(k, v)
    return {b: info[b] for b in sorted(info)}


def _group_means(
    overall: list[dict[str, Any]], info: dict[str, dict[str, Any]], field: str
) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in overall:
        groups[str(info.get(e["backbone"], {}).get(field) or "unknown")].append(e)
    rows = {
        g: {
            "mean_score": sum(e["score"] for e in es) / len(es),
            "count": len(es),
            "backbones": [e["backbone"] for e in es],
        }
        for g, es in groups.items()
    }
    return dict(sorted(rows.items(), key=lambda kv: (-kv[1]["mean_score"], kv[0])))


def _environments(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Distinct environments of finished runs with the tasks and number of runs each produced."""
    found: list[dict[str, Any]] = []
    for rec in records:
        if not rec.finished:
            continue
        match = next((f for f in found if f["environment"] == rec.environment), None)
        if match is None:
            match = {"environment": dict(rec.environment), "tasks": [], "n_runs": 0}
            found.append(match)
        match["n_runs"] += 1
        if rec.task not in match["tasks"]:
            match["tasks"].append(rec.task)
    return found


def _failed(records: list[RunRecord]) -> list[dict[str, Any]]:
    return [
        {
            "run_key": r.run_key,
            "backbone": r.backbone,
            "task": r.task,
            "dataset": r.dataset,
            "protocol": r.protocol,
            "seed": r.seed,
            "error": r.error or "(no error recorded)",
        }
        for r in sorted(records, key=lambda r: (r.backbone, r.task, r.dataset, r.protocol, r.seed))
        if r.status == RunStatus.FAILED
    ]


def _status_counts(records: list[RunRecord]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.status] += 1
    return dict(sorted(counts.items()))


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None and tuples by lists so json.dumps(allow_nan=False) succeeds."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
