"""Plan a single stand-alone run (what `bob evaluate` and the Evaluator service execute).

A single run is planned exactly like one cell of a battle, so its run key equals the key the same
(backbone, dataset, protocol, config, seed) gets inside any battle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bobench.battle.plan import RunPlan, plan_battle
from bobench.battle.spec import parse_spec
from bobench.errors import InvalidArgument


def _check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{field}: must be a non-empty name, got {value!r}")
    return value


def plan_single_run(
    backbone: str | dict[str, Any],
    dataset: str | dict[str, Any],
    protocol: str,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    *,
    dataset_name: str | None = None,
    battle_id: str | None = None,
    dataset_loader: Callable[[Any], Any] | None = None,
    embedder_variant: str = "onnx",
) -> RunPlan:
    """The plan of one run; `backbone` is a registered name or a user-defined backbone (a mapping of
    BackboneSpec fields, as in a battle spec's `backbones`, registered on planning); `dataset` is a
    registered name or a structured ref ({"type": ...}).

    Returns a RunPlan whose run key matches the battle planner's. Raises InvalidArgument (naming the
    field) for an empty or unknown backbone/protocol, a dataset that cannot be loaded, a bad config
    key, or a seed that is not a non-negative integer.
    """
    if not isinstance(backbone, dict):
        _check_name(backbone, "backbone")
    _check_name(protocol, "protocol")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgument(f"seed: must be a non-negative integer, got {seed!r}")
    if config is not None and not isinstance(config, dict):
        raise InvalidArgument(f"config: must be a mapping, got {type(config).__name__}")
    if isinstance(dataset, dict):
        if not isinstance(dataset.get("type", dataset.get("name")), str):
            raise InvalidArgument(
                f"dataset: a structured reference needs a 'type' (source) or 'name' (registered dataset) string, "
                f"got {dataset!r}"
            )
        if not dataset_name and "type" not in dataset:  # a registered dataset with options
            from bobench.data import dataset_ref_key

            dataset_name = dataset_ref_key(dataset)
        entry: str | dict[str, Any] = {"ref": dataset, **({"name": dataset_name} if dataset_name else {})}
    else:
        _check_name(dataset, "dataset")
        entry = {"name": dataset_name, "ref": dataset} if dataset_name else dataset
    spec = parse_spec(
        {
            "name": battle_id or "single-run",
            "backbones": [backbone],
            "datasets": [entry],
            "protocols": [{"name": protocol, "config": dict(config or {})}],
            "seeds": [seed],
            "embedder_variant": embedder_variant,
        }
    )
    (plan,) = plan_battle(spec, battle_id=battle_id, dataset_loader=dataset_loader)
    if plan.error:
        raise InvalidArgument(plan.error)
    return plan
