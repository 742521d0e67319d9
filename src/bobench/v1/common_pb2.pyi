import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_PENDING: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_CANCELLED: _ClassVar[RunStatus]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_PENDING: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_FINISHED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_CANCELLED: RunStatus

class BackboneRef(_message.Message):
    __slots__ = ("name", "spec_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec_json: str
    def __init__(self, name: _Optional[str] = ..., spec_json: _Optional[str] = ...) -> None: ...

class DatasetRef(_message.Message):
    __slots__ = ("name", "registered", "ref_json", "structured")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    REF_JSON_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    name: str
    registered: str
    ref_json: str
    structured: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., registered: _Optional[str] = ..., ref_json: _Optional[str] = ..., structured: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ProtocolConfig(_message.Message):
    __slots__ = ("name", "config", "config_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: _struct_pb2.Struct
    config_json: str
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., config_json: _Optional[str] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("backbone", "dataset", "protocol", "seed", "battle_id", "batch_size", "expected_run_key", "rerun", "embedder_variant")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    RERUN_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_VARIANT_FIELD_NUMBER: _ClassVar[int]
    backbone: BackboneRef
    dataset: DatasetRef
    protocol: ProtocolConfig
    seed: int
    battle_id: str
    batch_size: int
    expected_run_key: str
    rerun: bool
    embedder_variant: str
    def __init__(self, backbone: _Optional[_Union[BackboneRef, _Mapping]] = ..., dataset: _Optional[_Union[DatasetRef, _Mapping]] = ..., protocol: _Optional[_Union[ProtocolConfig, _Mapping]] = ..., seed: _Optional[int] = ..., battle_id: _Optional[str] = ..., batch_size: _Optional[int] = ..., expected_run_key: _Optional[str] = ..., rerun: _Optional[bool] = ..., embedder_variant: _Optional[str] = ...) -> None: ...

class RunResult(_message.Message):
    __slots__ = ("run_key", "backbone", "dataset", "protocol", "protocol_version", "task", "config", "seed", "status", "metrics", "other_metrics", "higher_is_better", "primary_metric", "backbone_info", "dataset_fingerprint", "environment", "started_at", "finished_at", "duration_s", "error", "battle_id", "record_json", "error_type", "schema_version", "seeded")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class HigherIsBetterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OTHER_METRICS_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_METRIC_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_INFO_FIELD_NUMBER: _ClassVar[int]
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEEDED_FIELD_NUMBER: _ClassVar[int]
    run_key: str
    backbone: str
    dataset: str
    protocol: str
    protocol_version: str
    task: str
    config: _struct_pb2.Struct
    seed: int
    status: RunStatus
    metrics: _containers.ScalarMap[str, float]
    other_metrics: _struct_pb2.Struct
    higher_is_better: _containers.ScalarMap[str, bool]
    primary_metric: str
    backbone_info: _struct_pb2.Struct
    dataset_fingerprint: str
    environment: _struct_pb2.Struct
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    duration_s: float
    error: str
    battle_id: str
    record_json: str
    error_type: str
    schema_version: int
    seeded: bool
    def __init__(self, run_key: _Optional[str] = ..., backbone: _Optional[str] = ..., dataset: _Optional[str] = ..., protocol: _Optional[str] = ..., protocol_version: _Optional[str] = ..., task: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seed: _Optional[int] = ..., status: _Optional[_Union[RunStatus, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., other_metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., higher_is_better: _Optional[_Mapping[str, bool]] = ..., primary_metric: _Optional[str] = ..., backbone_info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dataset_fingerprint: _Optional[str] = ..., environment: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_s: _Optional[float] = ..., error: _Optional[str] = ..., battle_id: _Optional[str] = ..., record_json: _Optional[str] = ..., error_type: _Optional[str] = ..., schema_version: _Optional[int] = ..., seeded: _Optional[bool] = ...) -> None: ...

class BattleProtocol(_message.Message):
    __slots__ = ("name", "config", "datasets", "backbones")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    BACKBONES_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: _struct_pb2.Struct
    datasets: _containers.RepeatedScalarFieldContainer[str]
    backbones: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., datasets: _Optional[_Iterable[str]] = ..., backbones: _Optional[_Iterable[str]] = ...) -> None: ...

class BattleSpec(_message.Message):
    __slots__ = ("name", "description", "backbones", "datasets", "protocols", "seeds", "embedder", "settings", "report", "custom_backbones", "embedder_variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BACKBONES_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_BACKBONES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    backbones: _containers.RepeatedScalarFieldContainer[str]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetRef]
    protocols: _containers.RepeatedCompositeFieldContainer[BattleProtocol]
    seeds: _containers.RepeatedScalarFieldContainer[int]
    embedder: str
    settings: _struct_pb2.Struct
    report: bool
    custom_backbones: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    embedder_variant: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., backbones: _Optional[_Iterable[str]] = ..., datasets: _Optional[_Iterable[_Union[DatasetRef, _Mapping]]] = ..., protocols: _Optional[_Iterable[_Union[BattleProtocol, _Mapping]]] = ..., seeds: _Optional[_Iterable[int]] = ..., embedder: _Optional[str] = ..., settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., report: _Optional[bool] = ..., custom_backbones: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., embedder_variant: _Optional[str] = ...) -> None: ...
