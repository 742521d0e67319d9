"""Battle spec parsing: valid specs round-trip; every malformed field is named in the error."""

from __future__ import annotations

import pytest

from bobench.battle.spec import load_spec, parse_spec
from bobench.errors import InvalidArgument

GOOD = {
    "name": "t",
    "backbones": ["toy"],
    "datasets": ["toy", {"name": "mine", "type": "imagefolder", "path": "imgs"}],
    "protocols": ["linear_probe", {"name": "knn", "config": {"ks": [5]}, "datasets": ["toy"]}],
    "seeds": [0, 1],
}


def test_parse_valid_spec_resolves_relative_paths(tmp_path):
    spec = parse_spec(GOOD, base_dir=tmp_path)
    assert spec.backbones == ("toy",)
    assert spec.datasets[1].ref["path"] == str((tmp_path / "imgs").resolve())
    assert spec.protocols[1].config == {"ks": [5]} and spec.protocols[1].datasets == ("toy",)
    assert spec.seeds == (0, 1)
    assert parse_spec(spec.to_dict()).to_dict() == spec.to_dict()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"backbones": []}, "backbones"),
        ({"backbones": None}, "backbones"),
        ({"backbones": ["toy", "toy"]}, "backbones"),
        ({"backbones": [3]}, "backbones[0]"),
        ({"datasets": [42]}, "datasets[0]"),
        ({"protocols": [{"config": {}}]}, "protocols[0]"),
        ({"protocols": [{"name": "knn", "config": [1]}]}, "protocols[0].config"),
        ({"protocols": [{"name": "knn", "datasets": ["nope"]}]}, "protocols[0].datasets"),
        ({"protocols": [{"name": "knn", "backbones": ["other"]}]}, "protocols[0].backbones"),
        ({"protocols": [{"name": "knn", "backbones": []}]}, "protocols[0].backbones"),
        ({"seeds": [-1]}, "seeds"),
        ({"seeds": "zero"}, "seeds"),
        ({"settings": {"batch_size": -4}}, "settings"),
        ({"embedder": "tpu"}, "embedder"),
        ({"colour": "blue"}, "top level"),
    ],
)
def test_malformed_spec_names_the_field(patch, field):
    with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_spec({**GOOD, **patch})


def test_load_spec_rejects_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbones: [toy\n")
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        load_spec(bad)


def test_custom_backbone_entries_register_and_plan(tmp_path):
    from bobench.backbones import get_spec
    from bobench.battle.plan import plan_battle

    data = {
        "name": "c",
        "datasets": ["toy"],
        "protocols": ["knn"],
        "backbones": [
            {"name": "my-resnet18", "source": "timm", "model_id": "resnet18", "weights": "random", "seed": 3}
        ],
    }
    spec = parse_spec(data, base_dir=tmp_path)
    assert spec.backbones == ("my-resnet18",)
    plans = plan_battle(spec)
    assert plans[0].backbone == "my-resnet18" and get_spec("my-resnet18").model_id == "resnet18"
    plan_battle(parse_spec(data))  # identical definition: fine
    clash = {**data, "backbones": [{**data["backbones"][0], "seed": 4}]}
    with pytest.raises(InvalidArgument, match="different definition"):
        plan_battle(parse_spec(clash))


def test_custom_backbone_needs_source_and_known_fields():
    with pytest.raises(InvalidArgument, match=r"backbones\[0\].*missing \['source'"):
        parse_spec({**GOOD, "backbones": [{"name": "x", "model_id": "resnet18"}]})
    with pytest.raises(InvalidArgument, match="unknown BackboneSpec field"):
        parse_spec({**GOOD, "backbones": [{"name": "x", "source": "timm", "model_id": "r", "colour": 1}]})
