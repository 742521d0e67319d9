"""The run record: one typed JSON line per run (lm-evaluation-harness result-schema idea).

Every other form of a record derives from this dataclass (a plan's fresh record, the RunResult
message, the results.jsonl line), so a new field is added here once. `SCHEMA_VERSION` counts changes
of the line's meaning: a line without `schema_version` is version 1 (before `error_type` existed),
and reading it derives `error_type` from the "<ErrorClass>: message" prefix of its `error`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from bobench.errors import ERROR_TYPES, INTERNAL_ERROR, InvalidArgument, error_type

SCHEMA_VERSION = 2  # 2: `schema_version` and `error_type` recorded; 1: neither (derived on reading)
INTERNAL_PREFIX = "internal error"  # how an unexpected error's message starts (error_type "internal")


class RunStatus(enum.StrEnum):
    """Where a run stands. A str, so records compare and serialise as the plain words."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped by the caller or a deadline; never counts as finished


@dataclass
class RunRecord:
    """The result of one (backbone, dataset, protocol, config, seed) run.

    Only finished records carry metrics that analysis may use; a failed run keeps its `error`
    ("<error_type>: message") and `error_type` (a `bobench.errors` class name, or "internal" for an
    unexpected error), which decides whether it is retried, and never counts as finished.
    """

    run_key: str
    backbone: str
    dataset: str
    protocol: str
    protocol_version: str
    task: str
    config: dict[str, Any]
    seed: int
    status: RunStatus = RunStatus.PENDING
    metrics: dict[str, Any] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    primary_metric: str | None = None
    backbone_info: dict[str, Any] = field(default_factory=dict)  # family, method, params, ...
    dataset_fingerprint: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    error: str | None = None
    error_type: str | None = None
    battle: str | None = None
    seeded: bool = True  # False: a deterministic protocol, run once per split seed; not a seed to average
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in RunStatus._value2member_map_:
            raise ValueError(f"status must be one of {[s.value for s in RunStatus]}, got {self.status!r}")
        self.status = RunStatus(self.status)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        """A record from its JSON object, of any schema version (unknown keys are ignored).
        Raises InvalidArgument for an object that is no record (a required field missing, an unknown
        status)."""
        if not isinstance(d, dict):
            raise InvalidArgument(f"a run record is a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values.setdefault("schema_version", 1)
        if values.get("error_type") is None and values.get("error"):
            values["error_type"] = error_type_of_message(values["error"])
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"not a run record: {exc}") from None

    @property
    def finished(self) -> bool:
        return self.status == RunStatus.FINISHED

    def fail(self, kind: str, error: str, status: RunStatus = RunStatus.FAILED) -> None:
        """Mark the record failed (or cancelled) with `error` ("<ErrorClass>: message") of `kind`."""
        self.status, self.error_type, self.error = status, kind, error

    def fail_with(self, exc: BaseException, status: RunStatus = RunStatus.FAILED) -> None:
        """Mark the record failed (or cancelled) with `exc`: "<ErrorClass>: message", or "internal
        error: <ExceptionClass>: message" for an exception that is no domain error."""
        kind = error_type(exc)
        prefix = INTERNAL_PREFIX + ": " if kind == INTERNAL_ERROR else ""
        self.fail(kind, f"{prefix}{type(exc).__name__}: {exc}", status)


def error_type_of_message(error: str) -> str | None:
    """The error_type a version-1 record's message states ("Unavailable: ..." -> "Unavailable",
    "internal error: ..." -> "internal"), or None when it names no kind."""
    head = error.split(":", 1)[0].strip()
    if head == INTERNAL_PREFIX:
        return INTERNAL_ERROR
    return head if head in {cls.__name__ for cls in ERROR_TYPES} else None


def json_default(o: Any) -> Any:
    """JSON for the numpy values metrics may hold (scalars, arrays)."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
