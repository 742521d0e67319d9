"""The run record: one typed JSON line per run (lm-evaluation-harness result-schema idea)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"
STATUS_RUNNING = "running"
STATUS_PENDING = "pending"
STATUS_CANCELLED = "cancelled"  # stopped by the caller or a deadline; never counts as finished


@dataclass
class RunRecord:
    """The result of one (backbone, dataset, protocol, config, seed) run.

    Only `status == "finished"` records carry metrics that analysis may use; a failed run keeps its
    `error` and never counts as finished.
    """

    run_key: str
    backbone: str
    dataset: str
    protocol: str
    protocol_version: str
    task: str
    config: dict[str, Any]
    seed: int
    status: str = STATUS_PENDING
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
    battle: str | None = None
    seeded: bool = True  # False: a deterministic protocol, run once per split seed; not a seed to average

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def finished(self) -> bool:
        return self.status == STATUS_FINISHED


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_records(path) -> list[RunRecord]:
    """All records in a results.jsonl, one per run key.

    The file is append-only: a finished record is the answer for its run key, and a later cancelled or
    failed attempt of the same key does not hide it; a later finished record replaces an earlier one (a
    deliberate rerun). A key that never finished keeps its last record.
    """
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    latest: dict[str, RunRecord] = {}
    if not p.exists():
        return []
    with p.open() as fh:
        for line in fh:
            line = line.strip()
            if line:
                rec = RunRecord.from_dict(json.loads(line))
                prev = latest.get(rec.run_key)
                if prev is not None and prev.finished and not rec.finished:
                    continue
                latest[rec.run_key] = rec
    return list(latest.values())
