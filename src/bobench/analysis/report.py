"""The battle report: report.html (self-contained), report.md, plots/*.png, analysis.json, runs.csv.

`write_report(results_dir)` reads the run records, analyses them and writes everything a reader
needs to trust the figures: leaderboards, per-setting raw metrics, the missing-data rule and
coverage, the environment each figure came from, recommendations, and the failed runs with errors.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bobench.analysis.aggregate as agg
import bobench.analysis.budget as budget
import bobench.analysis.leaderboard as lb
import bobench.analysis.sections as sec
import bobench.analysis.uncertainty as unc
from bobench.analysis.core import DEFAULT_MIN_COVERAGE, Analysis, analyze
from bobench.analysis.external import ExternalScore, load_external_csv
from bobench.analysis.licenses import used_licenses
from bobench.analysis.plots import write_plots
from bobench.analysis.render import Block, Heading, Image, Para, Table, render_html, render_markdown
from bobench.analysis.selection import Selection, select_all
from bobench.errors import NotFound
from bobench.results import RunRecord, read_records

log = logging.getLogger(__name__)
TITLE = "Battle of the Backbones report"


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    external: Iterable[str | Path | ExternalScore] = (),
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    *,
    selection: Selection | None = None,
    task_map: str = agg.DEFAULT_TASK_MAP,
    limits: Mapping[str, float | None] | None = None,
    prices: Mapping[str, float] | None = None,
) -> dict[str, Path]:
    """Analyse `results_dir` (a directory holding results.jsonl, or the file) and write the report.

    `selection` picks the records covered (default: every record; see `bobench.analysis.selection`);
    `task_map` is a key of `aggregate.TASK_MAPS`; `limits` holds the reader's own recommendation
    bounds (`max_latency_ms`, `max_params`, ...: keyword arguments of `recommend`); `prices` the
    host price per hour by device kind (setting `price_per_hour`, for cost per million images).
    `external` holds
    external-results CSV paths or already loaded ExternalScore rows. `out_dir` defaults to
    <results_dir>/report. Returns {relative name: path} for report.html, report.md, analysis.json,
    runs.csv and every plots/<name>.png. Raises NotFound when there are no records and
    InvalidArgument for bad external files (see load_external_csv) or bad limits.
    """
    src = Path(results_dir)
    if selection is None:
        records = read_records(src)
        if not records:
            raise NotFound(f"no run records in {src} (expected a results.jsonl)")
        selection = select_all(records, src)
    records = selection.records
    rows: list[ExternalScore] = []
    for item in external:
        rows.extend([item] if isinstance(item, ExternalScore) else load_external_csv(item))
    analysis = analyze(records, rows, min_coverage, task_map=task_map)
    out = Path(out_dir) if out_dir is not None else (src if src.is_dir() else src.parent) / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(analysis, out / "plots")
    written = {f"plots/{p.name}": p.path for p in plots}
    images = {
        p.name.removesuffix(".png"): Image(f"plots/{p.name}", p.path, p.title, p.caption) for p in plots
    }
    blocks = build_blocks(
        analysis,
        images,
        selection.scope,
        rows,
        dict(limits or {}),
        licenses=used_licenses(records),
        prices=prices,
    )
    written["report.html"] = _write(out / "report.html", render_html(TITLE, blocks))
    written["report.md"] = _write(out / "report.md", render_markdown(TITLE, blocks))
    written["analysis.json"] = _write(
        out / "analysis.json", json.dumps(analysis.to_json(), indent=2, allow_nan=False)
    )
    written["runs.csv"] = export_csv(records, out / "runs.csv")
    log.info("report written to %s (%d plots)", out, len(plots))
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def export_csv(records: Iterable[RunRecord], path: str | Path) -> Path:
    """One row per run, metrics flattened into `metric.<name>` columns (nested keys joined by dots),
    environment into `env.<key>` and backbone_info into `info.<key>`; lists are JSON-encoded. The
    resolved config (sorted JSON), its digest and the dataset fingerprint tell apart rows that share
    a (backbone, dataset, protocol) but not a setting (see `bobench.analysis.aggregate`)."""
    fields = ["run_key", "backbone", "task", "dataset", "dataset_fingerprint", "protocol", "protocol_version"]
    fields += [
        "seed",
        "status",
        "primary_metric",
        "duration_s",
        "started_at",
        "finished_at",
        "battle",
        "error",
    ]
    base = fields[:7] + ["config_digest", "config"] + fields[7:]
    rows = []
    for r in records:
        row: dict[str, Any] = {k: getattr(r, k) for k in fields}
        row["config"] = json.dumps(r.config or {}, sort_keys=True, default=str)
        row["config_digest"] = agg.config_digest(r.config or {})
        row.update(_flatten("metric", r.metrics))
        row.update(_flatten("env", r.environment))
        row.update(_flatten("info", r.backbone_info))
        rows.append(row)
    extra = sorted({k for row in rows for k in row} - set(base))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=base + extra, restval="")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return p


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}", v))
        return out
    if isinstance(value, list | tuple):
        return {prefix: json.dumps(value)}
    return {prefix: value}


def build_blocks(
    analysis: Analysis,
    images: dict[str, Image],
    scope: str,
    external: Sequence[ExternalScore],
    limits: dict[str, float | None] | None = None,
    licenses: Sequence[dict[str, Any]] = (),
    prices: Mapping[str, float] | None = None,
) -> list[Block]:
    """The report's content, in reading order, shared by the HTML and Markdown renderers.
    `licenses`: the data sets and backbones the runs used (`bobench.analysis.licenses.used_licenses`)."""
    counts = ", ".join(f"{n} {status}" for status, n in analysis.run_counts.items())
    ext = f" plus {len(external)} external score(s)" if external else ""
    blocks: list[Block] = [
        Para(
            f"Covers: {scope}. Runs: {counts}{ext}. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            muted=True,
        ),
        Heading("Overall leaderboard"),
        Para(
            f"Score = mean over {len(analysis.tasks)} task(s) of the mean z-score over each task's settings "
            f"({len(analysis.settings)} setting(s)); higher is better. Task map: {analysis.task_map!r} "
            f"({TASK_MAP_TEXT.get(analysis.task_map, '')}). '(ext)' marks external results. {lb.TIES_NOTE.removesuffix('.')} "
            f"({analysis.resamples} resamples)."
        ),
        Table(*lb.leaderboard_table(analysis), empty="No finished, ranked runs."),
    ]
    blocks += sec.coverage(analysis)
    blocks += [images[n] for n in ("overall", "task_heatmap") if n in images]
    blocks.append(Heading("Per-task leaderboards"))
    blocks.append(
        Para("Each setting's raw metric: value [95% CI] n=test items (CI and n when recorded).", muted=True)
    )
    for task in analysis.tasks:
        blocks += [Heading(task, 3), Table(*lb.task_table(analysis, task))]
    blocks += sec.mce(analysis)
    blocks += sec.detection(analysis, images)
    blocks += sec.correlation(analysis, images)
    blocks += sec.groups(analysis)
    blocks += sec.efficiency(analysis, images)
    others, budget_limits = budget.split_limits(limits or {})
    blocks += sec.recommendations(analysis, others)
    blocks += budget.section(analysis, prices or {}, budget_limits)
    blocks += sec.settings(analysis)
    blocks += sec.environment(analysis, licenses)
    blocks += sec.failures(analysis)
    blocks += [Heading("Method")] + [Para(rule) for rule in aggregation_rules()]
    blocks.append(Para(" ".join((unc.__doc__ or "").split())))
    return blocks


TASK_MAP_TEXT = {
    "records": "each run's own task: linear probe and kNN are classification, fine-tuning is its own task, "
    "detection and instance segmentation are detection, OOD detection is ood",
    "bob": "Battle of the Backbones' grouping: linear probe and fine-tuning are both classification settings; "
    "detection and instance segmentation are detection, OOD detection is ood",
}


def aggregation_rules() -> list[str]:
    """The bullet list of rules in `bobench.analysis.aggregate`'s docstring, one string per rule."""
    text = (agg.__doc__ or "").split("):", 1)[-1]
    return [" ".join(item.split()) for item in text.split("\n- ") if item.strip()]
