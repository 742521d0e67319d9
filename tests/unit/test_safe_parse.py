"""Bounded JSON/YAML parsing (bobench.safe_parse): deep nesting, alias bombs, NaN/Infinity, sizes and
non-plain values are InvalidArgument naming the field and the limit, never a RecursionError."""

from __future__ import annotations

import math

import pytest

from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.safe_parse import check_plain, load_yaml, parse_json, parse_json_object

ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)  # fmt: skip


@pytest.mark.parametrize("depth", [100, 50_000, 100_000])
def test_deep_json_is_invalid_argument_naming_the_depth_limit(depth):
    with pytest.raises(
        InvalidArgument,
        match=r"config_json: nested deeper than max_json_depth=64 \(setting BOBENCH_MAX_JSON_DEPTH\)",
    ):
        parse_json("[" * depth + "]" * depth, "config_json")


def test_json_at_the_depth_limit_parses():
    assert parse_json("[" * 64 + "]" * 64, "x") is not None


@pytest.mark.parametrize("text", ['{"t": NaN}', '{"t": Infinity}', '{"t": -Infinity}', '{"t": 1e999}'])
def test_json_refuses_non_finite_numbers(text):
    with pytest.raises(InvalidArgument, match="ref_json: finite numbers only"):
        parse_json(text, "ref_json")


def test_json_refuses_an_integer_too_long_to_convert():
    with pytest.raises(InvalidArgument, match="ref_json"):
        parse_json('{"t": ' + "9" * 5000 + "}", "ref_json")


def test_json_over_the_size_limit_names_the_setting():
    limits = Settings(max_json_bytes=100)
    with pytest.raises(
        InvalidArgument, match="spec_json: 112 bytes exceed max_json_bytes=100 .*BOBENCH_MAX_JSON_BYTES"
    ):
        parse_json_object('{"p": "' + "x" * 103 + '"}', "spec_json", limits)


def test_json_object_required():
    with pytest.raises(InvalidArgument, match="must be a JSON object, got list"):
        parse_json_object("[1]", "f")
    assert parse_json_object('{"a": [1, 2.5, null, true]}', "f") == {"a": [1, 2.5, None, True]}


def test_a_half_kilobyte_alias_bomb_is_refused_before_it_expands():
    assert len(ALIAS_BOMB) < 600
    with pytest.raises(
        InvalidArgument,
        match=r"spec_yaml: aliases expand to more than max_yaml_alias_expansions=10000 \(setting BOBENCH_MAX_YAML_ALIAS_EXPANSIONS\)",
    ):
        load_yaml(ALIAS_BOMB + "name: *i\n", "spec_yaml")


def test_a_few_aliases_within_the_limit_still_load():
    data = load_yaml(
        "base: &b {ks: [5, 10]}\nprotocols: [{name: knn, config: *b}, {name: knn2, config: *b}]\n", "s"
    )
    assert data["protocols"][1]["config"] == {"ks": [5, 10]}


def test_the_alias_limit_is_a_setting():
    text = "a: &a [1, 2, 3, 4, 5]\nb: [*a, *a, *a]\n"
    assert load_yaml(text, "s", Settings(max_yaml_alias_expansions=20))["b"][2] == [1, 2, 3, 4, 5]
    with pytest.raises(InvalidArgument, match="max_yaml_alias_expansions=10 "):
        load_yaml(text, "s", Settings(max_yaml_alias_expansions=10))


def test_ten_thousand_nested_flow_lists_are_invalid_argument():
    with pytest.raises(InvalidArgument, match="spec_yaml: nested deeper than max_json_depth=64"):
        load_yaml("x: " + "[" * 10_000 + "]" * 10_000, "spec_yaml")


def test_yaml_over_max_spec_bytes_is_refused():
    with pytest.raises(InvalidArgument, match="max_spec_bytes=1048576"):
        load_yaml("d: " + "x" * (1 << 20), "spec_yaml")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.Inf"])
def test_yaml_refuses_non_finite_numbers_naming_the_path(value):
    with pytest.raises(
        InvalidArgument, match=r"spec_yaml\.protocols\[0\]\.config\.temperature: finite numbers only"
    ):
        load_yaml(f"protocols: [{{name: knn, config: {{temperature: {value}}}}}]", "spec_yaml")


def test_yaml_timestamps_load_as_text_and_python_tags_are_refused():
    assert load_yaml("description: 2026-12-02\n", "s") == {"description": "2026-12-02"}
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        load_yaml("name: !!python/object/apply:os.system ['true']\n", "s")


def test_yaml_keys_must_be_strings():
    with pytest.raises(InvalidArgument, match="keys must be strings"):
        load_yaml("1: x\n", "s")


def test_a_recursive_yaml_alias_is_refused_not_looped_on():
    with pytest.raises(InvalidArgument, match="nested deeper"):
        load_yaml("a: &a [*a]\n", "s")


def test_check_plain_accepts_json_data_and_refuses_the_rest():
    assert check_plain({"a": (1, 2.0, "x", None, True)}, "f") is not None
    with pytest.raises(InvalidArgument, match=r"f\.a\[1\]: finite numbers only"):
        check_plain({"a": [1, math.nan]}, "f")
    with pytest.raises(InvalidArgument, match="f.b: must be plain data"):
        check_plain({"b": object()}, "f")
