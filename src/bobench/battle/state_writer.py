"""StateWriter: the scheduler's writes of battle and run state that survive an artifact-store outage.

State objects (`battles/<id>/battle.json`, `battles/<id>/runs/<key>.json`) are whole documents
rewritten on every change, so only the newest one per key matters. `put` hands one to the writer's
thread and, while the store answers, waits until it is written (at most `put_wait_s`, 1 s: callers
hold the scheduler's lock). When a write fails, that document and every later one are kept in memory
(newest per key) and the thread writes them back, with exponential backoff, as soon as the store
answers again — the scheduler's workers never block on, or die of, a store that is down. After a
failed call `healthy` is False until a call succeeds; the thread also probes an idle store, so health
reflects an outage nobody wrote through. A store that hangs (a stopped process: the kernel accepts
connections, nothing answers) makes no call fail for a whole client timeout; so a store call (this
writer's probe or write, or one its owner wraps in `tracked()`) that has not come back after
`hang_after_s` counts as the store being down too (`hung`); once a call has waited `put_wait_s`, `put`
returns at once. Nothing waiting is lost unless the process dies during the outage (a restarted
scheduler then re-queues those runs from the older state: they run again, reusing any finished result).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from typing import Any

from bobench.store.base import ArtifactStore

log = logging.getLogger(__name__)

PROBE_KEY = "scheduler/health-probe.json"  # read (never written) to see whether the store answers


class StateWriter:
    """Write-behind for state documents (module docstring). Thread-safe; `start()` then `close()`."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        probe_interval_s: float = 2.0,
        hang_after_s: float = 5.0,
        put_wait_s: float = 1.0,
    ) -> None:
        self.store = store
        self.backoff_s, self.max_backoff_s = max(0.01, backoff_s), max(0.01, max_backoff_s)
        self.probe_interval_s = probe_interval_s
        self.hang_after_s = hang_after_s
        self.put_wait_s = put_wait_s
        self._calls: dict[int, float] = {}  # token -> monotonic start of a store call in progress
        self._call_tokens = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._written = threading.Condition(self._lock)  # a waiting document was written or failed
        self._waiting: dict[str, Any] = {}  # key -> newest unsaved document
        self._writing: set[str] = set()  # keys the flusher is writing now
        self._failures = 0  # consecutive failed store calls
        self._last_ok = time.monotonic()
        self._closed = False
        self.last_error = ""
        self._thread = threading.Thread(target=self._loop, name="scheduler-state-writer", daemon=True)

    def start(self) -> StateWriter:
        self._thread.start()
        return self

    @property
    def healthy(self) -> bool:
        """True while the store answers: the last write did not fail and no store call hangs."""
        with self._lock:
            return self._failures == 0 and not self._hung_locked()

    @property
    def hung(self) -> bool:
        """True while a store call of this writer has been waiting for an answer for `hang_after_s`."""
        with self._lock:
            return self._hung_locked()

    def _hung_locked(self, after_s: float | None = None) -> bool:
        limit = time.monotonic() - (self.hang_after_s if after_s is None else after_s)
        return any(started < limit for started in self._calls.values())

    @contextlib.contextmanager
    def tracked(self):
        """Wrap one store call (this writer's or its owner's), so that one that does not come back
        within `hang_after_s` shows as `hung`."""
        with self._lock:
            token = next(self._call_tokens)
            self._calls[token] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                del self._calls[token]

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def put(self, key: str, doc: Any) -> None:
        """Have `doc` written under `key`: by the writer's thread, waiting up to `put_wait_s` for it
        (callers may hold their own locks: a store that hangs must not hold them longer), or kept for
        it while the store is down or hangs. Before `start()`, written here. Never raises."""
        with self._lock:
            if self._thread.is_alive() and not self._closed:
                self._waiting[key] = doc  # newest per key; the thread writes in order
                if self._failures or self._hung_locked(min(self.put_wait_s, self.hang_after_s)):
                    return  # written back when the store answers (a call already waits: no wait)
                self._wake.notify_all()
                deadline = time.monotonic() + self.put_wait_s
                while self._waiting.get(key) is doc and not self._failures:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._written.wait(left)
                return
            if self._waiting or self._writing or self._failures:
                self._waiting[key] = doc  # keep the order of writes per key
                return
        try:
            with self.tracked():
                self.store.put_json(key, doc)
        except Exception as exc:
            with self._lock:
                self._waiting.setdefault(key, doc)
                self._failed(exc)
            log.warning("state write %s failed (kept, retried in the background): %s", key, exc)
            return
        self.succeeded()

    def succeeded(self) -> None:
        """Someone's store call just worked (the store answers again)."""
        with self._lock:
            self._failures = 0
            self._last_ok = time.monotonic()
            self._wake.notify_all()

    def failed(self, exc: BaseException) -> None:
        """Someone's store call just failed: health turns NOT ready until the store answers."""
        with self._lock:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self.last_error = f"{type(exc).__name__}"
        self._written.notify_all()

    def backoff_delay_s(self) -> float:
        """How long to wait before the next store call after the current run of failures (0: none)."""
        with self._lock:
            return self._delay_locked() if self._failures else 0.0

    def _delay_locked(self) -> float:
        n = self._failures
        return 0.05 if n == 0 else min(self.max_backoff_s, self.backoff_s * 2 ** min(n - 1, 16))

    def flush(self) -> bool:
        """Write every waiting document once; True when none is left waiting."""
        with self._lock:
            batch = dict(self._waiting)
            self._writing = set(batch)
        try:
            for key, doc in batch.items():
                try:
                    with self.tracked():
                        self.store.put_json(key, doc)
                except Exception as exc:
                    self.failed(exc)
                    return False
                with self._lock:
                    if self._waiting.get(key) is doc:  # not replaced by a newer one meanwhile
                        del self._waiting[key]
                    self._failures = 0
                    self._last_ok = time.monotonic()
                    self._written.notify_all()
        finally:
            with self._lock:
                self._writing = set()
        with self._lock:
            return not self._waiting

    def probe(self) -> bool:
        """One cheap read of the store; True when it answered."""
        try:
            with self.tracked():
                self.store.exists(PROBE_KEY)
        except Exception as exc:
            self.failed(exc)
            return False
        self.succeeded()
        return True

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                idle = not self._waiting and self._failures == 0
                if idle or self._failures:  # documents handed over by `put` are written at once
                    self._wake.wait(self.probe_interval_s if idle else self._delay_locked())
                if self._closed:
                    return
                waiting, failures = bool(self._waiting), self._failures
                stale = time.monotonic() - self._last_ok >= self.probe_interval_s
            try:
                if waiting:
                    if self.flush() and failures:  # a plain hand-over from `put` is not news
                        log.info("store answers again: waiting state written")
                elif failures or stale:
                    self.probe()
            except Exception:  # never let the writer die
                log.exception("state writer loop failed; going on")

    def close(self, timeout_s: float = 5.0) -> None:
        """Try to write what waits (until `timeout_s`), then stop the thread."""
        deadline = time.monotonic() + timeout_s
        while self.waiting() and time.monotonic() < deadline:
            if not self.flush():
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        left = self.waiting()
        if left:
            log.error("scheduler stopping with %d state documents unwritten (store down)", left)
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
