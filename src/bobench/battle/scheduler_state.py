"""The scheduler's durable state: battles, runs and events, and where each lives in the artifact store.

Store layout (every object is a whole JSON document, rewritten atomically):

    results/<run_key>.json                 finished RunRecord, shared by all battles (reuse by key)
    battles/<id>/battle.json               id, name, spec, state, error, timestamps, owner
    battles/<id>/plan.json                 the planned runs, in order
    battles/<id>/runs/<run_key>.json       the run's last state in this battle: running / failed /
                                           cancelled (+ attempts, error, failed record)

A run with no state object is pending; a run whose key has a result is finished, whatever its state
object says (the result is written before anything else learns of it).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bobench.battle.plan import RunPlan

PENDING, RUNNING, FINISHED, FAILED, CANCELLED = "pending", "running", "finished", "failed", "cancelled"
RUN_STATES = (PENDING, RUNNING, FINISHED, FAILED, CANCELLED)
QUEUED = "queued"  # battle state before any run started
BATTLE_STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)
TERMINAL_BATTLE_STATES = (FINISHED, FAILED, CANCELLED)
MAX_EVENTS_KEPT = 20_000  # per battle; a watcher that falls further behind gets a fresh snapshot


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def result_key(run_key: str) -> str:
    return f"results/{run_key}.json"


def battle_key(battle_id: str) -> str:
    return f"battles/{battle_id}/battle.json"


def plan_key(battle_id: str) -> str:
    return f"battles/{battle_id}/plan.json"


def run_state_key(battle_id: str, run_key: str) -> str:
    return f"battles/{battle_id}/runs/{run_key}.json"


@dataclass
class RunState:
    """One run of one battle, in memory."""

    plan: RunPlan
    state: str = PENDING
    attempts: int = 0
    error: str | None = None
    reused: bool = False
    record: dict[str, Any] | None = None  # the failed record (finished ones live under results/)


@dataclass(frozen=True)
class BattleEvent:
    """A change of one run (or, with `run_key == ""`, a battle-level snapshot/final event)."""

    seq: int
    battle_id: str
    run_key: str
    state: str  # run state, or the battle state for battle-level events
    battle_state: str
    counts: dict[str, int]
    time: str
    backbone: str = ""
    dataset: str = ""
    protocol: str = ""
    seed: int = 0
    error: str | None = None


@dataclass(frozen=True)
class BattleStatus:
    """What `Scheduler.get` / `list` return: a battle's state and run counts (total + each run state)."""

    id: str
    name: str
    state: str
    counts: dict[str, int]
    created_at: str
    updated_at: str
    spec: dict[str, Any]
    error: str | None = None
    reused: int = 0
    owner: str = ""  # the identity that submitted it ("" = submitted without auth)


@dataclass
class Battle:
    """A battle in memory: its runs by key (plan order kept), counts by state and its event log."""

    id: str
    name: str
    spec: dict[str, Any]
    created_at: str
    runs: dict[str, RunState]
    state: str = QUEUED
    error: str | None = None
    updated_at: str = ""
    counts: collections.Counter = field(default_factory=collections.Counter)
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_EVENTS_KEPT))
    next_seq: int = 1
    started: bool = False  # a run was dispatched to an executor
    changed: threading.Condition | None = None
    owner: str = ""  # the submitting identity: only it (or an admin) may cancel the battle

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.created_at
        self.counts = collections.Counter(r.state for r in self.runs.values())

    def set_run_state(self, run: RunState, state: str) -> None:
        self.counts[run.state] -= 1
        self.counts[state] += 1
        run.state = state

    def count_dict(self) -> dict[str, int]:
        return {"total": len(self.runs), **{s: self.counts.get(s, 0) for s in RUN_STATES}}

    def derive_state(self) -> str:
        """cancelled stays; no run left to do -> finished/failed; any started -> running; else queued."""
        if self.state == CANCELLED:
            return CANCELLED
        if self.counts[PENDING] + self.counts[RUNNING] == 0:
            return FAILED if self.counts[FAILED] else FINISHED
        return RUNNING if self.started or self.state == RUNNING else QUEUED

    def status(self, with_spec: bool = True) -> BattleStatus:
        return BattleStatus(
            id=self.id,
            name=self.name,
            state=self.state,
            counts=self.count_dict(),
            created_at=self.created_at,
            updated_at=self.updated_at,
            spec=self.spec if with_spec else {},
            error=self.error,
            reused=sum(1 for r in self.runs.values() if r.reused),
            owner=self.owner,
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "spec": self.spec,
            "state": self.state,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "total": len(self.runs),
            "owner": self.owner,
        }

    def emit(self, run: RunState | None, error: str | None = None) -> BattleEvent:
        """Append an event for `run` (or a battle-level one) and wake watchers. Call with the lock held."""
        plan = run.plan if run is not None else None
        event = BattleEvent(
            seq=self.next_seq,
            battle_id=self.id,
            run_key=plan.run_key if plan else "",
            state=run.state if run is not None else self.state,
            battle_state=self.state,
            counts=self.count_dict(),
            time=self.updated_at,
            backbone=plan.backbone if plan else "",
            dataset=plan.dataset if plan else "",
            protocol=plan.protocol if plan else "",
            seed=plan.seed if plan else 0,
            error=(run.error if run is not None else None) or error,
        )
        self.next_seq += 1
        self.events.append(event)
        if self.changed is not None:
            self.changed.notify_all()
        return event

    def snapshot_event(self) -> BattleEvent:
        """A battle-level event with the current counts (not logged; seq = the last logged one)."""
        return BattleEvent(
            seq=self.next_seq - 1,
            battle_id=self.id,
            run_key="",
            state=self.state,
            battle_state=self.state,
            counts=self.count_dict(),
            time=self.updated_at,
            error=self.error,
        )
