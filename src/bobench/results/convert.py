"""RunRecord <-> the bobench.v1 messages of a run: the RunResult that carries a record and the
RunRequest that asks for one. Below battle and rpc, so the scheduler's gRPC executor, the servicers
and the clients convert the same way without importing one another.

The RunResult's typed fields are derived from the RunRecord dataclass field by field (same names,
but `battle` travels as `battle_id`); `record_json` carries the whole record losslessly and wins
when present. A record field the message lacks travels in `record_json` only (RECORD_JSON_ONLY, a
test checks that no other field is left out).
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from bobench.errors import InvalidArgument
from bobench.results.record import RunRecord, RunStatus, json_default
from bobench.safe_parse import check_plain, limit_hint
from bobench.v1 import common_pb2

STATUS_TO_PROTO = {
    RunStatus.PENDING: common_pb2.RUN_STATUS_PENDING,
    RunStatus.RUNNING: common_pb2.RUN_STATUS_RUNNING,
    RunStatus.FINISHED: common_pb2.RUN_STATUS_FINISHED,
    RunStatus.FAILED: common_pb2.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: common_pb2.RUN_STATUS_CANCELLED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
PROTO_NAMES = {"battle": "battle_id"}  # record field -> RunResult field, where they differ
RECORD_JSON_ONLY: frozenset[str] = frozenset()  # record fields without a typed RunResult field
_SCALAR_FIELDS = {  # fields whose typed form is a plain proto value (None travels as the default)
    f.name for f in dataclasses.fields(RunRecord)
} - {"status", "metrics", "higher_is_better", "started_at", "finished_at"}


# ---- Struct / JSON helpers -------------------------------------------------------------------------


def to_struct(data: dict[str, Any] | None) -> struct_pb2.Struct:
    """A Struct holding `data` (numpy scalars and arrays become plain numbers and lists)."""
    s = struct_pb2.Struct()
    if data:
        s.update(json.loads(json.dumps(data, default=json_default)))
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


def _timestamp(iso: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.fromisoformat(iso))
    return ts


def _iso(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds")


def _is_struct(name: str) -> bool:
    return common_pb2.RunResult.DESCRIPTOR.fields_by_name[name].message_type is struct_pb2.Struct.DESCRIPTOR


# ---- run results -----------------------------------------------------------------------------------


def _split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """(finite scalars, the rest: None, lists, dicts; NaN and infinities become None)."""
    scalars: dict[str, float] = {}
    others: dict[str, Any] = {}
    for name, value in metrics.items():
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and math.isfinite(float(value)):
            scalars[name] = float(value)
        else:
            others[name] = None if isinstance(value, float) else value
    return scalars, others


def record_to_result(record: RunRecord) -> common_pb2.RunResult:
    """RunRecord -> RunResult. Finite scalar metrics go to `metrics`, the rest (None, lists, dicts,
    NaN) to `other_metrics`; `record_json` keeps the whole record losslessly."""
    scalars, others = _split_metrics(record.metrics)
    result = common_pb2.RunResult(
        status=STATUS_TO_PROTO.get(record.status, common_pb2.RUN_STATUS_UNSPECIFIED),
        metrics=scalars,
        other_metrics=to_struct(others),
        higher_is_better=record.higher_is_better,
        record_json=record.to_json(),
    )
    for name in ("started_at", "finished_at"):
        iso = getattr(record, name)
        if iso:
            getattr(result, name).CopyFrom(_timestamp(iso))
    for name in sorted(_SCALAR_FIELDS - RECORD_JSON_ONLY):
        value, proto_name = getattr(record, name), PROTO_NAMES.get(name, name)
        if _is_struct(proto_name):
            getattr(result, proto_name).CopyFrom(to_struct(value))
        elif value is not None:
            setattr(result, proto_name, value)
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
    values: dict[str, Any] = {
        "status": STATUS_FROM_PROTO.get(result.status, RunStatus.PENDING),
        "metrics": metrics,
        "higher_is_better": dict(result.higher_is_better),
    }
    for name in ("started_at", "finished_at"):
        values[name] = _iso(getattr(result, name)) if result.HasField(name) else None
    defaults = {f.name: f for f in dataclasses.fields(RunRecord)}
    for name in sorted(_SCALAR_FIELDS - RECORD_JSON_ONLY):
        proto_name = PROTO_NAMES.get(name, name)
        if _is_struct(proto_name):
            values[name] = from_struct(getattr(result, proto_name))
            continue
        descriptor = common_pb2.RunResult.DESCRIPTOR.fields_by_name[proto_name]
        if descriptor.has_presence and not result.HasField(proto_name):
            continue  # unset optional: the record's default
        value = getattr(result, proto_name)
        values[name] = None if value == "" and defaults[name].default is None else value
    return RunRecord.from_dict(values)


# ---- run requests ----------------------------------------------------------------------------------


def dataset_ref_to_proto(ref: str | dict[str, Any], name: str | None = None) -> common_pb2.DatasetRef:
    """A registered name or structured ref -> DatasetRef (structured refs travel as exact JSON)."""
    msg = common_pb2.DatasetRef(name=name or "")
    if isinstance(ref, dict):
        msg.ref_json = json.dumps(ref, sort_keys=True)
    else:
        msg.registered = ref
    return msg


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
            name=protocol, config_json=json.dumps(config or {}, sort_keys=True, default=json_default)
        ),
        seed=seed,
        battle_id=battle_id or "",
        batch_size=batch_size,
        expected_run_key=expected_run_key or "",
        rerun=rerun,
        embedder_variant="" if embedder_variant == "onnx" else embedder_variant,
    )
