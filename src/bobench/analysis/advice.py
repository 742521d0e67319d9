"""RQ4: `recommend(analysis, max_latency_ms=..., max_params=...)`, the best backbones within limits.

Costs are those at `analysis.cost_basis` (one environment and batch size for every backbone), so a
limit means the same thing for all of them. Random-init baselines (pretraining_method "random") are
left out unless asked for: they exist to show what pretraining buys, not to be deployed.

Budget and capacity (BoB's RQ4 asks for budget-aware advice):
- `max_cost_per_million` / `max_served_cost_per_million` ($ per million images): in-process
  (efficiency throughput) or served (Offline scenario throughput) cost at the host's
  `prices` (device kind -> $ per hour, setting `price_per_hour`; see `bobench.analysis.costs`).
- `min_server_qps` with `max_server_p99_ms` (default 30 ms): the backbone's Server-scenario peak
  QPS, found under a bound at least as strict as asked (percentile >= 99, bound <= the asked ms), is
  at least `min_server_qps` — "the best backbone that sustains 50 QPS at p99 <= 30 ms on this server".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bobench.analysis.core import Analysis
from bobench.analysis.costs import (
    COST_COLUMNS,
    cost_per_million_images,
    device_of,
    price_for,
    server_bound,
)
from bobench.errors import InvalidArgument

DEFAULT_P99_MS = 30.0
PRICED = {
    "cost_per_million_images": "throughput_ips",
    "served_cost_per_million_images": "served_throughput_ips",
}

RANDOM_INIT_METHODS = frozenset({"random"})


def recommend(
    analysis: Analysis,
    max_latency_ms: float | None = None,
    max_params: float | None = None,
    max_served_latency_ms: float | None = None,
    max_flops: float | None = None,
    task: str | None = None,
    pretraining_method: str | None = None,
    family: str | None = None,
    top_k: int | None = None,
    include_random_init: bool = False,
    max_cost_per_million: float | None = None,
    max_served_cost_per_million: float | None = None,
    min_server_qps: float | None = None,
    max_server_p99_ms: float | None = None,
    prices: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The best ranked backbones meeting every given constraint, best first (RQ4).

    Scores are overall scores, or the scores of `task` when given. A backbone whose cost is unknown
    does not meet a constraint on that cost; costs are those at `analysis.cost_basis` (one
    environment and batch size for everyone). Random-init baselines are left out unless
    `include_random_init`. Each entry carries its cost columns, its cost per million images (in-process
    and served, None without a price) and `sustains` (whether it meets the capacity ask, when given).
    Raises InvalidArgument for a negative bound, a top_k < 1, an unknown task, or a cost bound
    without `prices`.
    """
    bounds = {
        "latency_ms": max_latency_ms,
        "params": max_params,
        "served_latency_ms": max_served_latency_ms,
        "flops": max_flops,
        "cost_per_million_images": max_cost_per_million,
        "served_cost_per_million_images": max_served_cost_per_million,
    }
    if min_server_qps is not None and not min_server_qps >= 0:
        raise InvalidArgument(f"recommend: min_server_qps must be >= 0, got {min_server_qps}")
    if max_server_p99_ms is not None and not max_server_p99_ms > 0:
        raise InvalidArgument(f"recommend: max_server_p99_ms must be > 0, got {max_server_p99_ms}")
    if (max_cost_per_million is not None or max_served_cost_per_million is not None) and not prices:
        raise InvalidArgument(
            "recommend: a cost-per-million-images limit needs prices per device kind "
            "(setting price_per_hour, e.g. {cpu: 0.10, nvidia-h200: 4.0})"
        )
    for column, bound in bounds.items():
        if bound is not None and not bound >= 0:
            raise InvalidArgument(f"recommend: max_{column} must be >= 0, got {bound}")
    if top_k is not None and top_k < 1:
        raise InvalidArgument(f"recommend: top_k must be >= 1, got {top_k}")
    out = []
    for e in analysis.ranked_entries(task):
        backbone = e["backbone"]
        info = analysis.backbone_info.get(backbone, {})
        if not include_random_init and info.get("pretraining_method") in RANDOM_INIT_METHODS:
            continue
        if pretraining_method is not None and info.get("pretraining_method") != pretraining_method:
            continue
        if family is not None and info.get("family") != family:
            continue
        costs = {c: analysis.cost(backbone, c) for c in COST_COLUMNS}
        costs.update(image_costs(analysis, backbone, prices or {}))
        if min_server_qps is not None:
            costs["sustains"] = sustains(analysis, backbone, min_server_qps, max_server_p99_ms)
            if not costs["sustains"]:
                continue
        if all(b is None or (costs[c] is not None and costs[c] <= b) for c, b in bounds.items()):
            out.append({**e, **costs})
    return out[:top_k] if top_k else out


def image_costs(analysis: Analysis, backbone: str, prices: Mapping[str, float]) -> dict[str, float | None]:
    """{cost_per_million_images, served_cost_per_million_images} of `backbone` at `prices` ($/hour
    per device kind of the throughput's environment); None where a price or a throughput is missing."""
    out: dict[str, float | None] = {}
    for column, throughput in PRICED.items():
        basis = analysis.cost_basis.get(throughput)
        price = price_for(device_of(basis.environment), prices) if basis else None
        out[column] = cost_per_million_images(analysis.cost(backbone, throughput), price)
    return out


def sustains(analysis: Analysis, backbone: str, qps: float, p99_ms: float | None = None) -> bool:
    """Whether `backbone`'s Server-scenario peak, found under a bound at least as strict as
    p99 <= `p99_ms` (default 30 ms), is >= `qps` on the serving basis (one server for everyone)."""
    basis = analysis.cost_basis.get("server_peak_qps")
    bound = server_bound(basis.metric) if basis else None
    peak = analysis.cost(backbone, "server_peak_qps")
    if bound is None or peak is None:
        return False
    percentile, bound_ms = bound
    return percentile >= 99.0 and bound_ms <= (p99_ms or DEFAULT_P99_MS) and peak >= qps
