"""Plain-text and Markdown tables of an Analysis (the terminal leaderboard and the report's tables).

Plain text on purpose: it reads the same in a terminal, a CI log, a pipe and a file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bobench.analysis.core import Analysis

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


def leaderboard_table(analysis: Analysis) -> tuple[list[str], list[list[str]], list[bool]]:
    """(headers, rows, right-align flags) of the overall leaderboard with per-task and cost columns."""
    tasks = analysis.tasks
    headers = ["rank", "backbone", "score", "coverage", *tasks, "p50 ms", "served ms", "params"]
    right = [True, False, True, True, *[True] * len(tasks), True, True, True]
    rows = []
    for e in analysis.overall:
        b = e["backbone"]
        rows.append(
            [
                str(e["rank"]),
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
    headers = ["rank", "backbone", "score", "coverage"]
    rows = [
        [
            str(e["rank"]),
            e["backbone"],
            fmt_num(e["score"]),
            f"{fmt_pct(e['coverage'])} ({e['n_settings']}/{e['n_settings_total']})",
        ]
        for e in analysis.per_task[task]
    ]
    return headers, rows, [True, False, True, True]


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


def format_leaderboard(analysis: Analysis) -> str:
    """The overall leaderboard as an aligned plain-text table, followed by the unranked backbones."""
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
    return "\n".join(parts)
