import datetime

from bobench.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BattleState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATTLE_STATE_UNSPECIFIED: _ClassVar[BattleState]
    BATTLE_STATE_QUEUED: _ClassVar[BattleState]
    BATTLE_STATE_RUNNING: _ClassVar[BattleState]
    BATTLE_STATE_FINISHED: _ClassVar[BattleState]
    BATTLE_STATE_FAILED: _ClassVar[BattleState]
    BATTLE_STATE_CANCELLED: _ClassVar[BattleState]
BATTLE_STATE_UNSPECIFIED: BattleState
BATTLE_STATE_QUEUED: BattleState
BATTLE_STATE_RUNNING: BattleState
BATTLE_STATE_FINISHED: BattleState
BATTLE_STATE_FAILED: BattleState
BATTLE_STATE_CANCELLED: BattleState

class RunCounts(_message.Message):
    __slots__ = ("total", "pending", "running", "finished", "failed", "cancelled")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    total: int
    pending: int
    running: int
    finished: int
    failed: int
    cancelled: int
    def __init__(self, total: _Optional[int] = ..., pending: _Optional[int] = ..., running: _Optional[int] = ..., finished: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ...) -> None: ...

class Battle(_message.Message):
    __slots__ = ("id", "name", "state", "counts", "created_at", "updated_at", "spec", "error", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    state: BattleState
    counts: RunCounts
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    spec: _common_pb2.BattleSpec
    error: str
    owner: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[BattleState, str]] = ..., counts: _Optional[_Union[RunCounts, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spec: _Optional[_Union[_common_pb2.BattleSpec, _Mapping]] = ..., error: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class SubmitBattleRequest(_message.Message):
    __slots__ = ("spec", "spec_yaml", "battle_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.BattleSpec
    spec_yaml: str
    battle_id: str
    def __init__(self, spec: _Optional[_Union[_common_pb2.BattleSpec, _Mapping]] = ..., spec_yaml: _Optional[str] = ..., battle_id: _Optional[str] = ...) -> None: ...

class SubmitBattleResponse(_message.Message):
    __slots__ = ("battle_id", "total_runs", "reused_runs", "owner")
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RUNS_FIELD_NUMBER: _ClassVar[int]
    REUSED_RUNS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    battle_id: str
    total_runs: int
    reused_runs: int
    owner: str
    def __init__(self, battle_id: _Optional[str] = ..., total_runs: _Optional[int] = ..., reused_runs: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class WatchBattleRequest(_message.Message):
    __slots__ = ("battle_id",)
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    battle_id: str
    def __init__(self, battle_id: _Optional[str] = ...) -> None: ...

class BattleEvent(_message.Message):
    __slots__ = ("battle_id", "run_key", "backbone", "dataset", "protocol", "state", "error", "counts", "battle_state", "time", "seed")
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    BATTLE_STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    battle_id: str
    run_key: str
    backbone: str
    dataset: str
    protocol: str
    state: _common_pb2.RunStatus
    error: str
    counts: RunCounts
    battle_state: BattleState
    time: _timestamp_pb2.Timestamp
    seed: int
    def __init__(self, battle_id: _Optional[str] = ..., run_key: _Optional[str] = ..., backbone: _Optional[str] = ..., dataset: _Optional[str] = ..., protocol: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.RunStatus, str]] = ..., error: _Optional[str] = ..., counts: _Optional[_Union[RunCounts, _Mapping]] = ..., battle_state: _Optional[_Union[BattleState, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class GetBattleRequest(_message.Message):
    __slots__ = ("battle_id",)
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    battle_id: str
    def __init__(self, battle_id: _Optional[str] = ...) -> None: ...

class ListBattlesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBattlesResponse(_message.Message):
    __slots__ = ("battles", "next_page_token")
    BATTLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    battles: _containers.RepeatedCompositeFieldContainer[Battle]
    next_page_token: str
    def __init__(self, battles: _Optional[_Iterable[_Union[Battle, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelBattleRequest(_message.Message):
    __slots__ = ("battle_id", "reason")
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    battle_id: str
    reason: str
    def __init__(self, battle_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListResultsRequest(_message.Message):
    __slots__ = ("battle_id", "finished_only")
    BATTLE_ID_FIELD_NUMBER: _ClassVar[int]
    FINISHED_ONLY_FIELD_NUMBER: _ClassVar[int]
    battle_id: str
    finished_only: bool
    def __init__(self, battle_id: _Optional[str] = ..., finished_only: _Optional[bool] = ...) -> None: ...
