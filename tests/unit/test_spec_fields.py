"""A misspelt battle-spec field is refused with the field it was probably meant to be, and a spec
file's errors name the file."""

from __future__ import annotations

import pytest

from bobench.battle.spec import load_spec, parse_spec, unknown_fields
from bobench.errors import InvalidArgument

GOOD = {"name": "t", "backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn"]}


@pytest.mark.parametrize(
    ("spec", "where", "expected"),
    [
        ({**{k: v for k, v in GOOD.items() if k != "protocols"}, "protocls": ["knn"]}, "top level",
         "unknown field 'protocls' (did you mean 'protocols'?)"),
        ({**GOOD, "seed": [1]}, "top level", "unknown field 'seed' (did you mean 'seeds'?)"),
        ({**GOOD, "protocols": [{"name": "knn", "confg": {}}]}, "protocols[0]",
         "unknown field 'confg' (did you mean 'config'?)"),
        ({**GOOD, "backbones": [{"name": "b", "source": "timm", "model_id": "resnet18", "wieghts": "random"}]},
         "backbones[0]", "unknown BackboneSpec field 'wieghts' (did you mean 'weights'?)"),
        ({**GOOD, "settings": {"batchsize": 8}}, "settings", "unknown setting 'batchsize' (did you mean 'batch_size'?)"),
        ({**GOOD, "recommend": {"max_latency": 5}}, "recommend",
         "unknown limit 'max_latency' (did you mean 'max_latency_ms'?)"),
    ],
)  # fmt: skip
def test_an_unknown_field_suggests_the_close_one(spec, where, expected):
    with pytest.raises(InvalidArgument) as info:
        parse_spec(spec)
    assert f"battle spec: {where}: {expected}" in str(info.value)


def test_a_field_like_nothing_known_is_named_with_the_allowed_ones():
    message = unknown_fields({"zzz", "protocls"}, {"protocols", "seeds"})
    assert (
        message == "unknown fields 'protocls' (did you mean 'protocols'?), 'zzz'; allowed: protocols, seeds"
    )


def test_a_spec_file_error_names_the_file(tmp_path):
    path = tmp_path / "battle.yaml"
    path.write_text("name: t\nbackbones: [toy]\ndatasets: [toy]\nprotocls: [knn]\n")
    with pytest.raises(InvalidArgument) as info:
        load_spec(path)
    assert str(info.value).startswith(f"battle spec {path}: top level: unknown field 'protocls'")
    path.write_text("name: [unclosed\n")  # the YAML loader's own error names the file once
    with pytest.raises(InvalidArgument) as info:
        load_spec(path)
    assert str(info.value).count(str(path)) == 1


def test_an_unknown_protocol_config_key_suggests_the_close_one():
    from bobench.protocols import get_protocol

    with pytest.raises(InvalidArgument) as info:
        get_protocol("knn").resolve_config({"kk": [5]})
    assert "unknown config key(s) ['kk'] (did you mean 'ks'?); known: " in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        get_protocol("knn").resolve_config({"zzzzz": 1})
    assert "did you mean" not in str(info.value)
