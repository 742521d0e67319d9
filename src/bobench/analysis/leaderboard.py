"""Plain-text and Markdown tables of an Analysis (the terminal leaderboard and the report's tables).

Plain text on purpose: it reads the same in a terminal, a CI log, a pipe and a file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bobench.analysis.core import Analysis, settings_rows
from bobench.analysis.costs import CostBasis

MISSING = "-"


def fmt_num(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def fmt_params(value: float | None) -> str:
    return MISSING if value is None else f"{value / 1e6:.1f}M"


def fmt_pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def render_text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Columns padded to their widest cell; `right[i]` right-aligns column i (numbers)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def render_markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> str:
    def esc(cell: str) -> str:
        return re.sub(r"([|<>\\])", r"\\\1", cell).replace("\n", " ")

    out = ["| " + " | ".join(esc(h) for h in headers) + " |"]
    out.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def fmt_rank_interval(entry: dict[str, Any]) -> str:
    """ "1-3" (the 95 % rank interval), or the rank alone when the interval is a single rank."""
    low, high = entry.get("rank_low"), entry.get("rank_high")
    if low is None or high is None:
        return MISSING
    return str(low) if low == high else f"{low}-{high}"


def fmt_ties(entry: dict[str, Any], entries: Sequence[dict[str, Any]]) -> str:
    """ "= 2, 3": the ranks of the backbones this one cannot be told apart from at 95 %."""
    rank_of = {e["backbone"]: e["rank"] for e in entries}
    ranks = sorted(rank_of[b] for b in entry.get("tied_with", ()) if b in rank_of)
    return "= " + ", ".join(str(r) for r in ranks) if ranks else ""


def fmt_value(row: dict[str, Any]) -> str:
    """A raw metric with its interval and item count: "0.812 [0.700, 0.900] n=24"."""
    text = f"{row['value']:.3f}"
    if row.get("ci_low") is not None:
        text += f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    if row.get("n_items") is not None:
        text += f" n={row['n_items']}"
    return text


def leaderboard_table(analysis: Analysis) -> tuple[list[str], list[list[str]], list[bool]]:
    """(headers, rows, right-align flags) of the overall leaderboard with per-task and cost columns."""
    tasks = analysis.tasks
    headers = ["rank", "95% rank", "tied", "backbone", "score", "coverage", *tasks]
    headers += ["p50 ms", "served ms", "params"]
    right = [True, True, False, False, True, True, *[True] * len(tasks), True, True, True]
    rows = []
    for e in analysis.overall:
        b = e["backbone"]
        rows.append(
            [
                str(e["rank"]),
                fmt_rank_interval(e),
                fmt_ties(e, analysis.overall),
                b + (" (ext)" if e["external"] else ""),
                fmt_num(e["score"]),
                f"{fmt_pct(e['coverage'])} ({e['n_settings']}/{e['n_settings_total']})",
                *[fmt_num(analysis.task_scores[t].get(b)) for t in tasks],
                fmt_num(analysis.cost(b, "latency_ms"), 2),
                fmt_num(analysis.cost(b, "served_latency_ms"), 2),
                fmt_params(analysis.cost(b, "params")),
            ]
        )
    return headers, rows, right


def excluded_table(analysis: Analysis) -> tuple[list[str], list[list[str]], list[bool]]:
    headers = ["backbone", "partial score", "coverage", "tasks"]
    rows = [
        [
            e["backbone"],
            fmt_num(e["score"]),
            f"{fmt_pct(e['coverage'])} ({e['n_settings']}/{e['n_settings_total']})",
            str(e["n_tasks"]),
        ]
        for e in analysis.excluded
    ]
    return headers, rows, [False, True, True, True]


def task_table(analysis: Analysis, task: str) -> tuple[list[str], list[list[str]], list[bool]]:
    """One task's ranking with each of its settings' raw metric (interval, item count) per backbone."""
    settings = [s for s in analysis.settings if s.key.task == task and len(s.values) >= 2]
    rows_of = {s.label(): {r["backbone"]: r for r in settings_rows([s])} for s in settings}
    labels = [s.label().split("/", 1)[1] for s in settings]
    headers = ["rank", "95% rank", "tied", "backbone", "score", "coverage", *labels]
    entries = analysis.per_task[task]
    rows = [
        [
            str(e["rank"]),
            fmt_rank_interval(e),
            fmt_ties(e, entries),
            e["backbone"],
            fmt_num(e["score"]),
            f"{fmt_pct(e['coverage'])} ({e['n_settings']}/{e['n_settings_total']})",
            *[
                fmt_value(rows_of[s.label()][e["backbone"]]) if e["backbone"] in s.values else MISSING
                for s in settings
            ],
        ]
        for e in entries
    ]
    return headers, rows, [True, True, False, False, True, True, *[True] * len(settings)]


def recommendation_table(entries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[bool]]:
    headers = ["rank", "backbone", "score", "p50 ms", "served ms", "params"]
    rows = [
        [
            str(e["rank"]),
            e["backbone"],
            fmt_num(e["score"]),
            fmt_num(e.get("latency_ms"), 2),
            fmt_num(e.get("served_latency_ms"), 2),
            fmt_params(e.get("params")),
        ]
        for e in entries
    ]
    return headers, rows, [True, False, True, True, True, True]


def coverage_rule(analysis: Analysis) -> str:
    return (
        "A backbone missing from a setting is averaged over the settings it has. Backbones covering "
        f"fewer than {fmt_pct(analysis.min_coverage)} of the settings are not ranked overall (they still "
        "count in every setting's z-scores) and are listed separately with their partial score."
    )


TIES_NOTE = (
    "95% rank = the rank interval from a bootstrap of the whole aggregation; tied = ranks of the "
    "backbones whose scores are not distinguishable from this one at 95%."
)


def format_leaderboard(analysis: Analysis) -> str:
    """The overall leaderboard as an aligned plain-text table, the unranked backbones, then one table
    per task with the raw metrics (interval, test items) next to the scores."""
    if not analysis.overall and not analysis.excluded:
        return "No finished, ranked runs to show."
    scored = sum(len(s.values) >= 2 for s in analysis.settings)
    single = len(analysis.settings) - scored
    note = f"; {single} single-backbone setting(s) shown in the report, not scored" if single else ""
    parts = [
        f"Overall leaderboard: mean z-score over {len(analysis.tasks)} task(s), {scored} setting(s){note}",
        render_text_table(*leaderboard_table(analysis)) if analysis.overall else "(no backbone is ranked)",
    ]
    if analysis.excluded:
        parts += [
            "",
            f"Not ranked (coverage below {fmt_pct(analysis.min_coverage)}, or evaluated only in "
            "settings with a single backbone, which cannot be z-scored):",
            render_text_table(*excluded_table(analysis)),
        ]
    for task in analysis.tasks:
        parts += [
            "",
            f"Task {task} (raw metric [95% CI] n=test items):",
            render_text_table(*task_table(analysis, task)),
        ]
    if analysis.overall:
        parts += ["", TIES_NOTE]
    parts += [cost_basis_line(b) for b in analysis.cost_basis.values()]
    return "\n".join(parts)


def cost_basis_line(basis: CostBasis) -> str:
    """ "latency_ms compared at latency_ms_p50_b1 on device=cpu ... (3 backbones; left out: x)"."""
    left = f"; left out, measured elsewhere only: {', '.join(basis.left_out)}" if basis.left_out else ""
    return f"{basis.column} compared at {basis.metric} on {basis.environment} ({len(basis.backbones)} backbones{left})"
