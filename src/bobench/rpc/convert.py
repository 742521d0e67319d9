"""Proto <-> domain conversions for the bobench.v1 API. Servicers and clients only translate here;
every malformed field becomes an InvalidArgument that names it (e.g. "run.dataset.ref_json")."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from bobench import safe_parse
from bobench.battle.plan import RunPlan
from bobench.battle.records import (
    STATUS_CANCELLED,
    STATUS_FAILED,
    STATUS_FINISHED,
    STATUS_PENDING,
    STATUS_RUNNING,
    RunRecord,
    _json_default,
)
from bobench.battle.spec import BattleSpec, parse_spec
from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.safe_parse import check_plain, limit_hint
from bobench.v1 import common_pb2

STATUS_TO_PROTO = {
    STATUS_PENDING: common_pb2.RUN_STATUS_PENDING,
    STATUS_RUNNING: common_pb2.RUN_STATUS_RUNNING,
    STATUS_FINISHED: common_pb2.RUN_STATUS_FINISHED,
    STATUS_FAILED: common_pb2.RUN_STATUS_FAILED,
    STATUS_CANCELLED: common_pb2.RUN_STATUS_CANCELLED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}


# ---- Struct / JSON helpers -------------------------------------------------------------------------


def to_struct(data: dict[str, Any] | None) -> struct_pb2.Struct:
    """A Struct holding `data` (numpy scalars and arrays become plain numbers and lists)."""
    s = struct_pb2.Struct()
    if data:
        s.update(json.loads(json.dumps(data, default=_json_default)))
    return s


def _ints_back(value: Any, like: Any = None) -> Any:
    """Undo Struct's all-doubles: integral floats become ints unless the default `like` is a float."""
    if isinstance(value, float) and value.is_integer() and not isinstance(like, float):
        return int(value)
    if isinstance(value, list):
        return [_ints_back(v) for v in value]
    if isinstance(value, dict):
        return {k: _ints_back(v) for k, v in value.items()}
    return value


def from_struct(
    s: struct_pb2.Struct, defaults: dict[str, Any] | None = None, field: str = "struct"
) -> dict[str, Any]:
    """The dict in `s`; integral numbers are read back as ints except where `defaults` holds a float.
    Raises InvalidArgument naming `field` for NaN or infinite numbers and for nesting beyond
    `max_json_depth` (a Struct cannot hold them as JSON)."""
    try:
        data = json_format.MessageToDict(s)
    except ValueError:  # json_format refuses NaN/Infinity in a Value
        raise InvalidArgument(f"{field}: finite numbers only (NaN or Infinity found)") from None
    except RecursionError:
        raise InvalidArgument(f"{field}: nested deeper than {limit_hint('max_json_depth')}") from None
    check_plain(data, field)
    defaults = defaults or {}
    return {k: _ints_back(v, defaults.get(k)) for k, v in data.items()}


def parse_json_object(text: str, field: str, limits: Settings | None = None) -> dict[str, Any]:
    """`text` parsed as a JSON object within the size, depth and finite-number bounds of
    `bobench.safe_parse` (`limits`: the settings holding them); InvalidArgument naming `field` otherwise."""
    return safe_parse.parse_json_object(text, field, limits)


def _timestamp(iso: str | None) -> timestamp_pb2.Timestamp | None:
    if not iso:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.fromisoformat(iso))
    return ts


def _iso(ts: timestamp_pb2.Timestamp, present: bool) -> str | None:
    if not present:
        return None
    from datetime import UTC

    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds")


# ---- run results -----------------------------------------------------------------------------------


def record_to_result(record: RunRecord) -> common_pb2.RunResult:
    """RunRecord -> RunResult. Finite scalar metrics go to `metrics`, the rest (None, lists, dicts,
    NaN) to `other_metrics`; `record_json` keeps the whole record losslessly."""
    scalars: dict[str, float] = {}
    others: dict[str, Any] = {}
    for name, value in record.metrics.items():
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and math.isfinite(float(value)):
            scalars[name] = float(value)
        else:
            others[name] = value
    result = common_pb2.RunResult(
        run_key=record.run_key,
        backbone=record.backbone,
        dataset=record.dataset,
        protocol=record.protocol,
        protocol_version=record.protocol_version,
        task=record.task,
        config=to_struct(record.config),
        seed=record.seed,
        status=STATUS_TO_PROTO.get(record.status, common_pb2.RUN_STATUS_UNSPECIFIED),
        metrics=scalars,
        other_metrics=to_struct({k: (None if isinstance(v, float) else v) for k, v in others.items()}),
        higher_is_better=record.higher_is_better,
        primary_metric=record.primary_metric or "",
        backbone_info=to_struct(record.backbone_info),
        dataset_fingerprint=record.dataset_fingerprint or "",
        environment=to_struct(record.environment),
        error=record.error or "",
        battle_id=record.battle or "",
        record_json=record.to_json(),
    )
    for name, iso in (("started_at", record.started_at), ("finished_at", record.finished_at)):
        ts = _timestamp(iso)
        if ts is not None:
            getattr(result, name).CopyFrom(ts)
    if record.duration_s is not None:
        result.duration_s = float(record.duration_s)
    return result


def result_to_record(result: common_pb2.RunResult) -> RunRecord:
    """RunResult -> RunRecord: exact from `record_json` when present, else rebuilt from typed fields."""
    if result.record_json:
        # a server's own record (may hold NaN metrics and be large): read as written, not bounded
        try:
            return RunRecord.from_dict(json.loads(result.record_json))
        except ValueError as exc:
            raise InvalidArgument(f"result.record_json: not valid JSON ({exc})") from None
    metrics: dict[str, Any] = dict(result.metrics)
    metrics.update(json_format.MessageToDict(result.other_metrics))
    return RunRecord(
        run_key=result.run_key,
        backbone=result.backbone,
        dataset=result.dataset,
        protocol=result.protocol,
        protocol_version=result.protocol_version,
        task=result.task,
        config=from_struct(result.config),
        seed=int(result.seed),
        status=STATUS_FROM_PROTO.get(result.status, STATUS_PENDING),
        metrics=metrics,
        higher_is_better=dict(result.higher_is_better),
        primary_metric=result.primary_metric or None,
        backbone_info=from_struct(result.backbone_info),
        dataset_fingerprint=result.dataset_fingerprint or None,
        environment=from_struct(result.environment),
        started_at=_iso(result.started_at, result.HasField("started_at")),
        finished_at=_iso(result.finished_at, result.HasField("finished_at")),
        duration_s=result.duration_s if result.HasField("duration_s") else None,
        error=result.error or None,
        battle=result.battle_id or None,
    )


# ---- run requests ----------------------------------------------------------------------------------


def dataset_ref_to_proto(ref: str | dict[str, Any], name: str | None = None) -> common_pb2.DatasetRef:
    """A registered name or structured ref -> DatasetRef (structured refs travel as exact JSON)."""
    msg = common_pb2.DatasetRef(name=name or "")
    if isinstance(ref, dict):
        msg.ref_json = json.dumps(ref, sort_keys=True)
    else:
        msg.registered = ref
    return msg


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


def run_request(
    backbone: str,
    dataset: str | dict[str, Any],
    protocol: str,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    *,
    dataset_name: str | None = None,
    battle_id: str | None = None,
    batch_size: int = 0,
    expected_run_key: str | None = None,
    rerun: bool = False,
    embedder_variant: str = "onnx",
) -> common_pb2.RunRequest:
    """Build a RunRequest (config as exact JSON; the default "onnx" variant travels as empty)."""
    return common_pb2.RunRequest(
        backbone=common_pb2.BackboneRef(name=backbone),
        dataset=dataset_ref_to_proto(dataset, dataset_name),
        protocol=common_pb2.ProtocolConfig(
            name=protocol, config_json=json.dumps(config or {}, sort_keys=True, default=_json_default)
        ),
        seed=seed,
        battle_id=battle_id or "",
        batch_size=batch_size,
        expected_run_key=expected_run_key or "",
        rerun=rerun,
        embedder_variant="" if embedder_variant == "onnx" else embedder_variant,
    )


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


def plan_to_request(plan: RunPlan, *, rerun: bool = False, batch_size: int = 0) -> common_pb2.RunRequest:
    """The RunRequest that makes an evaluator execute `plan` (it checks the run key matches).
    A user-defined backbone travels with its BackboneSpec fields so the evaluator can register it."""
    from bobench.battle.plan import CUSTOM_BACKBONES

    request = run_request(
        plan.backbone,
        plan.dataset_ref,
        plan.protocol,
        plan.config,
        plan.seed,
        dataset_name=plan.dataset,
        battle_id=plan.battle,
        batch_size=batch_size,
        expected_run_key=plan.run_key,
        rerun=rerun,
        embedder_variant=plan.embedder_variant,
    )
    if plan.backbone in CUSTOM_BACKBONES:
        request.backbone.spec_json = json.dumps(CUSTOM_BACKBONES[plan.backbone], sort_keys=True)
    return request


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
