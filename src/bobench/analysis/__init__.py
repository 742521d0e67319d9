"""Analysis of run records: BoB z-score aggregation, rankings, task correlations, Pareto, RQ4, report.

`analyze(read_records(dir))` gives an Analysis (with rank intervals and ties); `format_leaderboard` prints it; the report module
(`write_report`, `export_csv`, imported lazily because it needs matplotlib) writes HTML/Markdown/PNG.
"""

from __future__ import annotations

from typing import Any

from bobench.analysis.advice import recommend
from bobench.analysis.aggregate import COST_TASKS, Setting, SettingKey
from bobench.analysis.core import DEFAULT_MIN_COVERAGE, Analysis, CorrelationMatrix, analyze
from bobench.analysis.external import ExternalScore, load_external_csv
from bobench.analysis.leaderboard import format_leaderboard
from bobench.analysis.selection import Selection

_LAZY = {"write_report", "export_csv"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from bobench.analysis import report

        return getattr(report, name)
    raise AttributeError(f"module 'bobench.analysis' has no attribute {name!r}")


__all__ = [
    "COST_TASKS",
    "DEFAULT_MIN_COVERAGE",
    "Analysis",
    "CorrelationMatrix",
    "ExternalScore",
    "Setting",
    "Selection",
    "SettingKey",
    "analyze",
    "export_csv",
    "format_leaderboard",
    "load_external_csv",
    "recommend",
    "write_report",
]
