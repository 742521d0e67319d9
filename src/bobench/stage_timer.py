"""A process-wide stage timer: where a battle's wall time goes (decode, resize, embed, probe fits, ...).

The few call sites that own a stage wrap it in `stage("name")`. While no `recording()` block is
open, `stage` returns one shared no-op context manager (a global read and a return: nothing is
timed, nothing allocated), so production runs pay nothing. Inside `recording()` every `stage` block
adds its seconds to a per-process table, *exclusively*: a stage entered inside another pauses the
outer one, so the per-stage seconds never count the same time twice and their sum is at most the
wall time of the recording (the rest is "other"). Counts (`add_count`) carry the work done in a
stage, e.g. images embedded, so a bench can turn seconds into a per-image cost.

The recording belongs to the thread that opened it (the embedded battle runs on one thread): a
stage entered on another thread is not timed (its time stays in "other") and is counted under
`OFF_THREAD`, so a bench can say so, rather than mixing up the nesting.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

_NOOP: AbstractContextManager[None] = nullcontext()
_clock = time.perf_counter  # a module attribute, so tests can drive it
OFF_THREAD = "stages_off_thread"  # counter of stages entered on another thread while recording


@dataclass
class StageTable:
    """Seconds and entries per stage, counters, and the wall time of the recording."""

    seconds: dict[str, float] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def other_s(self) -> float:
        """Wall time no stage claimed."""
        return max(0.0, self.wall_s - sum(self.seconds.values()))


class _Recorder:
    def __init__(self) -> None:
        self.table = StageTable()
        self.stack: list[list] = []  # [name, started_at] of the open stages, innermost last
        self.thread = threading.get_ident()

    def charge(self, name: str, now: float, started_at: float) -> None:
        self.table.seconds[name] = self.table.seconds.get(name, 0.0) + (now - started_at)


_recorder: _Recorder | None = None


class _Stage:
    __slots__ = ("name", "recorder")

    def __init__(self, name: str, recorder: _Recorder) -> None:
        self.name, self.recorder = name, recorder

    def __enter__(self) -> None:
        rec = self.recorder
        now = _clock()
        if rec.stack:  # pause the enclosing stage
            outer = rec.stack[-1]
            rec.charge(outer[0], now, outer[1])
        rec.stack.append([self.name, now])
        rec.table.entries[self.name] = rec.table.entries.get(self.name, 0) + 1

    def __exit__(self, *exc: object) -> None:
        rec = self.recorder
        now = _clock()
        name, started_at = rec.stack.pop()
        rec.charge(name, now, started_at)
        if rec.stack:  # resume the enclosing stage
            rec.stack[-1][1] = now


def stage(name: str) -> AbstractContextManager[None]:
    """A context manager charging its block's time to stage `name` while recording; else a no-op."""
    rec = _recorder
    if rec is None:
        return _NOOP
    if threading.get_ident() != rec.thread:
        add_count(OFF_THREAD, 1)
        return _NOOP
    return _Stage(name, rec)


def timed(name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: every call of the function is a `stage(name)` block (a no-op when not recording)."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> T:
            if _recorder is None:
                return fn(*args, **kwargs)
            with stage(name):
                return fn(*args, **kwargs)

        return inner

    return wrap


def add_count(name: str, n: int) -> None:
    """Add `n` to counter `name` while recording (e.g. images embedded); else nothing."""
    rec = _recorder
    if rec is not None:
        rec.table.counts[name] = rec.table.counts.get(name, 0) + int(n)


def enabled() -> bool:
    return _recorder is not None


@contextmanager
def recording() -> Iterator[StageTable]:
    """Record every stage of this process until the block ends; yields the table (filled on exit,
    `wall_s` included). Raises RuntimeError when a recording is already open."""
    global _recorder
    if _recorder is not None:
        raise RuntimeError("a stage recording is already open")
    rec = _Recorder()
    _recorder = rec
    t0 = _clock()
    try:
        yield rec.table
    finally:
        rec.table.wall_s = _clock() - t0
        _recorder = None
