"""The battle report: report.html (self-contained), report.md, plots/*.png, analysis.json, runs.csv.

`write_report(results_dir)` reads the run records, analyses them and writes everything a reader
needs to trust the figures: leaderboards, per-setting raw metrics, the missing-data rule and
coverage, the environment each figure came from, recommendations, and the failed runs with errors.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bobench.analysis import aggregate as agg
from bobench.analysis import leaderboard as lb
from bobench.analysis.core import DEFAULT_MIN_COVERAGE, Analysis, analyze, recommend, settings_rows
from bobench.analysis.external import ExternalScore, load_external_csv
from bobench.analysis.plots import write_plots
from bobench.analysis.render import Block, Heading, Image, Para, Pre, Table, render_html, render_markdown
from bobench.battle.records import RunRecord, read_records
from bobench.errors import NotFound

log = logging.getLogger(__name__)
TITLE = "Battle of the Backbones report"
SMALL_PARAMS = 30e6  # BoB's "small backbone" bound
# (title, recommend() keyword arguments) of the canned RQ4 questions shown in the report
QUESTIONS: tuple[tuple[str, dict[str, float]], ...] = (
    ("Best overall", {}),
    (
        "Best under 10 ms p50 in-process latency (smallest measured batch, normally 1)",
        {"max_latency_ms": 10.0},
    ),
    ("Best under 30 M parameters (BoB's 'small' backbones)", {"max_params": SMALL_PARAMS}),
    ("Best under 10 ms p50 served latency", {"max_served_latency_ms": 10.0}),
)


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    external: Iterable[str | Path | ExternalScore] = (),
    min_coverage: float = DEFAULT_MIN_COVERAGE,
) -> dict[str, Path]:
    """Analyse `results_dir` (a directory holding results.jsonl, or the file) and write the report.

    `external` holds external-results CSV paths or already loaded ExternalScore rows. `out_dir`
    defaults to <results_dir>/report. Returns {relative name: path} for report.html, report.md,
    analysis.json, runs.csv and every plots/<name>.png. Raises NotFound when there are no records
    and InvalidArgument for bad external files (see load_external_csv).
    """
    src = Path(results_dir)
    records = read_records(src)
    if not records:
        raise NotFound(f"no run records in {src} (expected a results.jsonl)")
    rows: list[ExternalScore] = []
    for item in external:
        rows.extend([item] if isinstance(item, ExternalScore) else load_external_csv(item))
    analysis = analyze(records, rows, min_coverage)
    out = Path(out_dir) if out_dir is not None else (src if src.is_dir() else src.parent) / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(analysis, out / "plots")
    written = {f"plots/{p.name}": p.path for p in plots}
    images = {
        p.name.removesuffix(".png"): Image(f"plots/{p.name}", p.path, p.title, p.caption) for p in plots
    }
    blocks = build_blocks(analysis, images, src, rows)
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
    analysis: Analysis, images: dict[str, Image], source: Path, external: Sequence[ExternalScore]
) -> list[Block]:
    """The report's content, in reading order, shared by the HTML and Markdown renderers."""
    counts = ", ".join(f"{n} {status}" for status, n in analysis.run_counts.items())
    ext = f" plus {len(external)} external score(s)" if external else ""
    blocks: list[Block] = [
        Para(
            f"Results: {source}. Runs: {counts}{ext}. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            muted=True,
        ),
        Heading("Overall leaderboard"),
        Para(
            f"Score = mean over {len(analysis.tasks)} task(s) of the mean z-score over each task's settings "
            f"({len(analysis.settings)} setting(s)); higher is better. '(ext)' marks external results."
        ),
        Table(*lb.leaderboard_table(analysis), empty="No finished, ranked runs."),
    ]
    blocks += _section_coverage(analysis)
    blocks += [images[n] for n in ("overall", "task_heatmap") if n in images]
    blocks.append(Heading("Per-task leaderboards"))
    for task in analysis.tasks:
        blocks += [Heading(task, 3), Table(*lb.task_table(analysis, task))]
    blocks += _section_correlation(analysis, images)
    blocks += _section_groups(analysis)
    blocks += _section_efficiency(analysis, images)
    blocks += _section_recommendations(analysis)
    blocks += _section_settings(analysis)
    blocks += _section_environment(analysis)
    blocks += _section_failures(analysis)
    blocks += [Heading("Method")] + [Para(rule) for rule in aggregation_rules()]
    return blocks


def aggregation_rules() -> list[str]:
    """The bullet list of rules in `bobench.analysis.aggregate`'s docstring, one string per rule."""
    text = (agg.__doc__ or "").split("):", 1)[-1]
    return [" ".join(item.split()) for item in text.split("\n- ") if item.strip()]


def _section_coverage(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading("Coverage and missing data"), Para(lb.coverage_rule(analysis))]
    blocks.append(Table(*lb.excluded_table(analysis), empty="Every backbone meets the minimum coverage."))
    return blocks


def _section_correlation(analysis: Analysis, images: dict[str, Image]) -> list[Block]:
    cm = analysis.task_correlation
    blocks: list[Block] = [Heading("Task correlation")]
    blocks.append(
        Para(
            "Spearman rank correlation of task scores over the backbones scored on both tasks "
            "(n/a where fewer than 3 backbones are common or scores are constant)."
        )
    )
    if "task_correlation" in images:
        blocks.append(images["task_correlation"])
    rows = [
        [a, *[lb.fmt_num(r, 2) if r is not None else "n/a" for r in row]]
        for a, row in zip(cm.tasks, cm.rho, strict=True)
    ]
    blocks.append(Table(["task", *cm.tasks], rows, [False, *[True] * len(cm.tasks)], empty="No tasks."))
    return blocks


def _section_groups(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading("By pretraining method and architecture family")]
    blocks.append(Para("Mean overall score of the ranked backbones in each group (RQ2).", muted=True))
    for title, groups in (
        ("Pretraining method", analysis.by_method),
        ("Architecture family", analysis.by_family),
    ):
        rows = [
            [g, lb.fmt_num(v["mean_score"]), str(v["count"]), ", ".join(v["backbones"])]
            for g, v in groups.items()
        ]
        blocks += [
            Heading(title, 3),
            Table(["group", "mean score", "count", "backbones"], rows, [False, True, True, False]),
        ]
    return blocks


def _section_efficiency(analysis: Analysis, images: dict[str, Image]) -> list[Block]:
    blocks: list[Block] = [Heading("Efficiency and Pareto fronts")]
    blocks.append(
        Para(
            "In-process latency = p50 of the efficiency runs at the smallest measured batch "
            "(latency_ms_p50_b<N>); served latency = p50 of the serving runs at the smallest batch and "
            "concurrency (latency_ms_p50_b<N>_c<M>); throughput = the largest measured batch; params from the "
            "efficiency run, else the backbone metadata. A Pareto-front backbone has no other backbone that "
            "is both better and cheaper."
        )
    )
    shown = [images[n] for n in ("pareto_latency", "pareto_params") if n in images]
    blocks += shown or [Para("No latency or parameter counts in these results.", muted=True)]
    headers = [
        "backbone",
        "p50 ms",
        "key",
        "served p50 ms",
        "served key",
        "throughput img/s",
        "params",
        "FLOPs",
    ]
    rows = [
        [
            b,
            lb.fmt_num(c.latency_ms, 2),
            c.latency_key or lb.MISSING,
            lb.fmt_num(c.served_latency_ms, 2),
            c.served_latency_key or lb.MISSING,
            lb.fmt_num(c.throughput_ips, 1),
            lb.fmt_params(c.params),
            lb.MISSING if c.flops is None else f"{c.flops / 1e9:.2f}G",
        ]
        for b, c in analysis.costs.items()
    ]
    blocks.append(
        Table(headers, rows, [False, True, False, True, False, True, True, True], empty="No cost figures.")
    )
    for column in ("latency_ms", "served_latency_ms", "params"):
        front = analysis.pareto(column)
        if front:
            blocks.append(Para(f"Pareto front by {column}: {', '.join(e['backbone'] for e in front)}."))
    return blocks


def _section_recommendations(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading("Recommendations")]
    blocks.append(
        Para(
            "Best ranked backbones meeting each constraint (a backbone without the measured cost does not "
            "qualify). Ask your own with bobench.analysis.recommend(analysis, max_latency_ms=..., max_params=...).",
            muted=True,
        )
    )
    for title, kwargs in QUESTIONS:
        blocks += [
            Heading(title, 3),
            Table(
                *lb.recommendation_table(recommend(analysis, top_k=3, **kwargs)),
                empty="No backbone qualifies (or the cost was not measured).",
            ),
        ]
    return blocks


def _section_settings(analysis: Analysis) -> list[Block]:
    headers = ["task", "dataset", "protocol", "metric", "better", "backbone", "value", "std", "seeds", "z"]
    rows = [
        [
            r["task"],
            r["dataset"],
            r["protocol"],
            r["metric"],
            "higher" if r["higher_is_better"] else "lower",
            r["backbone"] + (" (ext)" if r["external"] else ""),
            f"{r['value']:.4g}",
            lb.MISSING if r["std"] is None else f"{r['std']:.2g}",
            str(r["n_seeds"]),
            f"{r['z']:+.3f}",
        ]
        for r in settings_rows(analysis.settings)
    ]
    right = [False] * 6 + [True] * 4
    return [Heading("Per-setting metrics"), Table(headers, rows, right, empty="No ranked settings.")]


def _section_environment(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading("Environment")]
    blocks.append(
        Para("Where the figures were measured: every distinct environment of the finished runs.", muted=True)
    )
    rows = []
    for env in analysis.environments:
        e = env["environment"]
        versions = e.get("versions") or {}
        rows.append(
            [
                str(e.get("device", lb.MISSING)),
                str(e.get("runtime", lb.MISSING)),
                str(e.get("threads", lb.MISSING)),
                str(e.get("precision", lb.MISSING)),
                ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or lb.MISSING,
                ", ".join(env["tasks"]),
                str(env["n_runs"]),
            ]
        )
    headers = ["device", "runtime", "threads", "precision", "versions", "tasks", "runs"]
    blocks.append(
        Table(
            headers, rows, [False, False, True, False, False, False, True], empty="No environment recorded."
        )
    )
    return blocks


def _section_failures(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading("Failed runs")]
    if not analysis.failed_runs:
        return blocks + [Para("No run failed.", muted=True)]
    headers = ["backbone", "task", "dataset", "protocol", "seed", "error"]
    rows = [
        [
            f["backbone"],
            f["task"],
            f["dataset"],
            f["protocol"],
            str(f["seed"]),
            (f["error"].strip().splitlines() or ["(empty)"])[-1][:160],
        ]
        for f in analysis.failed_runs
    ]
    blocks.append(Table(headers, rows, [False, False, False, False, True, False]))
    for f in analysis.failed_runs:
        blocks.append(
            Pre(
                f"{f['backbone']} {f['task']}/{f['dataset']}/{f['protocol']} seed {f['seed']} ({f['run_key']})",
                f["error"],
            )
        )
    return blocks
