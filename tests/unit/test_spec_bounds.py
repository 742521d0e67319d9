"""Battle specs are bounded: seeds fit int64, names fit max_name_length, settings.batch_size fits
max_batch_size, values are plain finite data; YAML specs go through the bounded loader."""

from __future__ import annotations

import pytest

from bobench.battle.plan import plan_battle
from bobench.battle.spec import load_spec, load_spec_yaml, parse_spec
from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.rpc.limits import count_runs

GOOD = {"name": "b", "backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn"]}


def test_seed_two_to_the_63_is_refused_and_the_largest_int64_is_accepted():
    with pytest.raises(
        InvalidArgument, match=r"seeds: must be a non-empty list of integers 0 <= seed < 2\*\*63"
    ):
        parse_spec({**GOOD, "seeds": [2**63]})
    assert parse_spec({**GOOD, "seeds": [2**63 - 1]}).seeds == (2**63 - 1,)


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"name": "n" * 10_000}, "name"),
        ({"backbones": ["b" * 300]}, "backbones[0]"),
        ({"datasets": [{"name": "d" * 300, "ref": "toy"}]}, "datasets[0].name"),
        ({"protocols": ["p" * 300]}, "protocols[0]"),
        ({"protocols": [{"name": "knn", "datasets": ["x" * 300]}]}, "protocols[0].datasets[0]"),
    ],
)
def test_names_longer_than_max_name_length_are_refused_quoting_only_their_start(changes, where):
    with pytest.raises(InvalidArgument) as info:
        parse_spec({**GOOD, **changes})
    message = str(info.value)
    assert f"battle spec: {where}:" in message and "max_name_length=256" in message
    assert len(message) < 300


def test_max_name_length_is_a_setting():
    assert parse_spec({**GOOD, "name": "n" * 300}, limits=Settings(max_name_length=300)).name == "n" * 300


def test_settings_batch_size_is_bounded():
    with pytest.raises(InvalidArgument, match="settings.batch_size.*max_batch_size=4096"):
        parse_spec({**GOOD, "settings": {"batch_size": 2**31 - 1}})
    assert parse_spec({**GOOD, "settings": {"batch_size": 4096}}).settings == {"batch_size": 4096}


def test_non_finite_values_anywhere_in_a_spec_are_refused_naming_the_path():
    spec = {**GOOD, "protocols": [{"name": "knn", "config": {"temperature": float("inf")}}]}
    with pytest.raises(
        InvalidArgument, match=r"battle spec\.protocols\[0\]\.config\.temperature: finite numbers only"
    ):
        parse_spec(spec)


def test_a_protocol_knob_out_of_range_fails_the_spec():
    with pytest.raises(InvalidArgument, match="'max_iter'"):
        plan_battle(parse_spec({**GOOD, "protocols": [{"name": "linear_probe", "config": {"max_iter": -1}}]}))


def test_load_spec_yaml_goes_through_the_bounded_loader(tmp_path):
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    with pytest.raises(InvalidArgument, match="spec_yaml: aliases expand"):
        load_spec_yaml(bomb + "description: *h\n")
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb + "description: *h\n")
    with pytest.raises(InvalidArgument, match=f"battle spec {path}: aliases expand"):
        load_spec(path)
    path.write_text("backbones: [toy]\ndatasets: [toy]\nprotocols: [knn]\n")
    assert load_spec(path).name == "bomb"


def test_count_runs_matches_the_planner():
    spec = parse_spec(
        {
            "name": "count",
            "backbones": ["toy"],
            "datasets": [{"name": f"toy-s{s}", "ref": {"name": "toy", "split_seed": s}} for s in range(3)],
            "protocols": [
                "knn",
                {"name": "fewshot", "datasets": ["toy-s0"]},
                {"name": "linear_probe", "backbones": ["toy"]},
            ],
            "seeds": [0, 1],
        }
    )
    assert count_runs(spec) == len(plan_battle(spec)) == 3 + 2 + 3  # knn once per dataset; fewshot per seed
