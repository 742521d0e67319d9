"""Range checks of every protocol's numeric knobs, run when a config is resolved (`Protocol.resolve_config`),
so a bad value is refused while the run is planned — before the evaluator loads a dataset or embeds
an image — instead of hanging or failing deep inside a fit.

Each check reuses the protocol's own parsing (`bobench.protocols.options`, the torch-free config
modules of fine-tuning and detection: so plan-time and run-time agree, and the scheduler needs no
torch) and adds upper bounds
that keep one run finite (a kNN k, a solver's `max_iter`, efficiency's step counts). Raises
InvalidArgument naming the protocol and the key. `check_config(name, resolved, given)` is the one
entry; a protocol without an entry here has only the generic checks of `resolve_config`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bobench.detection.config import parse_config
from bobench.errors import InvalidArgument
from bobench.finetune.config import FinetuneConfig
from bobench.protocols.latency import Budget
from bobench.protocols.metrics import positive_float, positive_ints
from bobench.protocols.options import (
    BUDGET_KEYS,
    check_mask_head,
    check_ood_domains,
    fewshot_options,
    query_variants,
    resolve_corruptions,
    resolve_grid,
    resolve_severities,
    serving_latency_settings,
    solver_options,
)
from bobench.safe_parse import DEFAULT_LIMITS

MAX_K = 10_000  # kNN / retrieval cut-offs and few-shot shot counts
MAX_SOLVER_ITER = 100_000
MAX_GRID_VALUES = 1_000
MAX_DRAWS = 100  # few-shot draws per shot count
MAX_FOLDS = 100
MAX_STEPS = 1_000_000  # efficiency step counts
MAX_MIN_TIME_S = 600.0
MAX_EPOCHS = 10_000


def _at_most(values: list[int] | int, bound: int, where: str) -> None:
    for value in values if isinstance(values, list) else [values]:
        if value > bound:
            raise InvalidArgument(f"{where} must be <= {bound}, got {value}")


def _int_in(value: Any, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{where} must be an integer in {low}..{high}, got {value!r}")
    return value


def _names(value: Any, where: str) -> None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise InvalidArgument(f"{where} must be a split name or a non-empty list of them, got {value!r}")


def _probe(config: dict[str, Any], where: str) -> None:
    """C grid and solver options shared by linear_probe, fewshot and ood."""
    if len(resolve_grid(config, where)) > MAX_GRID_VALUES:
        raise InvalidArgument(f"{where}: 'grid' holds more than {MAX_GRID_VALUES} C values")
    solver = solver_options(config, where)
    _at_most(solver["max_iter"], MAX_SOLVER_ITER, f"{where}: 'max_iter'")
    if not solver["tol"] < 1:
        raise InvalidArgument(f"{where}: 'tol' must be < 1, got {solver['tol']!r}")


def _knn(config: dict[str, Any], _given: dict[str, Any]) -> None:
    _at_most(positive_ints(config["ks"], "knn: 'ks'"), MAX_K, "knn: 'ks'")
    positive_float(config["temperature"], "knn: 'temperature'")
    _names(config["bank_splits"], "knn: 'bank_splits'")
    _names(config["query_split"], "knn: 'query_split'")


def _linear_probe(config: dict[str, Any], _given: dict[str, Any]) -> None:
    _probe(config, "linear_probe")


def _fewshot(config: dict[str, Any], _given: dict[str, Any]) -> None:
    shots, draws, _selection, folds = fewshot_options(config)
    _at_most(shots, MAX_K, "fewshot: 'shots'")
    _at_most(draws, MAX_DRAWS, "fewshot: 'seeds'")
    _at_most(folds, MAX_FOLDS, "fewshot: 'cv_folds'")
    _probe(config, "fewshot")


def _retrieval(config: dict[str, Any], _given: dict[str, Any]) -> None:
    _at_most(positive_ints(config["ks"], "retrieval: 'ks'"), MAX_K, "retrieval: 'ks'")
    query_variants(config["query_variant"])
    _names(config["query_split"], "retrieval: 'query_split'")
    _names(config["gallery_split"], "retrieval: 'gallery_split'")


def _ood(config: dict[str, Any], _given: dict[str, Any]) -> None:
    resolve_corruptions(config["corruptions"])
    resolve_severities(config["severities"])
    _probe(config, "ood")


def _efficiency(config: dict[str, Any], _given: dict[str, Any]) -> None:
    max_batch = DEFAULT_LIMITS.max_batch_size
    _at_most(positive_ints(config["batch_sizes"], "efficiency: 'batch_sizes'"), max_batch,
             "efficiency: 'batch_sizes' (max_batch_size)")  # fmt: skip
    budget = Budget(**{k: config[k] for k in BUDGET_KEYS})  # its own type and order checks
    for name in ("warmup_steps", "timed_steps", "max_timed_steps", "block_steps", "block_warmup_steps"):
        _at_most(getattr(budget, name), MAX_STEPS, f"efficiency: {name!r}")
    if budget.min_time_s > MAX_MIN_TIME_S:
        raise InvalidArgument(
            f"efficiency: 'min_time_s' must be <= {MAX_MIN_TIME_S}, got {budget.min_time_s!r}"
        )
    if not isinstance(config["flops"], bool):
        raise InvalidArgument(f"efficiency: 'flops' must be true or false, got {config['flops']!r}")


def _finetune(_config: dict[str, Any], given: dict[str, Any]) -> None:
    recipe = FinetuneConfig.from_dict(given, "finetune protocol config")  # the recipe's own checks
    _int_in(recipe.epochs, 1, MAX_EPOCHS, "finetune: 'epochs'")
    for name in ("batch_size", "eval_batch_size"):
        _int_in(
            getattr(recipe, name), 1, DEFAULT_LIMITS.max_batch_size, f"finetune: {name!r} (max_batch_size)"
        )
    _int_in(recipe.layer_decay_groups, 1, 1_000, "finetune: 'layer_decay_groups'")
    _int_in(recipe.lr_base_batch_size, 1, 1 << 20, "finetune: 'lr_base_batch_size'")
    if len(recipe.lr_grid) > MAX_GRID_VALUES:
        raise InvalidArgument(f"finetune: 'lr_grid' holds more than {MAX_GRID_VALUES} values")


def _detection(config: dict[str, Any], _given: dict[str, Any]) -> None:
    parse_config(config, "detection")  # the run's own checks: every range, choice and flag


def _instance_segmentation(config: dict[str, Any], _given: dict[str, Any]) -> None:
    check_mask_head(config)
    parse_config(config, "instance_segmentation")


def _ood_detection(config: dict[str, Any], _given: dict[str, Any]) -> None:
    check_ood_domains(config)
    parse_config(config, "ood_detection")


def _serving_latency(config: dict[str, Any], _given: dict[str, Any]) -> None:
    serving_latency_settings(config)  # the sweep's and the scenarios' own checks (bounds included)


CHECKS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "knn": _knn,
    "linear_probe": _linear_probe,
    "fewshot": _fewshot,
    "retrieval": _retrieval,
    "ood": _ood,
    "efficiency": _efficiency,
    "finetune": _finetune,
    "detection": _detection,
    "instance_segmentation": _instance_segmentation,
    "ood_detection": _ood_detection,
    "serving_latency": _serving_latency,
}


def check_config(name: str, resolved: dict[str, Any], given: dict[str, Any]) -> None:
    """Range-check protocol `name`'s config (`resolved`: defaults overlaid with `given`)."""
    check = CHECKS.get(name)
    if check is not None:
        check(resolved, given)
