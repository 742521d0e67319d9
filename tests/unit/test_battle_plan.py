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
    # knn and the linear probe are deterministic: one run per split seed (dataset), not per seed
    # knn: 2 backbones x 2 datasets; linear probe: toy x lfw
    assert len(plans) == 4 + 1
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
    seeded = {**SPEC, "protocols": ["fewshot"]}
    fewshot_keys = {p.run_key for p in plan_battle(parse_spec(seeded))}
    reseeded = plan_battle(parse_spec({**seeded, "seeds": [2]}))
    assert not fewshot_keys & {p.run_key for p in reseeded}


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


def test_seeded_protocols_run_once_per_seed_and_deterministic_ones_once_per_split_seed():
    spec = {
        **SPEC,
        "backbones": ["toy"],
        "datasets": ["toy"],
        "protocols": ["fewshot", "knn"],
        "seeds": [3, 4],
    }
    plans = plan_battle(parse_spec(spec))
    fewshot = [p for p in plans if p.protocol == "fewshot"]
    knn = [p for p in plans if p.protocol == "knn"]
    assert sorted(p.seed for p in fewshot) == [3, 4] and all(p.seeded for p in fewshot)
    assert [(p.seed, p.seeded) for p in knn] == [(3, False)]  # the first seed seeds its bootstrap
    record = knn[0].new_record()
    assert record.seeded is False and fewshot[0].new_record().seeded is True
    # another split seed is another dataset: one more knn run
    two_splits = {**spec, "datasets": ["toy", {"name": "toy-s1", "ref": {"name": "toy", "split_seed": 1}}]}
    assert sum(p.protocol == "knn" for p in plan_battle(parse_spec(two_splits))) == 2


def test_deterministic_protocols_are_registered_unseeded_and_others_seeded():
    from bobench.protocols import get_protocol

    for name in ("knn", "linear_probe", "retrieval", "ood", "efficiency", "serving_latency"):
        assert get_protocol(name).seeded is False, name
    for name in ("fewshot", "finetune"):
        assert get_protocol(name).seeded is True, name


def test_a_protocol_is_seeded_unless_it_says_otherwise():
    from bobench.protocols.base import Protocol

    assert Protocol(name="x", version="1", task="classification", evaluate=lambda c, k, s: {}).seeded


def test_unseeded_run_keys_differ_from_the_per_seed_keys_and_survive_more_seeds():
    from bobench.battle.plan import run_key

    one = plan_battle(parse_spec({**SPEC, "protocols": ["knn"], "seeds": [0]}))
    more = plan_battle(parse_spec({**SPEC, "protocols": ["knn"], "seeds": [0, 1, 2]}))
    assert [p.run_key for p in one] == [p.run_key for p in more]  # finished keys are reused
    legacy = run_key({"x": 1}, "d", "knn", "1", {}, 0)
    assert legacy != run_key({"x": 1}, "d", "knn", "1", {}, 0, seeded=False)


def test_single_run_plans_the_same_unseeded_key_as_the_battle():
    from bobench.battle.single_run import plan_single_run

    (battle,) = plan_battle(
        parse_spec({**SPEC, "backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn"]})
    )
    assert plan_single_run("toy", "toy", "knn", seed=0).run_key == battle.run_key
