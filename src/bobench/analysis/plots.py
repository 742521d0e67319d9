"""PNG plots of an Analysis, drawn with matplotlib's object API on the Agg canvas (no pyplot, no GUI).

Each function returns the path it wrote, or None when the results hold no data for that plot (the
report then says so instead of showing an empty figure).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bobench.analysis.core import Analysis

log = logging.getLogger(__name__)
DPI = 110


@dataclass(frozen=True)
class Plot:
    """A written plot: file name (under plots/), title and one-line caption for the report."""

    name: str
    path: Path
    title: str
    caption: str


def write_plots(analysis: Analysis, plots_dir: Path) -> list[Plot]:
    """Write every plot the data allows into `plots_dir`; returns them in report order."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    specs: list[tuple[str, str, str, Callable[[Analysis, Path], Path | None]]] = [
        ("overall", "Overall ranking", "Mean z-score over tasks (higher is better); colour = pretraining method.", plot_overall),
        ("task_heatmap", "Per-task z-scores", "Backbone x task score (mean z over the task's settings); grey = not evaluated.", plot_task_heatmap),
        ("task_correlation", "Task correlation", "Spearman rho between task scores over common backbones; n/a = fewer than 3.", plot_task_correlation),
        ("pareto_latency", "Score vs latency", "Overall score vs p50 latency (in-process; served next to it when measured); line = Pareto front.", plot_pareto_latency),
        ("pareto_params", "Score vs parameters", "Overall score vs parameter count; line = Pareto front.", plot_pareto_params),
        ("detection_regimes", "Detection by regime", "Test AP per backbone and regime with 95% bootstrap CIs; last panel: fine-tuned minus frozen AP per architecture family.", plot_detection_regimes),
    ]  # fmt: skip
    written = []
    for name, title, caption, draw in specs:
        path = draw(analysis, plots_dir / f"{name}.png")
        if path is None:
            log.info("plot %s skipped: no data for it", name)
        else:
            written.append(Plot(f"{name}.png", path, title, caption))
    return written


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def _method_colours(analysis: Analysis, backbones: list[str]) -> tuple[list, dict[str, tuple]]:
    """Colours of `backbones` by pretraining method, and the legend entries of the methods among them.

    The palette is assigned over every backbone of the analysis, so a method keeps its colour across plots.
    """
    everyone = [e["backbone"] for e in analysis.overall + analysis.excluded]
    palette = colormaps["tab10"]
    all_methods = sorted({_method(analysis, b) for b in everyone + backbones})
    colour_of = {m: palette(i % 10) for i, m in enumerate(all_methods)}
    shown = sorted({_method(analysis, b) for b in backbones})
    return [colour_of[_method(analysis, b)] for b in backbones], {m: colour_of[m] for m in shown}


def _method(analysis: Analysis, backbone: str) -> str:
    return str(analysis.backbone_info.get(backbone, {}).get("pretraining_method") or "unknown")


def plot_overall(analysis: Analysis, path: Path) -> Path | None:
    # backbones seen only in single-backbone settings have no score to draw
    entries = [e for e in analysis.overall + analysis.excluded if e["score"] is not None]
    if not entries:
        return None
    names = [e["backbone"] + ("" if e["rank"] is not None else " (unranked)") for e in entries]
    scores = [e["score"] for e in entries]
    colours, by_method = _method_colours(analysis, [e["backbone"] for e in entries])
    fig = Figure(figsize=(8, 1.2 + 0.38 * len(entries)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(entries))
    bars = ax.barh(y, scores, color=colours, edgecolor="black", linewidth=0.5)
    for bar, e in zip(bars, entries, strict=True):
        if e["rank"] is None:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("overall score (mean z over tasks)")
    ax.set_title("Overall ranking")
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(facecolor=c, edgecolor="black", label=m) for m, c in by_method.items()]
    ax.legend(handles=handles, title="pretraining", loc="lower right", fontsize="small")
    return _save(fig, path)


def _heatmap(ax, fig: Figure, data: np.ndarray, cmap_name: str, vmin: float, vmax: float, label: str) -> None:
    cmap = colormaps[cmap_name].with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, label=label, shrink=0.9)
    if data.size <= 600:
        for (i, j), value in np.ndenumerate(data):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            dark = not math.isnan(value) and abs(value) > 0.6 * max(abs(vmin), abs(vmax))
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")


def plot_task_heatmap(analysis: Analysis, path: Path) -> Path | None:
    backbones = [e["backbone"] for e in analysis.overall + analysis.excluded]
    tasks = analysis.tasks
    if not backbones or not tasks:
        return None
    data = np.array([[analysis.task_scores[t].get(b, np.nan) for t in tasks] for b in backbones], dtype=float)
    bound = max(1.0, float(np.nanmax(np.abs(data)))) if np.isfinite(data).any() else 1.0
    fig = Figure(figsize=(2.5 + 1.1 * len(tasks), 1.5 + 0.35 * len(backbones)), layout="constrained")
    ax = fig.add_subplot()
    _heatmap(ax, fig, data, "RdYlGn", -bound, bound, "task score (z)")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(backbones)), backbones)
    ax.set_title("Per-task scores")
    return _save(fig, path)


def plot_task_correlation(analysis: Analysis, path: Path) -> Path | None:
    cm = analysis.task_correlation
    if len(cm.tasks) < 2 or not analysis.correlation_meaningful:
        return None  # too few common backbones: the report says so instead of drawing noise
    data = np.array([[np.nan if r is None else r for r in row] for row in cm.rho], dtype=float)
    side = 2.5 + 0.9 * len(cm.tasks)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    _heatmap(ax, fig, data, "coolwarm", -1.0, 1.0, "Spearman rho")
    ax.set_xticks(range(len(cm.tasks)), cm.tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(cm.tasks)), cm.tasks)
    ax.set_title("Task correlation")
    return _save(fig, path)


def _scatter_front(ax, analysis: Analysis, column: str, scale: float, xlabel: str) -> bool:
    """Score vs cost scatter with the Pareto front; False when no ranked backbone has this cost."""
    points = [(e, analysis.cost(e["backbone"], column)) for e in analysis.overall]
    points = [(e, c / scale) for e, c in points if c is not None]
    if not points:
        ax.set_axis_off()
        return False
    colours, by_method = _method_colours(analysis, [e["backbone"] for e, _ in points])
    xs = np.array([c for _, c in points])
    ys = np.array([e["score"] for e, _ in points])
    ax.scatter(xs, ys, c=colours, s=55, edgecolors="black", linewidths=0.5, zorder=3)
    for (e, c), y in zip(points, ys, strict=True):
        ax.annotate(e["backbone"], (c, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = analysis.pareto(column)
    ax.step(
        [f[column] / scale for f in front],
        [f["score"] for f in front],
        where="post",
        color="black",
        alpha=0.6,
        zorder=2,
        label="Pareto front",
    )
    if len(xs) > 1 and xs.min() > 0 and xs.max() / xs.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("overall score")
    ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=c, markeredgecolor="black", label=m)
        for m, c in by_method.items()
    ]
    ax.legend(handles=handles, fontsize="small", title="pretraining")
    return True


def plot_pareto_latency(analysis: Analysis, path: Path) -> Path | None:
    has_served = any(analysis.cost(e["backbone"], "served_latency_ms") is not None for e in analysis.overall)
    has_local = any(analysis.cost(e["backbone"], "latency_ms") is not None for e in analysis.overall)
    if not (has_local or has_served):
        return None
    panels = [("latency_ms", "in-process p50 latency (ms)")] if has_local else []
    if has_served:
        panels.append(("served_latency_ms", "served p50 latency (ms)"))
    fig = Figure(figsize=(6.5 * len(panels), 5), layout="constrained")
    for i, (column, label) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        _scatter_front(ax, analysis, column, 1.0, label)
        ax.set_title(f"Score vs {label.split(' p50')[0]} latency")
    return _save(fig, path)


def plot_pareto_params(analysis: Analysis, path: Path) -> Path | None:
    if not any(analysis.cost(e["backbone"], "params") is not None for e in analysis.overall):
        return None
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    _scatter_front(ax, analysis, "params", 1e6, "parameters (millions)")
    ax.set_title("Score vs parameters")
    return _save(fig, path)


REGIME_COLOURS = {"finetune": "#1f77b4", "frozen": "#ff7f0e", "random": "#7f7f7f"}
MAX_DETECTION_PANELS = 4


def plot_detection_regimes(analysis: Analysis, path: Path) -> Path | None:
    """Grouped bars (backbone x regime, CI whiskers) per detection setting, then the gap per family."""
    summary = analysis.detection
    groups = summary.groups()[:MAX_DETECTION_PANELS]
    if not groups:
        return None
    panels = len(groups) + (1 if summary.families else 0)
    fig = Figure(figsize=(6.0 * panels, 4.8), layout="constrained")
    for i, group in enumerate(groups, start=1):
        ax = fig.add_subplot(1, panels, i)
        rows = [r for r in summary.regimes if (r.protocol, r.dataset, r.variant) == group]
        backbones = list(dict.fromkeys(r.backbone for r in rows))
        regimes = [g for g in REGIME_COLOURS if any(r.regime == g for r in rows)]
        regimes += sorted({r.regime for r in rows} - set(regimes))
        width = 0.8 / len(regimes)
        for j, regime in enumerate(regimes):
            cells = {r.backbone: r for r in rows if r.regime == regime}
            xs = [k + (j - (len(regimes) - 1) / 2) * width for k, b in enumerate(backbones) if b in cells]
            shown = [cells[b] for b in backbones if b in cells]
            errors = np.array(
                [[r.mean - r.ci[0], r.ci[1] - r.mean] if r.ci else [0.0, 0.0] for r in shown]
            ).T.clip(min=0)
            ax.bar(xs, [r.mean for r in shown], width, yerr=errors, capsize=3, label=regime,
                   color=REGIME_COLOURS.get(regime, "#2ca02c"), edgecolor="black", linewidth=0.5)  # fmt: skip
        ax.set_xticks(range(len(backbones)), backbones, rotation=30, ha="right")
        ax.set_ylabel(rows[0].metric)
        ax.set_title(f"{group[0]} / {group[1]}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(title="regime", fontsize="small")
    if summary.families:
        ax = fig.add_subplot(1, panels, panels)
        labels = [f"{f.family}\n{f.protocol}/{f.dataset}" for f in summary.families]
        gaps = [f.mean_gap for f in summary.families]
        ax.bar(range(len(gaps)), gaps, color=["#2ca02c" if g >= 0 else "#d62728" for g in gaps],
               edgecolor="black", linewidth=0.5)  # fmt: skip
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(gaps)), labels, fontsize=8)
        ax.set_ylabel("fine-tuned - frozen (AP)")
        ax.set_title("Gain from end-to-end fine-tuning, by family")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
