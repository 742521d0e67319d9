"""The protocols' option parsing, torch-free: what a config value means and when it is refused.

Both the plan-time checks (`bobench.protocols.config_checks`, run by the scheduler, which has no
torch) and the protocols' own `evaluate` (in the evaluator) parse a config with these functions, so
plan time and run time agree. Every function raises InvalidArgument naming the protocol and the key.
This module imports only numpy and light bobench modules; it must never import a protocol module.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument
from bobench.protocols.metrics import positive_float, positive_ints

# linear probe, few-shot and OOD probes: the C grid and the solver
DEFAULT_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 4, 31))
GRIDS: dict[str, tuple[float, ...]] = {
    "default": DEFAULT_GRID,
    "dinov2": tuple(float(c) for c in np.logspace(-6, 5, 45)),  # DINOv2 eval/log_regression.py
}

# few-shot
SELECTIONS = ("kshot_val", "cv", "full_val")
SHOT_PRESETS = {"elevater": [5, 20, 50]}

# retrieval
DEFAULT_KS = (1, 5, 10)

# ood: one corruption from each ImageNet-C family: noise, blur, weather, digital
DEFAULT_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "fog", "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)

# efficiency: the config keys that make up its `latency.Budget`
BUDGET_KEYS = (
    "warmup_steps",
    "timed_steps",
    "min_time_s",
    "max_timed_steps",
    "block_steps",
    "block_warmup_steps",
)

# serving_latency: the sweep's reported percentiles, server-side phases and the grid of named metrics
SERVING_PERCENTILES = (50, 90, 95, 99)
SERVING_BREAKDOWN = ("queue", "compute_input", "compute_infer", "compute_output")
_SERVING_GRID_BATCH = (1, 2, 4, 8, 16, 32, 64)
_SERVING_GRID_CONCURRENCY = (1, 2, 4, 8, 16, 32)


def resolve_grid(config: dict[str, Any], where: str) -> np.ndarray:
    """The C grid of a protocol config (`grid`: a list of C, a name in GRIDS, or None for DEFAULT_GRID)."""
    grid = config.get("grid")
    if grid is None:
        return np.asarray(DEFAULT_GRID)
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise InvalidArgument(
                f"{where}: unknown grid {grid!r}; known: {sorted(GRIDS)} or a list of C values"
            )
        return np.asarray(GRIDS[grid])
    if not isinstance(grid, list | tuple) or not grid:
        raise InvalidArgument(
            f"{where}: 'grid' must be a non-empty list of C values, a preset name or null, got {grid!r}"
        )
    return np.asarray([positive_float(c, f"{where}: grid value") for c in grid])


def solver_options(config: dict[str, Any], where: str) -> dict[str, Any]:
    """max_iter and tol from a protocol config, validated."""
    max_iter = config.get("max_iter")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter <= 0:
        raise InvalidArgument(f"{where}: 'max_iter' must be a positive integer, got {max_iter!r}")
    return {"max_iter": max_iter, "tol": positive_float(config.get("tol"), f"{where}: 'tol'")}


def fewshot_options(config: dict[str, Any]) -> tuple[list[int], int, str, int]:
    """(shot counts, draws, selection, cv folds) of a resolved few-shot config, validated."""
    shots = config["shots"]
    if isinstance(shots, str):
        if shots not in SHOT_PRESETS:
            raise InvalidArgument(f"fewshot: unknown 'shots' preset {shots!r}; known: {sorted(SHOT_PRESETS)}")
        shots = SHOT_PRESETS[shots]
    shot_counts = positive_ints(shots, "fewshot: 'shots'")
    repeats = positive_ints(config["seeds"], "fewshot: 'seeds'")
    if len(repeats) != 1:
        raise InvalidArgument(
            f"fewshot: 'seeds' is the number of draws (one integer), got {config['seeds']!r}"
        )
    if config["selection"] not in SELECTIONS:
        raise InvalidArgument(
            f"fewshot: 'selection' must be one of {SELECTIONS}, got {config['selection']!r}"
        )
    folds = positive_ints(config["cv_folds"], "fewshot: 'cv_folds'")
    if len(folds) != 1 or folds[0] < 2:
        raise InvalidArgument(f"fewshot: 'cv_folds' must be one integer >= 2, got {config['cv_folds']!r}")
    return shot_counts, repeats[0], config["selection"], folds[0]


def query_variants(value: Any) -> tuple[list[str | None], bool]:
    """(variants, is_list) from retrieval's `query_variant` config value."""
    if value is None or isinstance(value, str):
        return [value], False
    if isinstance(value, list | tuple) and value and all(v is None or isinstance(v, str) for v in value):
        return list(value), True
    raise InvalidArgument(
        f"retrieval: 'query_variant' must be null, a string or a non-empty list of them, got {value!r}"
    )


def resolve_corruptions(value: Any) -> list[str]:
    """The configured corruption names: a list, "all" (the 15 common ones), "all+extra" (all 19) or
    null/[] (none).

    Raises InvalidArgument for an unknown name (with close matches) or a malformed value.
    """
    if value is None or value == []:
        return []
    from bobench.data.corruptions import COMMON_CORRUPTIONS, CORRUPTIONS

    known = list(CORRUPTIONS)
    if value == "all":
        return list(COMMON_CORRUPTIONS)
    if value == "all+extra":
        return known
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(
            f"ood: 'corruptions' must be a list of names, 'all', 'all+extra' or null, got {value!r}"
        )
    for name in value:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InvalidArgument(
                f"ood: unknown corruption {name!r} in 'corruptions'{hint} (known: {', '.join(known)})"
            )
    return list(dict.fromkeys(value))


def resolve_severities(value: Any) -> list[int]:
    """Severities 1..5 from a list, a single int or "all"; InvalidArgument otherwise."""
    if value == "all":
        return list(SEVERITIES)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise InvalidArgument(
            f"ood: 'severities' must be a non-empty list of integers 1..5 or 'all', got {value!r}"
        )
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES:
            raise InvalidArgument(f"ood: severity {s!r} in 'severities' is not an integer in 1..5")
    return sorted(set(value))


def check_mask_head(config: dict[str, Any]) -> None:
    """Instance segmentation needs Mask R-CNN: any other head is an InvalidArgument naming `head`."""
    if config["head"] != "mask_rcnn":
        raise InvalidArgument(
            f"protocol 'instance_segmentation': head must be mask_rcnn, got {config['head']!r}"
        )


def check_ood_domains(config: dict[str, Any]) -> None:
    """ood_detection: `source_sites` a non-empty list of site names, `target` null or a dataset ref
    (a name or a mapping); InvalidArgument naming the key otherwise."""
    sites = config["source_sites"]
    if not isinstance(sites, list) or not sites or not all(isinstance(s, str) and s for s in sites):
        raise InvalidArgument(
            f"protocol 'ood_detection': source_sites must be a non-empty list of site names, got {sites!r}"
        )
    target = config["target"]
    if target is not None and not (isinstance(target, str) and target or isinstance(target, dict)):
        raise InvalidArgument(
            "protocol 'ood_detection': target must be null or a dataset ref (a name or a mapping), "
            f"got {type(target).__name__}"
        )


def serving_latency_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Raise InvalidArgument for a bad serving_latency sweep or scenario key; return the scenario settings."""
    from bobench.protocols.serving_scenarios import scenario_settings

    for key in ("batch_sizes", "concurrencies"):
        values = config[key]
        if not values or not all(isinstance(v, int) and v >= 1 for v in values):
            raise InvalidArgument(
                f"serving_latency config {key!r} must be a non-empty list of positive ints, got {values!r}"
            )
    if not 1 <= config["stable_windows"] <= config["max_windows"]:
        raise InvalidArgument(
            f"serving_latency config needs 1 <= stable_windows <= max_windows, got "
            f"{config['stable_windows']} and {config['max_windows']}"
        )
    if config["window_s"] <= 0 or config["stability_pct"] <= 0:
        raise InvalidArgument("serving_latency config window_s and stability_pct must be positive")
    return scenario_settings(config)


def serving_latency_higher_is_better() -> dict[str, bool]:
    """Directions of every metric serving_latency may name (the sweep grid and the scenarios)."""
    from bobench.protocols.serving_scenarios import higher_is_better

    out: dict[str, bool] = {}
    for b in _SERVING_GRID_BATCH:
        for c in _SERVING_GRID_CONCURRENCY:
            tag = f"b{b}_c{c}"
            out[f"throughput_ips_{tag}"] = True
            for q in SERVING_PERCENTILES:
                out[f"latency_ms_p{q}_{tag}"] = False
            for phase in (*SERVING_BREAKDOWN, "request"):
                out[f"server_{phase}_ms_{tag}"] = False
    return {**out, **higher_is_better()}
