"""Bounded parsing of client-supplied text: JSON and YAML with size, nesting-depth and alias limits,
plain data only (string keys, finite numbers).

Every client-facing parse of `config_json`, `ref_json`, `spec_json` and `spec_yaml` goes through here,
so a hostile document fails fast with an InvalidArgument that names the field and the limit (and the
setting that raises it) instead of a RecursionError, a 58 MB alias expansion or a NaN that breaks a
run key later. The limits are `bobench.config.Settings` fields (`max_json_bytes`, `max_json_depth`,
`max_spec_bytes`, `max_yaml_alias_expansions`); callers without settings get their defaults.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

import yaml

from bobench.config import ENV_PREFIX, Settings
from bobench.errors import InvalidArgument

DEFAULT_LIMITS = Settings()


def limit_hint(name: str, limits: Settings | None = None) -> str:
    """'max_json_depth=64 (setting BOBENCH_MAX_JSON_DEPTH)': a limit as error messages name it."""
    value = getattr(limits or DEFAULT_LIMITS, name)
    return f"{name}={value} (setting {ENV_PREFIX}{name.upper()})"


def _path(parent: str, key: Any) -> str:
    return f"{parent}[{key}]" if isinstance(key, int) else f"{parent}.{key}"


def check_plain(value: Any, field: str, limits: Settings | None = None) -> Any:
    """`value` if it is plain JSON data: dicts with string keys, lists (or tuples), strings, bools,
    None, ints and finite floats, nested at most `max_json_depth` deep. Walks iteratively (no recursion limit).
    Raises InvalidArgument naming the offending path (e.g. "spec.protocols[0].config.temperature")."""
    max_depth = (limits or DEFAULT_LIMITS).max_json_depth
    stack = [(value, field, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise InvalidArgument(f"{field}: nested deeper than {limit_hint('max_json_depth', limits)}")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidArgument(
                            f"{where}: keys must be strings, got {type(key).__name__} {key!r}"
                        )
                    stack.append((child, _path(where, key), depth + 1))
            else:
                stack.extend((child, _path(where, i), depth + 1) for i, child in enumerate(item))
        elif isinstance(item, numbers.Real) and not isinstance(item, int):  # floats, numpy scalars
            if not math.isfinite(item):
                raise InvalidArgument(f"{where}: finite numbers only, got {item!r}")
        elif item is not None and not isinstance(item, str | int):
            raise InvalidArgument(f"{where}: must be plain data (text, number, list, mapping), got "
                                  f"{type(item).__name__}")  # fmt: skip
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"finite numbers only, got {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"finite numbers only, got {text[:40]}")
    return value


def _check_size(text: str | bytes, field: str, setting: str, limits: Settings | None) -> None:
    size = len(text.encode() if isinstance(text, str) else text)
    if size > getattr(limits or DEFAULT_LIMITS, setting):
        raise InvalidArgument(f"{field}: {size} bytes exceed {limit_hint(setting, limits)}")


def parse_json(text: str, field: str, limits: Settings | None = None) -> Any:
    """`text` parsed as JSON, bounded: at most `max_json_bytes`, `max_json_depth` levels, finite numbers
    only (NaN, Infinity and 1e999 refused), integers of at most 4300 digits. Raises InvalidArgument
    naming `field`."""
    _check_size(text, field, "max_json_bytes", limits)
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{field}: not valid JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise InvalidArgument(f"{field}: nested deeper than {limit_hint('max_json_depth', limits)}") from None
    except ValueError as exc:  # our constant/float refusals, or an integer too long to convert
        raise InvalidArgument(f"{field}: {exc}") from None
    return check_plain(value, field, limits)


def parse_json_object(text: str, field: str, limits: Settings | None = None) -> dict[str, Any]:
    """`parse_json` that must give an object; InvalidArgument naming `field` otherwise."""
    value = parse_json(text, field, limits)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field}: must be a JSON object, got {type(value).__name__}")
    return value


class BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses, while composing, documents nested deeper than
    `max_json_depth` or whose aliases expand to more than `max_yaml_alias_expansions` nodes beyond the
    document's own (a "billion laughs" bomb is refused before anything is expanded). Timestamps and
    binary scalars load as plain text (specs are JSON-shaped data)."""

    limits: Settings = DEFAULT_LIMITS
    field: str = "yaml"

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0  # nodes written in the document
        self._weight: dict[int, int] = {}  # id(node) -> nodes it expands to, aliases included

    def _weigh(self, node: yaml.Node) -> int:
        if isinstance(node, yaml.SequenceNode):
            weight = 1 + sum(self._weight.get(id(child), 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            weight = 1 + sum(self._weight.get(id(k), 1) + self._weight.get(id(v), 1) for k, v in node.value)
        else:
            weight = 1
        self._weight[id(node)] = weight
        return weight

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self._depth > self.limits.max_json_depth:
            raise InvalidArgument(
                f"{self.field}: nested deeper than {limit_hint('max_json_depth', self.limits)}"
            )
        is_alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if is_alias:
            return node  # the anchored node, weighed when it was composed
        self._nodes += 1
        expanded = self._weigh(node) - self._nodes
        if expanded > self.limits.max_yaml_alias_expansions:
            raise InvalidArgument(
                f"{self.field}: aliases expand to more than {limit_hint('max_yaml_alias_expansions', self.limits)} nodes"
            )
        return node


BoundedSafeLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)
BoundedSafeLoader.add_constructor("tag:yaml.org,2002:binary", yaml.SafeLoader.construct_yaml_str)


def load_yaml(text: str | bytes, field: str, limits: Settings | None = None) -> Any:
    """One YAML document parsed safely and bounded: at most `max_spec_bytes`, `max_json_depth` levels,
    `max_yaml_alias_expansions` nodes added by aliases, plain data with finite numbers. Raises
    InvalidArgument naming `field` (and the limit) for anything else, including invalid YAML."""
    limits = limits or DEFAULT_LIMITS
    _check_size(text, field, "max_spec_bytes", limits)
    loader_class = type("Loader", (BoundedSafeLoader,), {"limits": limits, "field": field})
    loader = None
    try:
        loader = loader_class(text)  # the reader already refuses non-printable characters
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"{field}: not valid YAML: {exc}") from None
    except RecursionError:
        raise InvalidArgument(f"{field}: nested deeper than {limit_hint('max_json_depth', limits)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return check_plain(data, field, limits)
