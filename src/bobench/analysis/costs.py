"""Cost columns (latency, throughput, params, FLOPs) read from efficiency and serving runs.

A latency or throughput is a measurement *in an environment*: the environment key is (device,
runtime, precision, threads, host) of the run's `environment`, or "external <file>" for an external
row. Figures measured at different keys (2 ms on a GPU, 40 ms on a CPU) are never averaged, and
backbones are compared at one key and one batch size, so the Pareto fronts and recommendations
compare like with like:

- `latency_ms` (in-process): task "efficiency", metric `latency_ms_p50_b<N>`.
- `served_latency_ms`: task "serving", metric `latency_ms_p50_b<N>_c<M>` (a serving run without a
  concurrency suffix falls back to `latency_ms_p50_b<N>`).
- `throughput_ips`: task "efficiency", metric `throughput_ips_b<N>`.
- For each of these columns the (environment key, metric) pair measured for the most backbones is
  the comparison basis; among equally common pairs the smallest batch (concurrency) wins for
  latency and the largest for throughput, then the environment key in sorted order. A backbone
  measured only elsewhere has no value in that column and is named in the basis as left out.
- `served_throughput_ips`: task "serving", metric `scenario_offline_throughput_ips` (the Offline
  scenario: images/s with everything issued at once).
- `server_peak_qps`: task "serving", the Server scenario's peak QPS under its latency bound, keyed
  `scenario_server_peak_qps@p<percentile><=<bound>ms` from the run's config, so peaks found under
  different bounds are different metrics (`server_bound(metric)` reads the bound back).
- `params`: efficiency metric `params`, else `backbone_info["num_params"]` (external: `num_params`);
  `flops`: efficiency metric `flops` (None when the counter could not count; never 0). Neither
  depends on the environment.

Several runs at the same key (seeds, repeated measurements) are averaged. `CostBasis` keeps the key
and metric of each column; the report prints it next to the figures.

**Cost per million images** (`cost_per_million_images`): the host's price per hour for the device
kind of the throughput's environment (setting `price_per_hour`, e.g. {cpu: 0.10, nvidia-h200: 4.0};
`price_for` matches the recorded device exactly, then the part before ':' — "cuda:0" -> "cuda"),
divided by images per hour: price / (throughput_ips x 3600) x 1e6. It charges the whole host to one
measurement (the efficiency protocol's threads, or the served model's instances): a lower bound on
what one image costs when the host does nothing else. None when the price or the throughput is unknown.
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
from bobench.results import RunRecord

_LATENCY = re.compile(r"^latency_ms_p50_b(\d+)$")
_SERVED = re.compile(r"^latency_ms_p50_b(\d+)_c(\d+)$")
_THROUGHPUT = re.compile(r"^throughput_ips_b(\d+)$")
_OFFLINE = re.compile(r"^scenario_offline_throughput_ips$")
_PEAK = re.compile(r"^scenario_server_peak_qps@p(\d+(?:\.\d+)?)<=(\d+(?:\.\d+)?)ms$")
PEAK_METRIC = "scenario_server_peak_qps"
COST_COLUMNS = (
    "latency_ms",
    "served_latency_ms",
    "throughput_ips",
    "served_throughput_ips",
    "server_peak_qps",
    "params",
    "flops",
)


@dataclass
class BackboneCosts:
    """A backbone's cost figures; each value is None when no run measured it."""

    latency_ms: float | None = None
    latency_key: str | None = None
    served_latency_ms: float | None = None
    served_latency_key: str | None = None
    throughput_ips: float | None = None
    throughput_key: str | None = None
    served_throughput_ips: float | None = None
    served_throughput_key: str | None = None
    server_peak_qps: float | None = None
    server_peak_key: str | None = None
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
            "served_throughput_ips": self.served_throughput_ips,
            "served_throughput_key": self.served_throughput_key,
            "server_peak_qps": self.server_peak_qps,
            "server_peak_key": self.server_peak_key,
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


ENV_FIELDS = ("device", "runtime", "precision", "threads", "host")
_COLUMN_SOURCES = {  # column -> (task, metric patterns in order of preference, take the largest suffix)
    "latency_ms": ("efficiency", (_LATENCY,), False),
    "served_latency_ms": ("serving", (_SERVED, _LATENCY), False),
    "throughput_ips": ("efficiency", (_THROUGHPUT,), True),
    "served_throughput_ips": ("serving", (_OFFLINE,), True),
    "server_peak_qps": ("serving", (_PEAK,), False),  # ties: the smaller (percentile, bound) first
}


@dataclass(frozen=True)
class CostBasis:
    """Where one cost column was compared: environment key, metric (batch size), who was left out."""

    column: str
    environment: str
    metric: str
    backbones: tuple[str, ...]
    left_out: tuple[str, ...]  # backbones measured for this column only at other keys

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "environment": self.environment,
            "metric": self.metric,
            "backbones": list(self.backbones),
            "left_out": list(self.left_out),
        }


def environment_key(environment: Mapping[str, Any]) -> str:
    """ "device=cpu runtime=onnxruntime precision=fp32 threads=2 host=h" ('-' for a missing field)."""
    return " ".join(
        f"{f}={environment.get(f, '-') if environment.get(f) is not None else '-'}" for f in ENV_FIELDS
    )


def collect_costs(
    records: Iterable[RunRecord],
    external: Iterable[ExternalScore] = (),
    backbone_info: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, BackboneCosts], dict[str, CostBasis]]:
    """(backbone -> BackboneCosts, column -> CostBasis) for every backbone with a cost or a parameter
    count; latency/throughput values are those at each column's basis (see the module doc)."""
    metrics = list(_cost_metrics(records, external))
    info = backbone_info or {}
    bases = {c: b for c in _COLUMN_SOURCES if (b := _basis(c, metrics)) is not None}
    by_backbone: dict[str, list[_CostMetric]] = defaultdict(list)
    for m in metrics:
        by_backbone[m.backbone].append(m)
    out: dict[str, BackboneCosts] = {}
    for backbone in sorted(set(by_backbone) | set(info)):
        costs = _costs_of(by_backbone.get(backbone, []), bases)
        if costs.params is None:
            costs.params = _positive(info.get(backbone, {}).get("num_params"))
        if any(costs.get(c) is not None for c in COST_COLUMNS):
            out[backbone] = costs
    return out, bases


def _cost_metrics(records: Iterable[RunRecord], external: Iterable[ExternalScore]) -> Iterable[_CostMetric]:
    for rec in records:
        if rec.finished and rec.task in ("efficiency", "serving"):
            for name, value in rec.metrics.items():
                if _is_number(value):
                    name = _peak_name(rec.config or {}) if name == PEAK_METRIC else name
                    yield _CostMetric(rec.backbone, rec.task, name, float(value), dict(rec.environment))
    for row in external:
        if row.task in ("efficiency", "serving"):
            origin = row.source.rsplit(" row ", 1)[0]
            yield _CostMetric(row.backbone, row.task, row.metric, row.value, {"source": origin})


def _env_of(m: _CostMetric) -> str:
    if set(m.environment) == {"source"}:
        return f"external {m.environment['source']}"
    return environment_key(m.environment)


def _basis(column: str, metrics: list[_CostMetric]) -> CostBasis | None:
    task, patterns, largest = _COLUMN_SOURCES[column]
    for pattern in patterns:
        who: dict[tuple[str, str], set[str]] = defaultdict(set)
        suffix: dict[str, tuple[int, ...]] = {}
        for m in metrics:
            match = pattern.match(m.metric) if m.task == task else None
            if match:
                who[(_env_of(m), m.metric)].add(m.backbone)
                suffix[m.metric] = tuple(float(g) for g in match.groups())
        if not who:
            continue
        env, metric = _most_common(who, suffix, largest)
        measured = set().union(*who.values())
        chosen = who[(env, metric)]
        return CostBasis(column, env, metric, tuple(sorted(chosen)), tuple(sorted(measured - chosen)))
    return None


def _most_common(
    who: dict[tuple[str, str], set[str]], suffix: dict[str, tuple[float, ...]], largest: bool
) -> tuple[str, str]:
    """The (environment, metric) measured for the most backbones; then by batch, then by key."""
    sign = -1 if largest else 1
    return min(who, key=lambda pair: (-len(who[pair]), [sign * n for n in suffix[pair[1]]], pair[0]))


def _costs_of(metrics: list[_CostMetric], bases: Mapping[str, CostBasis]) -> BackboneCosts:
    costs = BackboneCosts()
    for column, (task, _, _) in _COLUMN_SOURCES.items():
        basis = bases.get(column)
        at = [m for m in metrics if basis and m.task == task and _env_of(m) == basis.environment]
        value = _mean(at, basis.metric if basis else None)
        setattr(costs, column, value)
        setattr(costs, _KEY_FIELD[column], basis.metric if basis and value is not None else None)
    eff = [m for m in metrics if m.task == "efficiency"]
    costs.params = _positive(_mean(eff, "params"))
    costs.flops = _positive(_mean(eff, "flops"))
    for task in ("efficiency", "serving"):
        envs = _distinct([m.environment for m in metrics if m.task == task])
        if envs:
            costs.environments[task] = envs
    return costs


_KEY_FIELD = {
    "latency_ms": "latency_key",
    "served_latency_ms": "served_latency_key",
    "throughput_ips": "throughput_key",
    "served_throughput_ips": "served_throughput_key",
    "server_peak_qps": "server_peak_key",
}


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


def _peak_name(config: Mapping[str, Any]) -> str:
    """The peak-QPS metric keyed by the bound it was found under (see the module docstring)."""
    percentile = config.get("server_percentile", 99.0)
    bound = config.get("server_latency_bound_ms")
    return f"{PEAK_METRIC}@p{float(percentile):g}<={float(bound):g}ms" if _is_number(bound) else PEAK_METRIC


def server_bound(metric: str | None) -> tuple[float, float] | None:
    """(percentile, bound ms) of a keyed peak-QPS metric, None for anything else."""
    match = _PEAK.match(metric or "")
    return (float(match.group(1)), float(match.group(2))) if match else None


def device_of(environment: str) -> str | None:
    """The `device` field of an environment key (None for an external row or a missing device)."""
    for part in environment.split():
        if part.startswith("device="):
            value = part.removeprefix("device=")
            return value if value != "-" else None
    return None


def price_for(device: str | None, prices: Mapping[str, float]) -> float | None:
    """The price per hour of `device`: exact key, then the part before ':' (case-insensitive)."""
    if not device:
        return None
    table = {str(k).lower(): float(v) for k, v in prices.items()}
    name = device.lower()
    return table.get(name, table.get(name.split(":", 1)[0]))


def cost_per_million_images(throughput_ips: float | None, price_per_hour: float | None) -> float | None:
    """Price of a million images at `throughput_ips` on a host costing `price_per_hour` (None if unknown)."""
    if throughput_ips is None or price_per_hour is None or not throughput_ips > 0:
        return None
    return price_per_hour / (throughput_ips * 3600.0) * 1e6
