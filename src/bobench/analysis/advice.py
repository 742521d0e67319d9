"""RQ4: `recommend(analysis, max_latency_ms=..., max_params=...)`, the best backbones within limits.

Costs are those at `analysis.cost_basis` (one environment and batch size for every backbone), so a
limit means the same thing for all of them. Random-init baselines (pretraining_method "random") are
left out unless asked for: they exist to show what pretraining buys, not to be deployed.
"""

from __future__ import annotations

from typing import Any

from bobench.analysis.core import Analysis
from bobench.analysis.costs import COST_COLUMNS
from bobench.errors import InvalidArgument

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
) -> list[dict[str, Any]]:
    """The best ranked backbones meeting every given constraint, best first (RQ4).

    Scores are overall scores, or the scores of `task` when given. A backbone whose cost is unknown
    does not meet a constraint on that cost; costs are those at `analysis.cost_basis` (one
    environment and batch size for everyone). Random-init baselines are left out unless
    `include_random_init`. Each entry carries its cost columns.
    Raises InvalidArgument for a negative bound, a top_k < 1 or an unknown task.
    """
    bounds = {
        "latency_ms": max_latency_ms,
        "params": max_params,
        "served_latency_ms": max_served_latency_ms,
        "flops": max_flops,
    }
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
        if all(b is None or (costs[c] is not None and costs[c] <= b) for c, b in bounds.items()):
            out.append({**e, **costs})
    return out[:top_k] if top_k else out
