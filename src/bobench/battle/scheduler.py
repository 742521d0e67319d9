"""The scheduler core: battles in, runs dispatched to executors, durable state in the artifact store.

A submitted spec is planned (deterministic run keys) and persisted; keys with a stored finished result
are reused; the rest go to a delay queue served by `concurrency` worker threads, each taking an
executor slot. Transient failures (Unavailable / DeadlineExceeded, raised or recorded) are retried with
exponential backoff within a retry window (below); any other failure marks the run failed and the battle goes
on. A restarted scheduler (`start()`) reloads every battle from the store and re-queues runs that were
pending or running, first checking for a stored result, so a finished run is never executed twice.

Runs whose protocol is in `job_protocols` (default `k8s_jobs.JOB_PROTOCOLS`: fine-tuning and the
detection protocols) go to the optional `job_executor` (the Kubernetes executor: one Job per run) with
its own slot pool; at most that many workers ever wait on Jobs, so Jobs never starve the other runs.
Without a job executor every run goes to `executors`.
`cancel` also asks the executor of each executing run to stop it (`Executor.cancel`); a run whose
executor returns a "cancelled" record ends cancelled, never finished.

Faults: a transient failure is retried while its run is within `retry_window_s` of its first
transient failure (and, when given, `max_retries`), so an evaluator restart loses no run. The store
may go away: state writes wait in a `StateWriter` and are written back when it answers, a worker
whose store call fails puts its run back in the queue (not counted as an attempt) with backoff, and
a finished result is written (retried until the store answers) before the run counts as finished;
workers never die of an error. `healthy()` is False while a worker is dead or the store is down or
hangs (the service's readiness); while it hangs, submit and results answer Unavailable at once.
Finished results are signed (`ResultSigner`); a stored result whose signature does not verify is not
finished: it is logged and its run executed again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from bobench.battle.executors.base import Executor
from bobench.battle.executors.k8s_jobs import JOB_PROTOCOLS
from bobench.battle.plan import RunPlan, plan_battle
from bobench.battle.result_signing import ResultSigner
from bobench.battle.scheduler_state import (
    CANCELLED,
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    TERMINAL_BATTLE_STATES,
    Battle,
    BattleEvent,
    BattleStatus,
    RunState,
    battle_key,
    plan_key,
    result_key,
    run_state_key,
    utc_now,
)
from bobench.battle.spec import BattleSpec
from bobench.battle.state_writer import StateWriter
from bobench.errors import (
    TRANSIENT_ERRORS,
    AlreadyExists,
    BobenchError,
    InvalidArgument,
    NotFound,
    Unavailable,
    is_transient_type,
)
from bobench.results import RunRecord, RunStatus
from bobench.store.base import ArtifactStore, check_key

log = logging.getLogger(__name__)

Planner = Callable[[BattleSpec, str], list[RunPlan]]
# Called with a run's plan (and its battle id) right before the run goes to an executor, e.g. to publish
# the backbone's model to the embedder. Must be idempotent and thread-safe. A BobenchError it raises
# fails that run with the error (Unavailable / DeadlineExceeded are retried like executor errors).
Preparer = Callable[[RunPlan, str], None]


def default_planner(spec: BattleSpec, battle_id: str) -> list[RunPlan]:
    return plan_battle(spec, battle_id=battle_id)


def refuse_run_settings(spec: BattleSpec) -> None:
    """InvalidArgument for a spec with `embedder:` or `settings:`: a scheduler's runs use its
    executors' settings (each evaluator's embedder, batch size, threads, device, set by whoever runs
    it), so these would be silently ignored; `bob battle run` honours them in its own process."""
    given = [
        *(["embedder"] if spec.embedder is not None else []),
        *(f"settings.{k}" for k in sorted(spec.settings)),
    ]
    if given:
        raise InvalidArgument(
            f"{', '.join(given)}: a battle submitted to the scheduler runs with its evaluators' settings, "
            "so the spec may not choose them; remove them from the spec (configure the evaluators with "
            "BOBENCH_* or their --config file), or run the battle in this process with `bob battle run`"
        )


def is_transient(record: RunRecord) -> bool:
    """A failed record whose error is an infrastructure hiccup (e.g. the embedder was unreachable):
    its `error_type` is one of TRANSIENT_ERRORS (derived from the message of a version-1 record)."""
    return record.status == RunStatus.FAILED and is_transient_type(record.error_type)


class Scheduler:
    """Runs battles on `executors`. Call `start()` once (it also resumes stored battles), `close()` at
    the end. Thread-safe; the gRPC service calls it from its event loop through worker threads.

    Retries (module docstring): `retry_window_s` after a run's first transient failure, each delay
    `backoff_s` doubled per attempt up to `max_backoff_s`; `max_retries` (None = no count limit)
    bounds them further. `signer` signs and verifies finished results (default: unsigned).

    Hooks for metrics (all optional, called from worker threads): `on_dispatch(queue_wait_s)` when a
    run reaches an executor, `on_run_done(state, duration_s)`, `on_retry()`.
    """

    def __init__(
        self,
        store: ArtifactStore,
        executors: list[Executor],
        *,
        concurrency: int = 1,
        max_retries: int | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 15.0,
        retry_window_s: float = 120.0,
        signer: ResultSigner | None = None,
        planner: Planner = default_planner,
        preparer: Preparer | None = None,
        job_executor: Executor | None = None,
        job_protocols: Iterable[str] = JOB_PROTOCOLS,
    ) -> None:
        if not executors:
            raise InvalidArgument("scheduler needs at least one executor")
        if concurrency < 1 or (max_retries is not None and max_retries < 0) or backoff_s < 0:
            raise InvalidArgument(
                f"concurrency must be >= 1, max_retries and backoff_s >= 0; got "
                f"{concurrency}, {max_retries}, {backoff_s}"
            )
        if retry_window_s < 0 or max_backoff_s < 0:
            raise InvalidArgument(
                f"retry_window_s and max_backoff_s must be >= 0; got {retry_window_s}, {max_backoff_s}"
            )
        self.store, self.executors, self.planner = store, list(executors), planner
        self.preparer = preparer
        self.concurrency, self.max_retries = concurrency, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.retry_window_s = retry_window_s
        self.signer = signer or ResultSigner()
        self.state = StateWriter(store, backoff_s=max(backoff_s, 0.1), max_backoff_s=max(max_backoff_s, 0.1))
        self._first_transient: dict[tuple[str, str], float] = {}  # (battle, run key) -> monotonic time
        self._submit_locks: dict[str, threading.Lock] = {}  # battle id -> held while it is submitted
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: list[tuple[float, int, str, str]] = []  # (ready_at monotonic, seq, battle id, run key)
        self._seq = itertools.count()
        self._battles: dict[str, Battle] = {}
        self._inflight: dict[str, set[str]] = {}  # run key -> battles waiting on its execution
        self._pool = _Pool(self.executors)
        self.job_executor = job_executor
        self.job_protocols = frozenset(job_protocols) if job_executor is not None else frozenset()
        self._job_pool = _Pool([job_executor]) if job_executor is not None else None
        self._parked: list[tuple[float, int, str, str]] = []  # job runs waiting for a free Job slot
        self._executing: dict[str, Executor] = {}  # run key -> the executor running it now
        self._workers: list[threading.Thread] = []
        self._closing = False
        self._stopped = threading.Event()  # set by close(): result writes stop retrying
        self.retries_total = 0
        self.on_dispatch: Callable[[float], None] | None = None
        self.on_run_done: Callable[[str, float], None] | None = None
        self.on_retry: Callable[[], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Scheduler:
        """Resume stored battles and start the worker threads. Returns self."""
        if not self.signer.enabled:
            log.warning("finished results are not signed (no result signing key): the store is trusted")
        self._recover()
        self.state.start()
        job_workers = self._job_pool.size if self._job_pool is not None else 0
        for i in range(self.concurrency + job_workers):
            t = threading.Thread(target=self._work, name=f"scheduler-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking runs from the queue; wait up to `timeout_s` for runs in flight; close executors.

        The job executor is closed first: its runs (Jobs) go on without us and the next scheduler adopts
        them, so its workers stop following at once (the runs stay pending) instead of waiting."""
        with self._lock:
            self._closing = True
            self._ready.notify_all()
        self._stopped.set()
        if self.job_executor is not None:
            self.job_executor.close()
        close_preparer = getattr(self.preparer, "close", None)
        if close_preparer is not None:  # e.g. stop following publish Jobs (the next scheduler adopts them)
            close_preparer()
        deadline = time.monotonic() + timeout_s
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        for e in self.executors:
            e.close()
        self.state.close(max(1.0, deadline - time.monotonic()))

    def healthy(self) -> bool:
        """True while every worker thread and the state writer run and the store answers."""
        workers_alive = all(t.is_alive() for t in self._workers) and self.state.alive
        return bool(self._workers) and workers_alive and not self._closing and self.state.healthy

    # -- API -------------------------------------------------------------------------------------
    def submit(self, spec: BattleSpec, battle_id: str | None = None, owner: str = "") -> str:
        """Plan `spec`, persist the battle (owned by `owner`, the submitting identity) and queue its
        runs; returns the battle id.

        Resubmitting an existing id with the same spec returns it; with another spec raises
        AlreadyExists. Raises InvalidArgument for a spec that cannot be planned, and for one with
        `embedder:` or `settings:` (`refuse_run_settings`).
        """
        refuse_run_settings(spec)
        spec_doc = spec.to_dict()
        if not battle_id:
            return self._submit(spec, spec_doc, f"{_slug(spec.name)}-{uuid.uuid4().hex[:10]}", owner)
        check_key(battle_id)
        with self._lock:  # one submission of an id at a time: the rest see its outcome
            id_lock = self._submit_locks.setdefault(battle_id, threading.Lock())
        with id_lock:
            with self._lock:
                existing = self._battles.get(battle_id)
            if existing is not None:
                if existing.spec != spec_doc:
                    raise AlreadyExists(f"battle {battle_id!r} exists with a different spec")
                return battle_id
            return self._submit(spec, spec_doc, battle_id, owner)

    def _submit(self, spec: BattleSpec, spec_doc: dict[str, Any], battle_id: str, owner: str) -> str:
        self._refuse_while_store_hangs(f"submit battle {battle_id!r}")
        plans = self.planner(spec, battle_id)
        finished = self._verified_results(plans)
        runs = {}
        for p in plans:
            reused = p.run_key in finished
            runs[p.run_key] = RunState(p, FINISHED if reused else PENDING, reused=reused)
        battle = Battle(
            id=battle_id, name=spec.name, spec=spec_doc, created_at=utc_now(), runs=runs, owner=owner
        )
        battle.state = battle.derive_state()
        self.store.put_json(plan_key(battle_id), [p.to_dict() for p in plans])
        self.store.put_json(battle_key(battle_id), battle.to_doc())  # a store outage fails the submit
        with self._lock:
            battle.changed = self._ready
            self._battles[battle_id] = battle
            self._enqueue_pending(battle)
            battle.emit(None)
        log.info(
            "battle %s (%s): %d runs, %d reused", battle_id, spec.name, len(runs), battle.status().reused
        )
        return battle_id

    def get(self, battle_id: str) -> BattleStatus:
        """The battle's state and counts; NotFound for an unknown id."""
        with self._lock:
            return self._battle(battle_id).status()

    def list(self) -> list[BattleStatus]:
        """All battles, newest first (without their specs)."""
        with self._lock:
            battles = sorted(self._battles.values(), key=lambda b: (b.created_at, b.id), reverse=True)
            return [b.status(with_spec=False) for b in battles]

    def results(self, battle_id: str, finished_only: bool = False) -> list[RunRecord]:
        """One record per run in plan order: finished ones from the store, others with their state.

        A finished run whose stored result no longer verifies goes back to the queue (and is
        listed as pending). Raises Unavailable when the store does not answer."""
        with self._lock:
            runs = list(self._battle(battle_id).runs.values())
        self._refuse_while_store_hangs(f"results of battle {battle_id!r}")
        out = []
        for run in runs:
            if run.state == FINISHED:
                record = self._stored_result(run.plan.run_key)
                if record is not None:
                    out.append(record)
                    continue
                self._reopen(battle_id, run)
            if run.state != FINISHED and not finished_only:
                record = RunRecord.from_dict(run.record) if run.record else run.plan.new_record()
                record.status, record.error = run.state, run.error
                out.append(record)
        return out

    def cancel(self, battle_id: str, reason: str = "") -> BattleStatus:
        """Cancel queued runs and ask executors to stop the battle's executing runs (one that cannot
        be stopped, or that another live battle waits on, finishes and is recorded). Idempotent."""
        with self._lock:
            battle = self._battle(battle_id)
            if battle.state not in TERMINAL_BATTLE_STATES:
                battle.state, battle.error, battle.updated_at = CANCELLED, reason or "cancelled", utc_now()
                for run in battle.runs.values():
                    if run.state == PENDING:
                        battle.set_run_state(run, CANCELLED)
                self.state.put(battle_key(battle_id), battle.to_doc())
                battle.emit(None)
            stoppable = [
                (key, self._executing[key])
                for key, run in battle.runs.items()
                if run.state == RUNNING and key in self._executing and self._only_cancelled_wait(key)
            ]
            status = battle.status()
        for key, executor in stoppable:
            try:
                executor.cancel(key)
            except BobenchError as exc:
                log.warning("could not stop run %s of cancelled battle %s: %s", key, battle_id, exc)
        return status

    def _refuse_while_store_hangs(self, what: str) -> None:
        """Unavailable at once while the store hangs (`StateWriter.hung`): a call would wait a whole
        client timeout for it, holding a server thread, instead of answering."""
        if self.state.hung:
            raise Unavailable(
                f"{what}: the store {self.store.url} has not answered for over "
                f"{self.state.hang_after_s:.0f} s; try again when the scheduler's health is SERVING"
            )

    def _only_cancelled_wait(self, key: str) -> bool:
        """True when every battle waiting on `key` is cancelled (lock held)."""
        return all(self._battles[b].state == CANCELLED for b in self._inflight.get(key, ()))

    def watch(
        self, battle_id: str, timeout_s: float | None = None, is_active: Callable[[], bool] | None = None
    ) -> Iterator[BattleEvent]:
        """Events of the battle: a snapshot first, then every change, ending after the battle ends.

        Stops early (without error) when `timeout_s` passes or `is_active()` turns False.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            battle = self._battle(battle_id)
            first = battle.snapshot_event()
        yield first
        seq = first.seq
        while first.battle_state not in TERMINAL_BATTLE_STATES:
            with self._lock:
                while battle.next_seq - 1 <= seq and not self._closing:
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or (is_active is not None and not is_active()):
                        return
                    self._ready.wait(0.5 if left is None else min(left, 0.5))
                if self._closing:
                    return
                oldest = battle.events[0].seq if battle.events else seq + 1
                new = [battle.snapshot_event()] if oldest > seq + 1 else _events_after(battle.events, seq)
            yield from new
            seq = new[-1].seq
            if new[-1].battle_state in TERMINAL_BATTLE_STATES and not new[-1].run_key:
                return

    def wait(self, battle_id: str, timeout_s: float | None = None) -> BattleStatus:
        """Block until the battle ends (or `timeout_s` passes); returns its status."""
        for _ in self.watch(battle_id, timeout_s):
            pass
        return self.get(battle_id)

    def queue_depth(self) -> int:
        with self._lock:
            return len(self._queue)

    def counts_by_state(self) -> dict[str, int]:
        """Runs of all battles by state (for the runs-by-state gauge)."""
        with self._lock:
            total: dict[str, int] = {}
            for b in self._battles.values():
                for state, n in b.counts.items():
                    total[state] = total.get(state, 0) + n
            return total

    # -- internals -------------------------------------------------------------------------------
    def _battle(self, battle_id: str) -> Battle:
        try:
            return self._battles[battle_id]
        except KeyError:
            raise NotFound(f"unknown battle {battle_id!r}") from None

    def _enqueue_pending(self, battle: Battle, delay_s: float = 0.0) -> None:
        now = time.monotonic()
        for key, run in battle.runs.items():
            if run.state == PENDING:
                heapq.heappush(self._queue, (now + delay_s, next(self._seq), battle.id, key))
        self._ready.notify_all()

    def _verified_results(self, plans: Iterable[RunPlan]) -> set[str]:
        """The run keys of `plans` with a stored finished result whose signature verifies."""
        stored = set(self.store.list("results/"))
        return {
            p.run_key
            for p in plans
            if result_key(p.run_key) in stored and self._stored_result(p.run_key) is not None
        }

    def _stored_result(self, run_key: str) -> RunRecord | None:
        """The stored finished record of `run_key` when its signature verifies, else None (logged).
        Raises Unavailable when the store does not answer."""
        try:
            with self.state.tracked():  # one that hangs turns health NOT ready
                doc = self.store.get_json(result_key(run_key))
        except NotFound:
            return None
        except InvalidArgument:  # not JSON
            doc = None
        if not self.signer.verify(doc):
            log.error(
                "stored result of run %s does not verify: not finished, the run executes again", run_key
            )
            return None
        record = RunRecord.from_dict(doc)
        return record if record.finished else None

    def _write_result(self, run_key: str, record: RunRecord) -> bool:
        """Store the signed finished record, retrying with backoff while the store is down; False when
        the scheduler closes first (the run stays pending for the next scheduler)."""
        doc = self.signer.sign(_record_doc(record))
        while True:
            try:
                with self.state.tracked():
                    self.store.put_json(result_key(run_key), doc)
            except Exception as exc:
                self.state.failed(exc)
                log.warning("result of run %s not written yet (%s); retrying", run_key, exc)
                if self._stopped.wait(self.state.backoff_delay_s()):
                    return False
                continue
            self.state.succeeded()
            return True

    def _reopen(self, battle_id: str, run: RunState) -> None:
        """A finished run whose result no longer verifies: queue it again."""
        with self._lock:
            battle = self._battles[battle_id]
            if run.state != FINISHED:
                return
            battle.set_run_state(run, PENDING)
            run.reused = False
            self._update_battle_state(battle)
            battle.emit(run)
            self._enqueue_pending(battle)

    def _recover(self) -> None:
        """Load every stored battle; runs pending or running (no verified result yet) are queued again."""
        for key in self.store.list("battles/"):
            if not key.endswith("/battle.json"):
                continue
            doc = self.store.get_json(key)
            bid = doc["id"]
            _register_stored_custom_backbones(bid, doc["spec"])
            plans = [RunPlan.from_dict(d) for d in self.store.get_json(plan_key(bid))]
            finished = self._verified_results(plans)
            states = {
                k.rsplit("/", 1)[1].removesuffix(".json"): k for k in self.store.list(f"battles/{bid}/runs/")
            }
            runs, interrupted = {}, 0
            for p in plans:
                run = RunState(p)
                if p.run_key in finished:
                    run.state = FINISHED
                elif p.run_key in states:
                    saved = self.store.get_json(states[p.run_key])
                    run.attempts, run.error, run.record = (
                        saved.get("attempts", 0),
                        saved.get("error"),
                        saved.get("record"),
                    )
                    run.state = saved["state"] if saved["state"] in (FAILED, CANCELLED) else PENDING
                    interrupted += saved["state"] == RUNNING
                if run.state == PENDING and doc["state"] == CANCELLED:
                    run.state = CANCELLED
                runs[p.run_key] = run
            battle = Battle(
                id=bid,
                name=doc["name"],
                spec=doc["spec"],
                created_at=doc["created_at"],
                runs=runs,
                state=doc["state"],
                error=doc.get("error"),
                updated_at=doc.get("updated_at", ""),
                owner=doc.get("owner", ""),
            )
            with self._lock:
                battle.changed = self._ready
                battle.started = doc["state"] != "queued"
                self._battles[bid] = battle
                self._update_battle_state(battle)
                self._enqueue_pending(battle)
            log.info(
                "resumed battle %s: %s (%d interrupted while running, re-queued)",
                bid,
                battle.count_dict(),
                interrupted,
            )

    def _update_battle_state(self, battle: Battle) -> bool:
        """Recompute and persist the battle state after a run changed (lock held); True if it changed."""
        battle.updated_at = utc_now()
        state = battle.derive_state()
        if state == battle.state:
            return False
        battle.state = state
        self.state.put(battle_key(battle.id), battle.to_doc())
        return True

    def _next_item(self) -> tuple[str, str, float] | None:
        """Pop the next ready run and mark it running: (battle id, run key, when it became ready)."""
        with self._lock:
            while not self._closing:
                if self._queue and self._queue[0][0] <= time.monotonic():
                    ready_at, _, bid, key = heapq.heappop(self._queue)
                    battle = self._battles[bid]
                    run = battle.runs[key]
                    if run.state != PENDING:
                        continue
                    if battle.state == CANCELLED:  # a retry queued before the cancel
                        battle.set_run_state(run, CANCELLED)
                        battle.emit(run)
                        continue
                    if key not in self._inflight and not self._take_job_turn(run.plan):
                        self._parked.append((ready_at, next(self._seq), bid, key))
                        continue
                    battle.set_run_state(run, RUNNING)
                    run.attempts += 1
                    battle.started = True
                    self._update_battle_state(battle)
                    battle.emit(run)
                    if key in self._inflight:  # another battle is executing this key: wait for it
                        self._inflight[key].add(bid)
                        continue
                    self._inflight[key] = {bid}
                    return bid, key, ready_at
                timeout = (self._queue[0][0] - time.monotonic()) if self._queue else None
                self._ready.wait(timeout)
            return None

    def _is_job(self, plan: RunPlan) -> bool:
        return plan.protocol in self.job_protocols

    def _take_job_turn(self, plan: RunPlan) -> bool:
        """For a job run: claim one of the job pool's turns, False when all are taken (lock held)."""
        if not self._is_job(plan):
            return True
        if self._job_pool.engaged >= self._job_pool.size:
            return False
        self._job_pool.engaged += 1
        return True

    def _end_job_turn(self) -> None:
        """Give a job turn back and re-queue the parked job runs (lock held)."""
        self._job_pool.engaged -= 1
        for item in self._parked:
            heapq.heappush(self._queue, item)
        self._parked.clear()
        self._ready.notify_all()

    def _work(self) -> None:
        """A worker: take runs and dispatch them until the scheduler closes. Never dies of an error."""
        while True:
            try:
                item = self._next_item()
            except Exception:  # a bug; the worker goes on after a pause
                log.exception("scheduler worker could not take the next run")
                time.sleep(max(self.backoff_s, 0.1))
                continue
            if item is None:
                return
            bid, key, ready_at = item
            try:
                with self._lock:
                    is_job = self._is_job(self._battles[bid].runs[key].plan)
                try:
                    self._dispatch(bid, key, ready_at)
                except Exception as exc:  # the store did not answer: the run waits for it, not lost
                    self.state.failed(exc)
                    log.warning("run %s (battle %s) put back: %s", key, bid, exc)
                    self._put_back(key)
                finally:
                    if is_job:
                        with self._lock:
                            self._end_job_turn()
            except Exception:
                log.exception("scheduler worker failed on run %s (battle %s)", key, bid)

    def _put_back(self, key: str) -> None:
        """Re-queue `key` for every battle waiting on it after a store failure, not counting the
        attempt, after the store's backoff delay."""
        delay = max(self.state.backoff_delay_s(), self.backoff_s)
        with self._lock:
            for bid in sorted(self._inflight.pop(key, set())):
                battle = self._battles[bid]
                run = battle.runs[key]
                if run.state != RUNNING:
                    continue
                battle.set_run_state(run, PENDING)
                run.attempts = max(0, run.attempts - 1)
                heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), bid, key))
                battle.emit(run)
            self._ready.notify_all()

    def _dispatch(self, bid: str, key: str, ready_at: float) -> None:
        with self._lock:
            run = self._battles[bid].runs[key]
            plan, attempts = run.plan, run.attempts
        stored = self._stored_result(key)
        if stored is not None:  # finished elsewhere (e.g. before a crash): never rerun
            self._finish(key, stored, None)
            return
        self.state.put(run_state_key(bid, key), {"state": RUNNING, "attempts": attempts, "at": utc_now()})
        if self.preparer is not None:
            try:
                self.preparer(plan, bid)
            except TRANSIENT_ERRORS as exc:
                self._finish(key, None, f"{type(exc).__name__}: {exc}")
                return
            except Exception as exc:  # a BobenchError, or a bug: the run fails with it
                self._finish(key, _failed_record(plan, exc), None)
                return
        pool = self._job_pool if self._is_job(plan) else self._pool
        executor = pool.acquire(self._lock)
        with self._lock:
            dropped = self._only_cancelled_wait(key)  # cancelled while it waited for a slot
            if not dropped:
                self._executing[key] = executor
        if dropped:
            pool.release(executor, self._lock)
            self._finish(key, _cancelled_record(plan), None)
            return
        t0 = time.monotonic()
        if self.on_dispatch is not None:
            self.on_dispatch(t0 - ready_at)
        try:
            record, error = executor.execute(plan), None
        except TRANSIENT_ERRORS as exc:
            record, error = None, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # an executor must not raise for a run's failure; fail it, go on
            log.exception("executor %s raised on run %s", type(executor).__name__, key)
            record, error = _failed_record(plan, exc), None
        finally:
            with self._lock:
                self._executing.pop(key, None)
            pool.release(executor, self._lock)
        if self.on_run_done is not None:
            self.on_run_done(record.status if record is not None else "transient", time.monotonic() - t0)
        if record is not None and record.finished and not self._write_result(key, record):
            self._finish(key, None, "Unavailable: the store did not answer before the scheduler stopped")
            return
        self._finish(key, record, error)

    def _finish(self, key: str, record: RunRecord | None, error: str | None) -> None:
        """Apply an execution outcome to every battle waiting on `key` and persist it."""
        transient = record is None or is_transient(record)
        error = error or (record.error if record is not None else None)
        with self._lock:
            waiting = self._inflight.pop(key, set())
            for bid in sorted(waiting):
                battle = self._battles[bid]
                run = battle.runs[key]
                if record is not None and record.finished:
                    battle.set_run_state(run, FINISHED)
                    run.error = None
                    self._first_transient.pop((bid, key), None)
                elif record is not None and record.status == RunStatus.CANCELLED:
                    battle.set_run_state(run, CANCELLED)
                    run.error = record.error
                    self._first_transient.pop((bid, key), None)
                    self.state.put(
                        run_state_key(bid, key),
                        {"state": CANCELLED, "attempts": run.attempts, "error": run.error, "at": utc_now()},
                    )
                elif transient and self._closing:
                    battle.set_run_state(run, PENDING)  # resumed by the next scheduler
                elif transient and self._may_retry(bid, key, run.attempts):
                    battle.set_run_state(run, PENDING)
                    run.error = error
                    self.retries_total += 1
                    if self.on_retry is not None:
                        self.on_retry()
                    delay = min(self.max_backoff_s, self.backoff_s * 2 ** min(run.attempts - 1, 16))
                    heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), bid, key))
                    log.warning("run %s attempt %d: %s; retrying in %.2f s", key, run.attempts, error, delay)
                else:
                    battle.set_run_state(run, FAILED)
                    run.error = error
                    run.record = _record_doc(record) if record is not None else None
                    self._first_transient.pop((bid, key), None)
                    self.state.put(
                        run_state_key(bid, key),
                        {
                            "state": FAILED,
                            "attempts": run.attempts,
                            "error": error,
                            "record": run.record,
                            "at": utc_now(),
                        },
                    )
                ended = self._update_battle_state(battle) and battle.state in TERMINAL_BATTLE_STATES
                battle.emit(run)
                if ended:
                    battle.emit(None)
            self._ready.notify_all()

    def _may_retry(self, bid: str, key: str, attempts: int) -> bool:
        """Whether a transient failure of this run is retried (class docstring; lock held)."""
        if self.max_retries is not None and attempts > self.max_retries:
            return False
        first = self._first_transient.setdefault((bid, key), time.monotonic())
        return time.monotonic() - first <= self.retry_window_s


class _Pool:
    """Executor slots (`slots` per executor, default 1) and the job turns workers hold."""

    def __init__(self, executors: list[Executor]) -> None:
        self._slots = [e for e in executors for _ in range(max(1, getattr(e, "slots", 1)))]
        self.size = len(self._slots)
        self._free = threading.Semaphore(self.size)
        self.engaged = 0  # job pool only: workers between taking a job run and finishing it

    def acquire(self, lock: threading.Lock) -> Executor:
        self._free.acquire()
        with lock:
            return self._slots.pop()

    def release(self, executor: Executor, lock: threading.Lock) -> None:
        with lock:
            self._slots.append(executor)
        self._free.release()


def _register_stored_custom_backbones(battle_id: str, spec_doc: dict[str, Any]) -> None:
    """Register the user-defined backbones of a stored battle again (this process may be a restarted
    scheduler), so its runs can be published and sent with their spec. A conflicting definition is
    logged; those runs then fail naming the backbone."""
    from bobench.battle.plan import register_custom_backbones

    entries = tuple(b for b in spec_doc.get("backbones", ()) if isinstance(b, dict))
    try:
        register_custom_backbones(entries)
    except BobenchError as exc:
        log.error("battle %s: cannot register its custom backbones again: %s", battle_id, exc)


def _failed_record(plan: RunPlan, exc: BaseException) -> RunRecord:
    """The failed record of a run that could not be prepared (its backbone could not be published)."""
    record = plan.new_record()
    record.fail_with(exc)
    record.started_at = record.finished_at = utc_now()
    return record


def _cancelled_record(plan: RunPlan) -> RunRecord:
    record = plan.new_record()
    record.fail("Cancelled", "cancelled before it started", RunStatus.CANCELLED)
    record.started_at = record.finished_at = utc_now()
    return record


def _record_doc(record: RunRecord) -> dict[str, Any]:
    import json

    return json.loads(record.to_json())


def _slug(name: str) -> str:
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-_")
    return slug[:40] or "battle"


def _events_after(events: Iterable[BattleEvent], seq: int) -> list[BattleEvent]:
    """The events newer than `seq`, read from the newest end: O(new events), not O(all events)."""
    newer = []
    for event in reversed(events):
        if event.seq <= seq:
            break
        newer.append(event)
    newer.reverse()
    return newer
