"""The report's "Budget and capacity" section: cost per million images and serving capacity.

Per backbone: in-process throughput (efficiency) and served Offline throughput, each priced at the
host's `price_per_hour` for the device kind it ran on (`bobench.analysis.costs`), and the Server
scenario's peak QPS under its p99 bound. Then the canned budget questions ("best under $X per
million images", "best that sustains 50 QPS at p99 <= 30 ms on this server") and the reader's own
(`bob report --max-cost-per-million/--min-qps/--max-p99-ms`), answered by
`bobench.analysis.advice.recommend`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bobench.analysis.leaderboard as lb
from bobench.analysis.advice import image_costs, recommend
from bobench.analysis.core import Analysis
from bobench.analysis.costs import server_bound
from bobench.analysis.render import Block, Heading, Para, Table

BUDGET_LIMITS = ("max_cost_per_million", "max_served_cost_per_million", "min_server_qps", "max_server_p99_ms")
DEFAULT_BUDGET_USD = 1.0  # per million images, the canned question's budget
DEFAULT_QPS, DEFAULT_P99_MS = 50.0, 30.0


def split_limits(limits: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the other recommendation limits, the budget and capacity ones this section answers)."""
    mine = {k: v for k, v in limits.items() if k in BUDGET_LIMITS}
    return {k: v for k, v in limits.items() if k not in BUDGET_LIMITS}, mine


def _fmt_usd(value: float | None) -> str:
    return lb.MISSING if value is None else f"${value:.4g}"


def cost_rows(analysis: Analysis, prices: Mapping[str, float]) -> list[list[str]]:
    rows = []
    peak_basis = analysis.cost_basis.get("server_peak_qps")
    bound = server_bound(peak_basis.metric if peak_basis else None)
    at = f" (p{bound[0]:g} <= {bound[1]:g} ms)" if bound else ""
    for backbone, c in analysis.costs.items():
        priced = image_costs(analysis, backbone, prices)
        peak = c.server_peak_qps
        rows.append(
            [
                backbone,
                lb.fmt_num(c.throughput_ips, 1),
                _fmt_usd(priced["cost_per_million_images"]),
                lb.fmt_num(c.served_throughput_ips, 1),
                _fmt_usd(priced["served_cost_per_million_images"]),
                lb.MISSING if peak is None else f"{peak:.1f}{at}",
            ]
        )
    return rows


def _answers(entries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[bool]]:
    headers = ["rank", "backbone", "score", "$/M images", "served $/M", "peak QPS", "params"]
    rows = [
        [
            str(e["rank"]),
            e["backbone"],
            lb.fmt_num(e["score"]),
            _fmt_usd(e.get("cost_per_million_images")),
            _fmt_usd(e.get("served_cost_per_million_images")),
            lb.fmt_num(e.get("server_peak_qps"), 1),
            lb.fmt_params(e.get("params")),
        ]
        for e in entries
    ]
    return headers, rows, [True, False, True, True, True, True, True]


def section(analysis: Analysis, prices: Mapping[str, float], limits: Mapping[str, Any]) -> list[Block]:
    """The blocks of the budget and capacity section (see the module docstring)."""
    prices = dict(prices or {})
    blocks: list[Block] = [Heading("Budget and capacity")]
    price_text = (
        "Prices per hour: " + ", ".join(f"{k} ${v:g}" for k, v in sorted(prices.items())) + "."
        if prices
        else "No prices set: set price_per_hour (bobench.yaml, or BOBENCH_PRICE_PER_HOUR=cpu=0.10,"
        "nvidia-h200=4.0) to see cost per million images."
    )
    blocks.append(
        Para(
            f"{price_text} Cost per million images = price per hour / (images per second x 3600) x 1e6, "
            "at the throughput's comparison basis, charging the whole host to the measurement. Peak QPS: "
            "the MLPerf-style Server scenario's highest Poisson arrival rate meeting its latency bound.",
            muted=True,
        )
    )
    headers = ["backbone", "img/s", "$/M images", "served img/s (Offline)", "served $/M", "peak QPS (Server)"]
    blocks.append(
        Table(
            headers,
            cost_rows(analysis, prices),
            [False, True, True, True, True, True],
            empty="No throughput figures.",
        )
    )
    questions: list[tuple[str, dict[str, Any]]] = [
        (
            f"Best that sustains {DEFAULT_QPS:g} QPS at p99 <= {DEFAULT_P99_MS:g} ms on this server",
            {"min_server_qps": DEFAULT_QPS, "max_server_p99_ms": DEFAULT_P99_MS},
        )
    ]
    if prices:
        questions.insert(
            0,
            (
                f"Best under ${DEFAULT_BUDGET_USD:g} per million images",
                {"max_cost_per_million": DEFAULT_BUDGET_USD},
            ),
        )
    chosen = {k: v for k, v in limits.items() if k in BUDGET_LIMITS and v is not None}
    if chosen:
        title = "Your limits: " + ", ".join(
            f"{k} {'>=' if k.startswith('min') else '<='} {v:g}" for k, v in chosen.items()
        )
        questions.insert(0, (title, chosen))
    for title, kwargs in questions:
        if not prices and any(k.startswith("max_") and "cost" in k for k in kwargs):
            blocks += [Heading(title, 3), Para("Needs price_per_hour (no prices set).", muted=True)]
            continue
        entries = recommend(analysis, top_k=3, prices=prices, **kwargs)
        blocks += [
            Heading(title, 3),
            Table(*_answers(entries), empty="No backbone qualifies (or the figure was not measured)."),
        ]
    return blocks
