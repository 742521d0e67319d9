"""The report's sections after the leaderboards: coverage, OOD mCE, correlation, groups, costs, advice,
settings, environment, failures. Each function returns the blocks of one section
(see `bobench.analysis.render`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

import bobench.analysis.corruption as cor
import bobench.analysis.leaderboard as lb
from bobench.analysis.advice import recommend
from bobench.analysis.core import MIN_CORRELATION_BACKBONES, Analysis, settings_rows
from bobench.analysis.render import Block, Heading, Image, Para, Pre, Table

SMALL_PARAMS = 30e6  # BoB's "small backbone" bound
# (title, recommend() keyword arguments) of the canned RQ4 questions shown in the report
QUESTIONS: tuple[tuple[str, dict[str, float]], ...] = (
    ("Best overall", {}),
    (
        "Best under 10 ms p50 in-process latency (at the comparison basis below the efficiency table)",
        {"max_latency_ms": 10.0},
    ),
    ("Best under 30 M parameters (BoB's 'small' backbones)", {"max_params": SMALL_PARAMS}),
    ("Best under 10 ms p50 served latency", {"max_served_latency_ms": 10.0}),
)


def coverage(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading("Coverage and missing data"), Para(lb.coverage_rule(analysis))]
    blocks.append(Table(*lb.excluded_table(analysis), empty="Every backbone meets the minimum coverage."))
    return blocks


def correlation(analysis: Analysis, images: dict[str, Image]) -> list[Block]:
    cm = analysis.task_correlation
    blocks: list[Block] = [Heading("Task correlation")]
    blocks.append(
        Para(
            "Spearman rank correlation of task scores over the backbones scored on both tasks "
            "(n/a where fewer than 3 backbones are common or scores are constant)."
        )
    )
    if not analysis.correlation_meaningful:
        blocks.append(
            Para(
                f"Too few backbones for a meaningful correlation: no pair of tasks shares "
                f"{MIN_CORRELATION_BACKBONES} or more, so the heatmap is not drawn and the values below are "
                "indicative only."
            )
        )
    elif "task_correlation" in images:
        blocks.append(images["task_correlation"])
    rows = [
        [a, *[_rho(r, n) for r, n in zip(row, counts, strict=True)]]
        for a, row, counts in zip(cm.tasks, cm.rho, cm.n_common, strict=True)
    ]
    blocks.append(Table(["task", *cm.tasks], rows, [False, *[True] * len(cm.tasks)], empty="No tasks."))
    return blocks


def _rho(rho: float | None, n_common: int) -> str:
    if rho is None:
        return "n/a"
    return lb.fmt_num(rho, 2) + (f" (n={n_common}, too few)" if n_common < MIN_CORRELATION_BACKBONES else "")


def groups(analysis: Analysis) -> list[Block]:
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


def efficiency(analysis: Analysis, images: dict[str, Image]) -> list[Block]:
    blocks: list[Block] = [Heading("Efficiency and Pareto fronts")]
    blocks.append(
        Para(
            "In-process latency = p50 of the efficiency runs (latency_ms_p50_b<N>); served latency = p50 "
            "of the serving runs (latency_ms_p50_b<N>_c<M>); throughput = throughput_ips_b<N>. Each is "
            "compared at one environment (device, runtime, precision, threads, host) and one batch size: "
            "the pair measured for the most backbones, then the smallest batch (the largest for "
            "throughput); figures from other environments are never mixed in. Params from the efficiency "
            "run, else the backbone metadata. A Pareto-front backbone has no other backbone that is both "
            "better and cheaper."
        )
    )
    blocks += [Para(lb.cost_basis_line(b)) for b in analysis.cost_basis.values()]
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


def recommendations(analysis: Analysis, limits: dict[str, float | None]) -> list[Block]:
    """Canned RQ4 questions, plus the reader's own limits (`bob report --max-latency-ms/--max-params`)."""
    blocks: list[Block] = [Heading("Recommendations")]
    blocks.append(
        Para(
            "Best ranked backbones meeting each constraint (a backbone without the measured cost does not "
            "qualify; costs at the comparison basis above). Random-init baselines are left out. Ask your own "
            "with bob report --max-latency-ms/--max-params or bobench.analysis.recommend(analysis, ...).",
            muted=True,
        )
    )
    questions = list(QUESTIONS)
    chosen = {k: v for k, v in limits.items() if v is not None}
    if chosen:
        questions.insert(0, ("Your limits: " + ", ".join(f"{k} <= {v:g}" for k, v in chosen.items()), chosen))
    for title, kwargs in questions:
        blocks += [
            Heading(title, 3),
            Table(
                *lb.recommendation_table(recommend(analysis, top_k=3, **kwargs)),
                empty="No backbone qualifies (or the cost was not measured).",
            ),
        ]
    return blocks


def settings(analysis: Analysis) -> list[Block]:
    """The long per-(setting, backbone) table: raw value with CI and test items, seeds, z, identity."""
    headers = ["task", "dataset", "protocol", "metric", "variant", "better", "backbone", "value"]
    headers += ["95% CI", "n", "std", "seeds", "z"]
    rows = [
        [
            r["task"],
            r["dataset"],
            r["protocol"],
            r["metric"],
            _variant(r),
            "higher" if r["higher_is_better"] else "lower",
            r["backbone"] + (" (ext)" if r["external"] else ""),
            f"{r['value']:.4g}",
            lb.MISSING if r["ci_low"] is None else f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]",
            lb.MISSING if r["n_items"] is None else str(r["n_items"]),
            lb.MISSING if r["std"] is None else f"{r['std']:.2g}",
            str(r["n_seeds"]),
            f"{r['z']:+.3f}",
        ]
        for r in settings_rows(analysis.settings)
    ]
    right = [False] * 7 + [True] * 6
    note = Para(
        "variant = protocol version, digest of the resolved config and dataset fingerprint; runs that "
        "differ in any of them are separate settings, never averaged as seeds.",
        muted=True,
    )
    return [Heading("Per-setting metrics"), note, Table(headers, rows, right, empty="No ranked settings.")]


def _variant(row: dict) -> str:
    """ "v3 cfg 90a33c81 data 1f2e3d4c" (the fingerprint part when the record has one)."""
    data = f" data {row['dataset_fingerprint'][:8]}" if row["dataset_fingerprint"] else ""
    return f"v{row['protocol_version']} cfg {row['config_digest']}{data}"


def environment(analysis: Analysis, licenses: Sequence[dict] = ()) -> list[Block]:
    """Where the figures were measured, and the licenses of the data and weights the runs used
    (`bobench.analysis.licenses.used_licenses` rows)."""
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
    blocks.append(Heading("Licenses of the data and weights used", 3))
    blocks.append(
        Para(
            "As each data set and backbone declares them (`bob datasets list`, the backbone's spec); "
            "check them before publishing results or redistributing features.",
            muted=True,
        )
    )
    rows = [[r["kind"], r["name"], r["license"], r["source"], str(r["runs"])] for r in licenses]
    blocks.append(
        Table(
            ["kind", "name", "license", "source", "runs"],
            rows,
            [False, False, False, False, True],
            empty="No data set or backbone recorded.",
        )
    )
    return blocks


def failures(analysis: Analysis) -> list[Block]:
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


MCE_INTRO = (
    "ImageNet-C's corruption error: CE_c is a backbone's error under corruption c (mean over the "
    "severities) divided by the reference backbone's; relative CE_c divides the drop from clean error "
    "instead. mCE and relative mCE are their means over the corruptions; lower is better and the "
    "reference scores 1.000 on both (relative mCE is '-' when the reference loses nothing under some "
    "corruption: its drop is the divisor). The reference is the setting's mce_reference, or, when that is "
    "null, the battle's first backbone in plan order. Rankings stay on each setting's primary metric "
    "({metrics}, accuracy as Battle of the Backbones ranks OOD); mCE is shown beside them and is not "
    "part of the z-scores. Values are means over split seeds."
)


def mce(analysis: Analysis) -> list[Block]:
    """The report section: one table per OOD setting (backbone, seeds, mCA, mCE, relative mCE)."""
    if not analysis.ood_mce:
        return []
    metrics = ", ".join(dict.fromkeys(t.key.metric for t in analysis.ood_mce))
    blocks: list[Block] = [Heading("OOD corruption error (mCE)"), Para(MCE_INTRO.format(metrics=metrics))]
    for t in analysis.ood_mce:
        blocks.append(Heading(t.label + ("" if t.complete else f" ({cor.PARTIAL})"), 3))
        text = f"Reference: {t.reference} ({t.reference_source})."
        if not t.complete:
            text += (
                " Partial grid: not ImageNet-C's 15 corruptions x 5 severities, so these are mCE-style "
                "figures over the corruptions run, not comparable with published mCE."
            )
        blocks.append(Para(text, muted=True))
        blocks.append(Table(*_mce_rows(t), empty="No mCE in this setting (see the notes below)."))
        blocks += [Para(note, muted=True) for note in t.notes]
    return blocks


def _mce_rows(t: cor.MceTable) -> tuple[list[str], list[list[str]], list[bool]]:
    per_backbone: dict[str, list[cor.MceRow]] = defaultdict(list)
    for r in t.rows:
        per_backbone[r.backbone].append(r)
    means = {
        b: (_mean([r.mca for r in rs]), _mean([r.mce for r in rs]), _mean([r.relative_mce for r in rs]))
        for b, rs in per_backbone.items()
    }
    order = sorted(means, key=lambda b: (means[b][1], b))
    rows = [
        [b + (" (reference)" if b == t.reference else ""), str(len(per_backbone[b]))]
        + [lb.fmt_num(v) for v in means[b]]
        for b in order
    ]
    return ["backbone", "seeds", "mCA", "mCE", "relative mCE"], rows, [False, True, True, True, True]


def _mean(values: list[float | None]) -> float | None:
    """The mean, or None when any value is missing."""
    return None if any(v is None for v in values) else statistics.fmean(values)  # type: ignore[arg-type]


DETECTION_INTRO = (
    "Test {metrics} of the best-validation epoch per backbone and regime (BoB's three: the backbone "
    "fine-tuned end to end, frozen with only the neck and heads trained, and random init of the same "
    "architecture), mean over seeds, [95% bootstrap CI over test images]. 'fine-tuned - frozen' is how "
    "much the backbone gains from being trained end to end; the family table averages it per "
    "architecture family (the paper's ViT-vs-CNN question). These figures also rank in the "
    "leaderboards, each regime as its own setting."
)


def detection(analysis: Analysis, images: dict[str, Image]) -> list[Block]:
    """AP per regime and backbone, the fine-tuned-minus-frozen gap by family, OOD detection."""
    summary = analysis.detection
    if summary.empty:
        return []
    metrics = " / ".join(dict.fromkeys(_metric_name(r.metric) for r in summary.regimes)) or "box AP"
    blocks: list[Block] = [
        Heading("Detection and segmentation"),
        Para(DETECTION_INTRO.format(metrics=metrics)),
    ]
    groups = summary.groups()
    several = {(p, d) for p, d, _ in groups if sum(1 for g in groups if g[:2] == (p, d)) > 1}
    for protocol, dataset, variant in groups:
        title = f"{protocol} / {dataset}" + (f" [{variant}]" if (protocol, dataset) in several else "")
        blocks += [Heading(title, 3), Table(*_regime_table(summary, (protocol, dataset, variant)))]
    if summary.families:
        rows = [
            [f"{f.protocol} / {f.dataset}", f.family, f"{f.mean_gap:+.3f}", str(len(f.backbones)),
             ", ".join(f.backbones)]
            for f in summary.families
        ]  # fmt: skip
        blocks += [
            Heading("Fine-tuned minus frozen, by architecture family", 3),
            Table(["setting", "family", "mean gap", "backbones", "which"], rows,
                  [False, False, True, True, False]),
        ]  # fmt: skip
    if "detection_regimes" in images:
        blocks.append(images["detection_regimes"])
    if summary.ood:
        blocks += [
            Heading("OOD detection", 3),
            Para("Trained on the source domain: box AP there (in-domain), on the shifted domain, and the "
                 "gap (in-domain - shifted; lower is more robust). Mean over seeds [95% CI].", muted=True),
            Table(*_ood_table(summary)),
        ]  # fmt: skip
    return blocks


def _metric_name(metric: str) -> str:
    return {"AP": "box AP", "mask_AP": "mask AP"}.get(metric, metric)


def _ci_cell(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return lb.MISSING
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "")


def _regime_table(summary, group: tuple[str, str, str]) -> tuple[list[str], list[list[str]], list[bool]]:
    rows_of = [r for r in summary.regimes if (r.protocol, r.dataset, r.variant) == group]
    regimes = [g for g in ("finetune", "frozen", "random") if any(r.regime == g for r in rows_of)]
    regimes += sorted({r.regime for r in rows_of} - set(regimes))
    gaps = {g.backbone: g.gap for g in summary.gaps if (g.protocol, g.dataset, g.variant) == group}
    rows = []
    for backbone in dict.fromkeys(r.backbone for r in rows_of):
        cells = {r.regime: r for r in rows_of if r.backbone == backbone}
        seeds = sorted({r.n_seeds for r in cells.values()})
        row = [backbone, next(iter(cells.values())).family]
        row += [_ci_cell(cells[g].mean, cells[g].ci) if g in cells else lb.MISSING for g in regimes]
        row += [lb.MISSING if backbone not in gaps else f"{gaps[backbone]:+.3f}", "/".join(map(str, seeds))]
        rows.append(row)
    headers = ["backbone", "family", *regimes, "fine-tuned - frozen", "seeds"]
    return headers, rows, [False, False, *[True] * (len(regimes) + 2)]


def _ood_table(summary) -> tuple[list[str], list[list[str]], list[bool]]:
    rows = [
        [o.dataset, o.backbone, o.family, o.regime, _ci_cell(o.ap, o.ap_ci), _ci_cell(o.shift_ap, o.shift_ci),
         lb.MISSING if o.gap is None else f"{o.gap:+.3f}", str(o.n_seeds)]
        for o in summary.ood
    ]  # fmt: skip
    headers = ["dataset", "backbone", "family", "regime", "in-domain AP", "shifted AP", "gap", "seeds"]
    return headers, rows, [False, False, False, False, True, True, True, True]
