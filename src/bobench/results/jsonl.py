"""results.jsonl: the append-only file of run records, one JSON line per attempt.

Appending writes one whole line and fsyncs it, so a crash loses at most the run in flight. A crash
in the middle of a write leaves a torn last line (no newline at its end, not a record): reading
skips it with a warning naming the file and line, and the next append cuts it off before writing,
so a rerun continues in the same directory. Any other line that is not a record is the user's to
fix: reading raises MalformedResults naming the file and line (InvalidArgument: a user error, no
traceback in the CLI); nothing is ever locked or rewritten behind the user's back.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from bobench.errors import InvalidArgument
from bobench.results.record import RunRecord

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"


class MalformedResults(InvalidArgument):
    """A line of a results.jsonl that is not a run record (not the torn last line of a crash)."""


def results_path(path: str | Path) -> Path:
    """The results file of `path`: DIR/results.jsonl for a directory, else `path` itself."""
    p = Path(path)
    return p / RESULTS_FILE if p.is_dir() else p


def _parse(line: str, where: str) -> RunRecord:
    try:
        return RunRecord.from_dict(json.loads(line))
    except ValueError as exc:  # JSONDecodeError and InvalidArgument are ValueErrors
        raise MalformedResults(f"{where}: not a run record ({exc})") from None


def iter_records(path: str | Path) -> Iterator[RunRecord]:
    """Every record of a results file in file order (nothing when it does not exist).

    Raises MalformedResults naming the file and line for a line that is not a record, except a torn
    last line (module docstring), which is skipped with a warning."""
    p = results_path(path)
    if not p.exists():
        return
    with p.open("rb") as fh:
        lines = fh.read().split(b"\n")
    last = len(lines)  # the text after the final newline (b"" when the file ends with one)
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        where = f"{p}:{number}"
        try:
            yield _parse(text, where)
        except MalformedResults as exc:
            if number != last:
                raise
            log.warning("%s (a write cut short by a crash?): skipped; the next append replaces it", exc)


def read_records(path: str | Path) -> list[RunRecord]:
    """All records in a results.jsonl, one per run key.

    The file is append-only: a finished record is the answer for its run key, and a later cancelled or
    failed attempt of the same key does not hide it; a later finished record replaces an earlier one (a
    deliberate rerun). A key that never finished keeps its last record. Raises MalformedResults
    (iter_records)."""
    latest: dict[str, RunRecord] = {}
    for rec in iter_records(path):
        prev = latest.get(rec.run_key)
        if prev is not None and prev.finished and not rec.finished:
            continue
        latest[rec.run_key] = rec
    return list(latest.values())


def append_record(out_dir: Path, record: RunRecord) -> None:
    """Append one JSON line to `out_dir`/results.jsonl and fsync it: a crash loses at most the run in
    flight, never a record. A torn last line (a crash mid-write) is cut off first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_FILE
    with path.open("a+b") as fh:
        _cut_torn_tail(fh, path)
        fh.write((record.to_json() + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())


def replace_records(out_dir: Path, records: list[RunRecord]) -> Path:
    """Write `records` as `out_dir`/results.jsonl in place of what it held (a mirror of another store,
    e.g. a scheduler's battle): written to a temporary file and renamed, so a reader never sees half
    of it. Returns the file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_FILE
    tmp = path.with_name(RESULTS_FILE + ".tmp")
    tmp.write_text("".join(r.to_json() + "\n" for r in records))
    tmp.replace(path)
    return path


def _cut_torn_tail(fh, path: Path) -> None:
    """Make the file end with a newline: a tail without one that is a record gets its newline, one that
    is not (a torn write) is truncated away, with a warning."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    fh.seek(0)
    data = fh.read()
    start = data.rfind(b"\n") + 1
    tail = data[start:].decode("utf-8", errors="replace").strip()
    line = data.count(b"\n") + 1
    try:
        _parse(tail, f"{path}:{line}")
    except MalformedResults as exc:
        log.warning("%s: cut off (a write cut short by a crash)", exc)
        fh.truncate(start)
    else:
        fh.write(b"\n")
