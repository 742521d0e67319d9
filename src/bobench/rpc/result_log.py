"""The evaluator's result store: an append-only results.jsonl with an in-memory index by run key.

Records are appended with `append_record` (fsync per line, the same file format `bob battle run`
writes), so a results directory can be read by the analysis tools as is. The latest line of a run key
wins, as in `read_records`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from bobench.battle.records import RunRecord, read_records
from bobench.battle.runner import RESULTS_FILE, append_record
from bobench.errors import NotFound

log = logging.getLogger(__name__)


class ResultLog:
    """Thread-safe store of run records in `directory/results.jsonl`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._latest: dict[str, RunRecord] = {r.run_key: r for r in read_records(self.directory)}
        log.info("result log %s: %d run keys", self.directory / RESULTS_FILE, len(self._latest))

    def put(self, record: RunRecord) -> None:
        """Append `record`; it becomes the answer for its run key."""
        with self._lock:
            append_record(self.directory, record)
            self._latest[record.run_key] = record

    def get(self, run_key: str) -> RunRecord:
        """The latest record of `run_key`; NotFound when the key was never stored."""
        with self._lock:
            record = self._latest.get(run_key)
        if record is None:
            raise NotFound(f"no result for run key {run_key!r} on this evaluator")
        return record

    def finished(self, run_key: str) -> RunRecord | None:
        """The stored record of `run_key` when it finished, else None."""
        with self._lock:
            record = self._latest.get(run_key)
        return record if record is not None and record.finished else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._latest)
