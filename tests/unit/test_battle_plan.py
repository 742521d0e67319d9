"""Planner: deterministic run keys, filters, and dataset failures carried as run errors."""

from __future__ import annotations

import pytest

from bobench.battle.plan import plan_battle
from bobench.battle.spec import parse_spec
from bobench.errors import InvalidArgument

SPEC = {
    "name": "p",
    "backbones": ["toy", "resnet18-random"],
    "datasets": ["toy", "lfw"],
    "protocols": ["knn", {"name": "linear_probe", "datasets": ["lfw"], "backbones": ["toy"]}],
    "seeds": [0, 1],
}


def test_plan_expands_the_grid_with_filters():
    plans = plan_battle(parse_spec(SPEC))
    # knn: 2 backbones x 2 datasets x 2 seeds; linear probe: toy x lfw x 2 seeds
    assert len(plans) == 8 + 2
    assert {(p.backbone, p.dataset) for p in plans if p.protocol == "linear_probe"} == {("toy", "lfw")}
    assert len({p.run_key for p in plans}) == len(plans)
    assert [p.backbone for p in plans] == sorted(
        [p.backbone for p in plans], key=["toy", "resnet18-random"].index
    )


def test_run_keys_are_deterministic_and_sensitive():
    keys = {p.run_key for p in plan_battle(parse_spec(SPEC))}
    assert keys == {p.run_key for p in plan_battle(parse_spec(SPEC))}
    changed = plan_battle(parse_spec({**SPEC, "protocols": [{"name": "knn", "config": {"ks": [3]}}]}))
    assert not keys & {p.run_key for p in changed}
    reseeded = plan_battle(parse_spec({**SPEC, "seeds": [2]}))
    assert not keys & {p.run_key for p in reseeded}


def test_unknown_backbone_protocol_or_config_invalidates_the_spec():
    with pytest.raises(InvalidArgument, match="did you mean 'toy'"):
        plan_battle(parse_spec({**SPEC, "backbones": ["toyy"], "protocols": ["knn"]}))
    with pytest.raises(InvalidArgument, match="unknown protocol 'knnn'"):
        plan_battle(parse_spec({**SPEC, "protocols": ["knnn"]}))
    with pytest.raises(InvalidArgument, match="unknown config key"):
        plan_battle(parse_spec({**SPEC, "protocols": [{"name": "knn", "config": {"kk": 1}}]}))


def test_a_dataset_that_cannot_load_becomes_failed_runs(tmp_path):
    spec = parse_spec(
        {
            **SPEC,
            "datasets": ["toy", {"name": "gone", "type": "imagefolder", "path": str(tmp_path / "x")}],
            "protocols": ["knn"],
        }
    )
    plans = plan_battle(spec)
    gone = [p for p in plans if p.dataset == "gone"]
    assert gone and all(p.error and "x" in p.error for p in gone)
    assert all(p.error is None for p in plans if p.dataset == "toy")
