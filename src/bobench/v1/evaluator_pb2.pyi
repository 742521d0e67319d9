from bobench.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluateRequest(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _common_pb2.RunRequest
    def __init__(self, run: _Optional[_Union[_common_pb2.RunRequest, _Mapping]] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("run_key", "reused")
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    run_key: str
    reused: bool
    def __init__(self, run_key: _Optional[str] = ..., reused: _Optional[bool] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done", "total", "message")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    message: str
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EvaluateEvent(_message.Message):
    __slots__ = ("progress", "result", "started")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: _common_pb2.RunResult
    started: Started
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[_common_pb2.RunResult, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("run_key",)
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    run_key: str
    def __init__(self, run_key: _Optional[str] = ...) -> None: ...
