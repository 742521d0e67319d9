"""Proto <-> domain conversions of the bobench.v1 API that only servers need: parsing requests and
battle specs. Servicers and clients only translate here; every malformed field becomes an
InvalidArgument that names it (e.g. "run.dataset.ref_json"). A run's record and request convert in
`bobench.results.convert`, below battle, so the gRPC executor shares them without importing rpc."""

from __future__ import annotations

from typing import Any

from bobench import safe_parse
from bobench.battle.spec import BattleSpec, parse_spec
from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.results.convert import dataset_ref_to_proto, from_struct, to_struct
from bobench.safe_parse import limit_hint
from bobench.v1 import common_pb2

# ---- JSON ------------------------------------------------------------------------------------------


def parse_json_object(text: str, field: str, limits: Settings | None = None) -> dict[str, Any]:
    """`text` parsed as a JSON object within the size, depth and finite-number bounds of
    `bobench.safe_parse` (`limits`: the settings holding them); InvalidArgument naming `field` otherwise."""
    return safe_parse.parse_json_object(text, field, limits)


# ---- run requests ----------------------------------------------------------------------------------


def dataset_ref_from_proto(msg: common_pb2.DatasetRef, field: str) -> tuple[str | dict[str, Any], str | None]:
    """(ref for load_dataset, label or None). InvalidArgument when no ref is set or it is malformed."""
    which = msg.WhichOneof("ref")
    if which is None:
        raise InvalidArgument(f"{field}: one of registered, ref_json or structured is required")
    if which == "registered":
        if not msg.registered.strip():
            raise InvalidArgument(f"{field}.registered: must be a non-empty dataset name")
        ref: str | dict[str, Any] = msg.registered
    elif which == "ref_json":
        ref = parse_json_object(msg.ref_json, f"{field}.ref_json")
    else:
        ref = from_struct(msg.structured, field=f"{field}.structured")
    if isinstance(ref, dict) and not isinstance(ref.get("type", ref.get("name")), str):
        raise InvalidArgument(
            f"{field}.{which}: a structured reference needs a 'type' (source) or 'name' (registered dataset) "
            f"string, got {ref!r}"
        )
    return ref, (msg.name or None)


def protocol_config_from_proto(msg: common_pb2.ProtocolConfig, field: str) -> dict[str, Any]:
    """The config overrides of `msg` (empty when none). Struct numbers are read back using the
    registered protocol's defaults, so `k: 20` stays an int and `temperature: 1` stays a float."""
    which = msg.WhichOneof("config_source")
    if which == "config_json":
        return parse_json_object(msg.config_json, f"{field}.config_json")
    if which == "config":
        from bobench.protocols import PROTOCOLS, get_protocol

        defaults = get_protocol(msg.name).defaults if msg.name in PROTOCOLS else {}
        return from_struct(msg.config, defaults, f"{field}.config")
    return {}


def check_batch_size(value: int, field: str, limits: Settings | None = None) -> int:
    """A request's batch size: 0 (the server's default) up to `max_batch_size`; InvalidArgument naming
    `field` otherwise."""
    limit = (limits or safe_parse.DEFAULT_LIMITS).max_batch_size
    if not 0 <= value <= limit:
        raise InvalidArgument(
            f"{field}: must be 0 (server default) to {limit} ({limit_hint('max_batch_size', limits)}), got {value}"
        )
    return value


def embedder_variant_from_proto(value: str, field: str) -> str:
    """The embedder variant of a request field ("" = "onnx"); InvalidArgument naming `field`."""
    from bobench.export.triton_repo import EMBEDDER_VARIANTS

    variant = value or "onnx"
    if variant not in EMBEDDER_VARIANTS:
        raise InvalidArgument(f"{field}: must be one of {list(EMBEDDER_VARIANTS)}, got {value!r}")
    return variant


# ---- battle specs ----------------------------------------------------------------------------------


def battle_spec_to_proto(spec: BattleSpec) -> common_pb2.BattleSpec:
    """BattleSpec -> proto (structured dataset refs as exact JSON)."""
    return common_pb2.BattleSpec(
        name=spec.name,
        description=spec.description,
        backbones=list(spec.backbones),
        datasets=[dataset_ref_to_proto(d.ref, d.name) for d in spec.datasets],
        protocols=[
            common_pb2.BattleProtocol(
                name=p.name,
                config=to_struct(p.config),
                datasets=list(p.datasets or ()),
                backbones=list(p.backbones or ()),
            )
            for p in spec.protocols
        ],
        seeds=list(spec.seeds),
        embedder=spec.embedder or "",
        settings=to_struct(spec.settings),
        report=spec.report,
        custom_backbones=[to_struct(c) for c in spec.custom_backbones],
        embedder_variant="" if spec.embedder_variant == "onnx" else spec.embedder_variant,
    )


def _backbone_entries(msg: common_pb2.BattleSpec) -> list[str | dict[str, Any]]:
    """Backbone names, with user-defined ones replaced by their BackboneSpec field mappings."""
    custom = {}
    for i, c in enumerate(msg.custom_backbones):
        entry = from_struct(c, field=f"spec.custom_backbones[{i}]")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"spec.custom_backbones[{i}]: needs a 'name'")
        custom[name] = entry
    unknown = sorted(set(custom) - set(msg.backbones))
    if unknown:
        raise InvalidArgument(f"spec.custom_backbones: {unknown} are not listed in spec.backbones")
    return [custom.get(b, b) for b in msg.backbones]


def battle_spec_from_proto(msg: common_pb2.BattleSpec) -> BattleSpec:
    """Proto -> validated BattleSpec (parse_spec's field-named errors). Raises InvalidArgument."""
    from bobench.protocols import PROTOCOLS, get_protocol

    datasets = []
    for i, d in enumerate(msg.datasets):
        ref, name = dataset_ref_from_proto(d, f"spec.datasets[{i}]")
        datasets.append({"ref": ref, **({"name": name} if name else {})})
    protocols = []
    for i, p in enumerate(msg.protocols):
        defaults = get_protocol(p.name).defaults if p.name in PROTOCOLS else {}
        config = from_struct(p.config, defaults, f"spec.protocols[{i}].config")
        entry: dict[str, Any] = {"name": p.name, "config": config}
        if p.datasets:
            entry["datasets"] = list(p.datasets)
        if p.backbones:
            entry["backbones"] = list(p.backbones)
        protocols.append(entry)
    data: dict[str, Any] = {
        "name": msg.name or "battle",
        "description": msg.description,
        "backbones": _backbone_entries(msg),
        "datasets": datasets,
        "protocols": protocols,
        "seeds": [int(s) for s in msg.seeds] or [0],
        "settings": from_struct(msg.settings, field="spec.settings"),
        "report": msg.report if msg.HasField("report") else True,
    }
    if msg.embedder:
        data["embedder"] = msg.embedder
    data["embedder_variant"] = embedder_variant_from_proto(msg.embedder_variant, "spec.embedder_variant")
    return parse_spec(data)
