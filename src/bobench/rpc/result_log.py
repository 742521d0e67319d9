"""The evaluator's result store: an append-only results.jsonl with an in-memory index by run key.

Records are appended with `append_record` (fsync per line, the same file format `bob battle run`
writes), so a results directory can be read by the analysis tools as is.

Results are append-only facts: every attempt is a line of its own, and the answer for a run key is
its latest *finished* record once one exists; a later cancelled or failed attempt (a re-run stopped
by its deadline) is recorded beside it and never hides it. A key that never finished answers its
latest attempt.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from bobench.errors import NotFound
from bobench.results import RunRecord, append_record, iter_records

log = logging.getLogger(__name__)


def _better(new: RunRecord, old: RunRecord | None) -> bool:
    """Whether `new` becomes the answer of its key in place of `old` (a finished one stays)."""
    return old is None or new.finished or not old.finished


class ResultLog:
    """Thread-safe store of run records in `directory/results.jsonl`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._answer: dict[str, RunRecord] = {}
        self.attempts = 0  # lines in the log (every attempt of every key)
        for record in iter_records(self.directory):  # MalformedResults names a line that is no record
            self._index(record)
        log.info("result log %s: %d run keys", self.directory, len(self._answer))

    def _index(self, record: RunRecord) -> None:
        self.attempts += 1
        if _better(record, self._answer.get(record.run_key)):
            self._answer[record.run_key] = record

    def put(self, record: RunRecord) -> None:
        """Append `record`; it becomes the answer for its run key unless that key already finished."""
        with self._lock:
            append_record(self.directory, record)
            self._index(record)

    def get(self, run_key: str) -> RunRecord:
        """The finished record of `run_key`, else its latest attempt; NotFound when never stored."""
        with self._lock:
            record = self._answer.get(run_key)
        if record is None:
            raise NotFound(f"no result for run key {run_key!r} on this evaluator")
        return record

    def finished(self, run_key: str) -> RunRecord | None:
        """The stored record of `run_key` when it finished, else None."""
        with self._lock:
            record = self._answer.get(run_key)
        return record if record is not None and record.finished else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._answer)
