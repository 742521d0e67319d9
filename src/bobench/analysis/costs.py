"""Cost columns (latency, throughput, params, FLOPs) read from efficiency and serving runs.

Which keys are used (per backbone, over its finished runs and external cost rows):

- `latency_ms` (in-process): task "efficiency", metric `latency_ms_p50_b<N>`, the smallest N present
  (normally N = 1, i.e. p50 latency at batch 1).
- `served_latency_ms`: task "serving", metric `latency_ms_p50_b<N>_c<M>`, the smallest (N, M) present
  (normally batch 1, concurrency 1); a serving run without a concurrency suffix falls back to
  `latency_ms_p50_b<N>`.
- `throughput_ips`: task "efficiency", metric `throughput_ips_b<N>`, the largest N present.
- `params`: efficiency metric `params`, else `backbone_info["num_params"]` (external: `num_params`).
- `flops`: efficiency metric `flops` (None when the counter could not count; never 0).

Several runs of the same key (seeds, repeated measurements) are averaged. The key used is kept next
to each value, with the environment of the runs it came from, so every figure carries its context.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bobench.analysis.external import ExternalScore
from bobench.battle.records import RunRecord

_LATENCY = re.compile(r"^latency_ms_p50_b(\d+)$")
_SERVED = re.compile(r"^latency_ms_p50_b(\d+)_c(\d+)$")
_THROUGHPUT = re.compile(r"^throughput_ips_b(\d+)$")
COST_COLUMNS = ("latency_ms", "served_latency_ms", "throughput_ips", "params", "flops")


@dataclass
class BackboneCosts:
    """A backbone's cost figures; each value is None when no run measured it."""

    latency_ms: float | None = None
    latency_key: str | None = None
    served_latency_ms: float | None = None
    served_latency_key: str | None = None
    throughput_ips: float | None = None
    throughput_key: str | None = None
    params: float | None = None
    flops: float | None = None
    environments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # task -> distinct envs

    def get(self, column: str) -> float | None:
        return getattr(self, column)

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "latency_key": self.latency_key,
            "served_latency_ms": self.served_latency_ms,
            "served_latency_key": self.served_latency_key,
            "throughput_ips": self.throughput_ips,
            "throughput_key": self.throughput_key,
            "params": self.params,
            "flops": self.flops,
            "environments": self.environments,
        }


@dataclass(frozen=True)
class _CostMetric:
    backbone: str
    task: str
    metric: str
    value: float
    environment: dict[str, Any]


def collect_costs(
    records: Iterable[RunRecord],
    external: Iterable[ExternalScore] = (),
    backbone_info: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, BackboneCosts]:
    """backbone -> BackboneCosts, for every backbone that has a cost metric or a known parameter count."""
    metrics = list(_cost_metrics(records, external))
    by_backbone: dict[str, list[_CostMetric]] = defaultdict(list)
    for m in metrics:
        by_backbone[m.backbone].append(m)
    info = backbone_info or {}
    out: dict[str, BackboneCosts] = {}
    for backbone in sorted(set(by_backbone) | set(info)):
        costs = _costs_of(by_backbone.get(backbone, []))
        if costs.params is None:
            costs.params = _positive(info.get(backbone, {}).get("num_params"))
        if any(costs.get(c) is not None for c in COST_COLUMNS):
            out[backbone] = costs
    return out


def _cost_metrics(records: Iterable[RunRecord], external: Iterable[ExternalScore]) -> Iterable[_CostMetric]:
    for rec in records:
        if rec.finished and rec.task in ("efficiency", "serving"):
            for name, value in rec.metrics.items():
                if _is_number(value):
                    yield _CostMetric(rec.backbone, rec.task, name, float(value), dict(rec.environment))
    for row in external:
        if row.task in ("efficiency", "serving"):
            yield _CostMetric(row.backbone, row.task, row.metric, row.value, {"source": row.source})


def _costs_of(metrics: list[_CostMetric]) -> BackboneCosts:
    eff = [m for m in metrics if m.task == "efficiency"]
    srv = [m for m in metrics if m.task == "serving"]
    costs = BackboneCosts()
    costs.latency_key = _pick(eff, _LATENCY, largest=False)
    costs.latency_ms = _mean(eff, costs.latency_key)
    costs.served_latency_key = _pick(srv, _SERVED, largest=False) or _pick(srv, _LATENCY, largest=False)
    costs.served_latency_ms = _mean(srv, costs.served_latency_key)
    costs.throughput_key = _pick(eff, _THROUGHPUT, largest=True)
    costs.throughput_ips = _mean(eff, costs.throughput_key)
    costs.params = _positive(_mean(eff, "params"))
    costs.flops = _positive(_mean(eff, "flops"))
    for task, group in (("efficiency", eff), ("serving", srv)):
        envs = _distinct([m.environment for m in group])
        if envs:
            costs.environments[task] = envs
    return costs


def _pick(metrics: list[_CostMetric], pattern: re.Pattern[str], largest: bool) -> str | None:
    """The metric name matching `pattern` with the smallest (or largest) numeric suffix tuple."""
    candidates = {}
    for m in metrics:
        match = pattern.match(m.metric)
        if match:
            candidates[m.metric] = tuple(int(g) for g in match.groups())
    if not candidates:
        return None
    chooser = max if largest else min
    return chooser(candidates, key=lambda name: candidates[name])


def _mean(metrics: list[_CostMetric], key: str | None) -> float | None:
    values = [m.value for m in metrics if key is not None and m.metric == key]
    return float(np.mean(values)) if values else None


def _positive(value: Any) -> float | None:
    """A count that is missing, zero or negative is unknown (None), never a made-up 0."""
    return float(value) if _is_number(value) and value > 0 else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _distinct(envs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for env in envs:
        if env not in seen:
            seen.append(env)
    return seen
