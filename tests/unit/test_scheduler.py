"""Scheduler core with scripted executors (real `Executor` subclasses) and a real LocalStore."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter

import pytest

from bobench.battle.executors.base import Executor
from bobench.battle.plan import RunPlan
from bobench.battle.scheduler import Scheduler
from bobench.battle.scheduler_state import plan_key, result_key, run_state_key
from bobench.battle.spec import parse_spec
from bobench.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from bobench.results import RunRecord, RunStatus
from bobench.store import LocalStore


def grid_planner(spec, battle_id):
    """Backbones x datasets x protocols x seeds with content-derived keys (no registries needed)."""
    plans = []
    for b in spec.backbones:
        for d in spec.datasets:
            for p in spec.protocols:
                for seed in spec.seeds:
                    key = hashlib.sha256(f"{b}|{d.name}|{p.name}|{seed}".encode()).hexdigest()[:24]
                    plans.append(
                        RunPlan(
                            run_key=key,
                            backbone=b,
                            dataset=d.name,
                            dataset_ref=d.ref,
                            protocol=p.name,
                            protocol_version="1",
                            task="classification",
                            config={},
                            seed=seed,
                            primary_metric="top1",
                            battle=battle_id,
                        )
                    )
    return plans


def make_spec(backbones=("b0", "b1", "b2"), seeds=(0, 1), name="grid"):
    return parse_spec(
        {
            "name": name,
            "backbones": list(backbones),
            "datasets": ["d0"],
            "protocols": ["p0"],
            "seeds": list(seeds),
        }
    )


class ScriptedExecutor(Executor):
    """Per backbone, a list of outcomes by attempt: "ok", "unavailable" (raise), "unavailable-record"
    (a failed record with an Unavailable error), "fail" (a failed record). Counts executions."""

    def __init__(
        self, script=None, gate: threading.Event | None = None, delay_s: float = 0.0, slots: int = 1
    ):
        self.script = script or {}
        self.gate, self.delay_s, self.slots = gate, delay_s, slots
        self.calls: Counter = Counter()
        self.call_times: dict[str, list[float]] = {}
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def execute(self, plan, progress=None):
        with self._lock:
            attempt = self.calls[plan.run_key]
            self.calls[plan.run_key] += 1
            self.call_times.setdefault(plan.run_key, []).append(time.monotonic())
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                assert self.gate.wait(10)
            time.sleep(self.delay_s)
            outcomes = self.script.get(plan.backbone, ["ok"])
            outcome = outcomes[min(attempt, len(outcomes) - 1)]
            record = plan.new_record()
            if outcome == "unavailable":
                raise Unavailable(f"evaluator for {plan.backbone} is down")
            if outcome == "ok":
                record.status, record.metrics = "finished", {"top1": 0.5 + plan.seed / 10}
            else:
                prefix = "Unavailable" if outcome == "unavailable-record" else "InvalidArgument"
                record.fail(prefix, f"{prefix}: scripted failure of {plan.backbone}")
            return record
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store", fsync=False)


def start(store, executors, **kw):
    kw.setdefault("backoff_s", 0.01)
    return Scheduler(store, executors, planner=grid_planner, **kw).start()


def test_battle_runs_every_run_once_and_persists_results_in_plan_order(store):
    ex = ScriptedExecutor()
    sched = start(store, [ex], concurrency=2)
    try:
        bid = sched.submit(make_spec())
        status = sched.wait(bid, timeout_s=10)
        assert status.state == "finished"
        assert status.counts == {
            "total": 6,
            "pending": 0,
            "running": 0,
            "finished": 6,
            "failed": 0,
            "cancelled": 0,
        }
        records = sched.results(bid)
        plans = grid_planner(make_spec(), bid)
        assert [r.run_key for r in records] == [p.run_key for p in plans]
        assert all(r.metrics["top1"] == 0.5 + r.seed / 10 for r in records)
        assert set(ex.calls.values()) == {1} and len(ex.calls) == 6
        assert len(store.list("results/")) == 6
        assert store.get_json(f"battles/{bid}/battle.json")["state"] == "finished"
    finally:
        sched.close()


def test_transient_failures_are_retried_with_exponential_backoff(store):
    ex = ScriptedExecutor({"b0": ["unavailable", "unavailable-record", "ok"]})
    sched = start(store, [ex], backoff_s=0.1, max_retries=3)
    try:
        bid = sched.submit(make_spec(backbones=["b0"], seeds=[0]))
        assert sched.wait(bid, timeout_s=10).state == "finished"
        (key,) = ex.calls
        assert ex.calls[key] == 3 and sched.retries_total == 2
        t = ex.call_times[key]
        assert t[1] - t[0] >= 0.1 * 0.9 and t[2] - t[1] >= 0.2 * 0.9  # 0.1 s, then 0.2 s
    finally:
        sched.close()


def test_run_that_keeps_failing_is_marked_failed_after_cap_and_battle_continues(store):
    ex = ScriptedExecutor({"b1": ["unavailable"]})
    sched = start(store, [ex], max_retries=2)
    try:
        bid = sched.submit(make_spec(seeds=[0]))
        status = sched.wait(bid, timeout_s=10)
        assert status.state == "failed"
        assert status.counts["finished"] == 2 and status.counts["failed"] == 1
        failed = [r for r in sched.results(bid) if r.status == "failed"]
        assert len(failed) == 1 and "evaluator for b1 is down" in failed[0].error
        assert ex.calls[failed[0].run_key] == 3  # 1 + max_retries
        assert store.get_json(run_state_key(bid, failed[0].run_key))["state"] == "failed"
    finally:
        sched.close()


def test_permanent_failure_is_not_retried(store):
    ex = ScriptedExecutor({"b0": ["fail", "ok"]})
    sched = start(store, [ex])
    try:
        bid = sched.submit(make_spec(backbones=["b0"], seeds=[0]))
        assert sched.wait(bid, timeout_s=10).state == "failed"
        assert sum(ex.calls.values()) == 1 and sched.retries_total == 0
        assert sched.results(bid)[0].error == "InvalidArgument: scripted failure of b0"
    finally:
        sched.close()


def test_finished_keys_are_reused_by_a_later_battle(store):
    ex = ScriptedExecutor()
    sched = start(store, [ex])
    try:
        first = sched.submit(make_spec(backbones=["b0", "b1"]))
        sched.wait(first, timeout_s=10)
        second = sched.submit(make_spec(backbones=["b1", "b2"], name="overlap"))
        status = sched.wait(second, timeout_s=10)
        assert status.state == "finished" and status.reused == 2
        assert sum(ex.calls.values()) == 6 and set(ex.calls.values()) == {1}
        assert len(sched.results(second, finished_only=True)) == 4
    finally:
        sched.close()


def test_same_key_in_two_concurrent_battles_executes_once(store):
    gate = threading.Event()
    ex = ScriptedExecutor(gate=gate, slots=4)
    sched = start(store, [ex], concurrency=4)
    try:
        a = sched.submit(make_spec(backbones=["b0"], seeds=[0]), battle_id="a")
        b = sched.submit(make_spec(backbones=["b0"], seeds=[0], name="again"), battle_id="b")
        time.sleep(0.2)
        gate.set()
        assert sched.wait(a, 10).state == "finished" and sched.wait(b, 10).state == "finished"
        assert sum(ex.calls.values()) == 1
    finally:
        sched.close()


def test_concurrency_is_bounded_by_workers_and_executor_slots(store):
    executors = [ScriptedExecutor(delay_s=0.05), ScriptedExecutor(delay_s=0.05)]
    sched = start(store, executors, concurrency=4)
    try:
        bid = sched.submit(make_spec(backbones=[f"b{i}" for i in range(6)]))
        assert sched.wait(bid, timeout_s=10).state == "finished"
        assert all(e.max_active == 1 for e in executors)  # one slot each
        assert sum(sum(e.calls.values()) for e in executors) == 12
        assert min(sum(e.calls.values()) for e in executors) >= 1  # both used
    finally:
        sched.close()


def test_cancel_cancels_pending_runs_and_lets_running_ones_finish(store):
    gate = threading.Event()
    ex = ScriptedExecutor(gate=gate)
    sched = start(store, [ex], concurrency=1)
    try:
        bid = sched.submit(make_spec())
        deadline = time.monotonic() + 30
        # inside the executor, not only marked running: a run still waiting for its executor slot is
        # cancelled before it starts (test_a_run_cancelled_while_waiting_for_an_executor_slot_...)
        while ex.active == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        status = sched.cancel(bid, reason="user asked")
        assert status.state == "cancelled" and status.error == "user asked"
        assert status.counts["cancelled"] == 5 and status.counts["running"] == 1
        gate.set()
        deadline = time.monotonic() + 30  # generous: a loaded machine; the loop ends when the run does
        while sched.get(bid).counts["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        final = sched.get(bid)
        assert final.state == "cancelled" and final.counts["finished"] == 1 and sum(ex.calls.values()) == 1
        assert sched.cancel(bid).error == "user asked"  # idempotent
    finally:
        sched.close()


def test_watch_starts_with_a_snapshot_and_ends_with_the_final_battle_event(store):
    gate = threading.Event()  # b0 waits until the watcher has its snapshot, so no run ends unseen
    ex = ScriptedExecutor({"b2": ["fail"]}, gate=gate)
    sched = start(store, [ex], concurrency=1)
    try:
        bid = sched.submit(make_spec(seeds=[0]))
        deadline = time.monotonic() + 30
        while sched.get(bid).counts["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        stream = sched.watch(bid, timeout_s=60)
        snapshot = next(stream)
        assert snapshot.run_key == "" and snapshot.counts["running"] == 1
        gate.set()
        events = [snapshot, *stream]
        assert events[-1].run_key == ""
        assert events[-1].battle_state == "failed" and events[-1].counts["finished"] == 2
        run_events = [(e.backbone, e.state) for e in events if e.run_key]
        assert ("b0", "finished") in run_events  # b0 was running in the snapshot
        assert ("b1", "running") in run_events and ("b1", "finished") in run_events
        assert ("b2", "failed") in run_events
        assert [e.seq for e in events[1:]] == sorted(e.seq for e in events[1:])
        late = list(sched.watch(bid))  # a late watcher gets one terminal snapshot
        assert len(late) == 1 and late[0].battle_state == "failed"
    finally:
        sched.close()


def test_restart_resumes_running_and_pending_runs_without_rerunning_finished_ones(store):
    ex = ScriptedExecutor({"b2": ["fail"]})
    sched = start(store, [ex])
    bid = sched.submit(make_spec())
    sched.wait(bid, timeout_s=10)
    sched.close()
    plans = [RunPlan.from_dict(d) for d in store.get_json(plan_key(bid))]
    # what a SIGKILL mid-battle leaves: one run "running" without a result, one never started
    crashed, never_started = plans[0].run_key, plans[1].run_key
    store.delete(result_key(crashed))
    store.delete(result_key(never_started))
    store.put_json(run_state_key(bid, crashed), {"state": "running", "attempts": 1})
    doc = store.get_json(f"battles/{bid}/battle.json")
    store.put_json(f"battles/{bid}/battle.json", {**doc, "state": "running"})

    ex2 = ScriptedExecutor()
    sched2 = start(store, [ex2])
    try:
        status = sched2.wait(bid, timeout_s=10)
        assert dict(ex2.calls) == {crashed: 1, never_started: 1}
        assert status.state == "failed" and status.counts["finished"] == 4 and status.counts["failed"] == 2
    finally:
        sched2.close()


def test_submit_is_idempotent_per_battle_id_and_unknown_ids_are_not_found(store):
    sched = start(store, [ScriptedExecutor()])
    try:
        assert sched.submit(make_spec(), battle_id="my-battle") == "my-battle"
        assert sched.submit(make_spec(), battle_id="my-battle") == "my-battle"
        with pytest.raises(AlreadyExists):
            sched.submit(make_spec(seeds=[3]), battle_id="my-battle")
        with pytest.raises(InvalidArgument):
            sched.submit(make_spec(), battle_id="../escape")
        with pytest.raises(NotFound, match="nope"):
            sched.get("nope")
        assert [b.id for b in sched.list()] == ["my-battle"]
    finally:
        sched.close()


def test_constructor_rejects_bad_settings(store):
    with pytest.raises(InvalidArgument):
        Scheduler(store, [])
    with pytest.raises(InvalidArgument):
        Scheduler(store, [ScriptedExecutor()], concurrency=0)


def test_default_planner_plans_through_registries(store, monkeypatch):
    """The default planner is `plan_battle`: an unknown backbone is refused at submit."""
    sched = Scheduler(store, [ScriptedExecutor()]).start()
    try:
        with pytest.raises(InvalidArgument, match="backbone"):
            sched.submit(
                parse_spec(
                    {
                        "backbones": ["no-such-backbone-xyz"],
                        "datasets": ["toy"],
                        "protocols": ["linear_probe"],
                    }
                )
            )
        assert sched.list() == []
    finally:
        sched.close()


def test_records_round_trip_through_the_store(store):
    ex = ScriptedExecutor()
    sched = start(store, [ex])
    try:
        bid = sched.submit(make_spec(backbones=["b0"], seeds=[0]))
        sched.wait(bid, 10)
        (rec,) = sched.results(bid)
        assert isinstance(rec, RunRecord) and rec.finished and rec.battle == bid
    finally:
        sched.close()


def test_preparer_failure_fails_only_that_backbones_runs_and_transient_preparer_errors_retry(store):
    """The pre-dispatch hook (publishing a backbone): a permanent error fails the backbone's runs with
    that reason and they never reach an executor; a transient one is retried; other backbones go on."""
    from bobench.errors import NotFound as PublishNotFound

    prepared: Counter = Counter()

    def preparer(plan, battle_id):
        prepared[plan.backbone] += 1
        if plan.backbone == "b1":
            raise PublishNotFound("cannot publish b1: no weights")
        if plan.backbone == "b2" and prepared["b2"] == 1:
            raise Unavailable("store briefly down")

    ex = ScriptedExecutor()
    sched = start(store, [ex], preparer=preparer)
    try:
        bid = sched.submit(make_spec(seeds=(0,)))
        status = sched.wait(bid, timeout_s=10)
        by_backbone = {r.backbone: r for r in sched.results(bid)}
        assert status.counts["finished"] == 2 and status.counts["failed"] == 1
        assert by_backbone["b1"].status == "failed"
        assert "cannot publish b1" in by_backbone["b1"].error
        assert {p.backbone for p in grid_planner(make_spec(seeds=(0,)), bid) if p.run_key in ex.calls} == {
            "b0",
            "b2",
        }
        assert prepared["b2"] == 2  # retried after the transient error
    finally:
        sched.close()


# -- the job executor (Kubernetes Jobs) ------------------------------------------------------------
def mixed_spec(backbones=("b0", "b1", "b2", "b3")):
    return parse_spec(
        {
            "name": "mixed",
            "backbones": list(backbones),
            "datasets": ["d0"],
            "protocols": ["p0", "finetune"],
            "seeds": [0],
        }
    )


class CancellableExecutor(ScriptedExecutor):
    """Blocks every run until `cancel(run_key)` (then returns a cancelled record) or the gate opens."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.cancelled: list[str] = []
        self._stop: dict[str, threading.Event] = {}

    def execute(self, plan, progress=None):
        stop = self._stop.setdefault(plan.run_key, threading.Event())
        with self._lock:
            self.calls[plan.run_key] += 1
        assert stop.wait(10)
        record = plan.new_record()
        record.fail("Cancelled", "cancelled: its Job was deleted", RunStatus.CANCELLED)
        return record

    def cancel(self, run_key):
        self.cancelled.append(run_key)
        self._stop.setdefault(run_key, threading.Event()).set()


def test_job_protocols_go_to_the_job_executor_with_its_own_slot_pool(store):
    gate = threading.Event()
    local, jobs = ScriptedExecutor(), ScriptedExecutor(gate=gate, slots=2)
    sched = start(store, [local], concurrency=1, job_executor=jobs)
    try:
        bid = sched.submit(mixed_spec())
        deadline = time.monotonic() + 10
        while sum(local.calls.values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sum(local.calls.values()) == 4  # blocked Jobs do not starve the other runs
        assert jobs.max_active == 2 and sum(jobs.calls.values()) == 2  # two Job slots, two waiting
        gate.set()
        assert sched.wait(bid, timeout_s=10).state == "finished"
        protocols = {p.run_key: p.protocol for p in grid_planner(mixed_spec(), bid)}
        assert {protocols[k] for k in jobs.calls} == {"finetune"} and len(jobs.calls) == 4
        assert {protocols[k] for k in local.calls} == {"p0"} and jobs.max_active == 2
    finally:
        sched.close()


def test_without_a_job_executor_every_protocol_runs_on_the_normal_executors(store):
    local = ScriptedExecutor()
    sched = start(store, [local])
    try:
        bid = sched.submit(mixed_spec(backbones=("b0",)))
        assert sched.wait(bid, timeout_s=10).state == "finished" and sum(local.calls.values()) == 2
    finally:
        sched.close()


def test_cancel_stops_executing_job_runs_and_they_end_cancelled_not_finished(store):
    jobs = CancellableExecutor(slots=2)
    sched = start(store, [ScriptedExecutor()], job_executor=jobs)
    try:
        bid = sched.submit(mixed_spec(backbones=("b0", "b1")))
        deadline = time.monotonic() + 10
        while sum(jobs.calls.values()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        sched.cancel(bid, reason="user asked")
        deadline = time.monotonic() + 10
        while sched.get(bid).counts["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        status = sched.get(bid)
        assert sorted(jobs.cancelled) == sorted(jobs.calls)
        assert status.state == "cancelled" and status.counts["running"] == 0
        finetune = [r for r in sched.results(bid) if r.protocol == "finetune"]
        assert [r.status for r in finetune] == ["cancelled", "cancelled"]
        assert not any(store.exists(result_key(r.run_key)) for r in finetune)
    finally:
        sched.close()


def test_a_run_cancelled_while_waiting_for_an_executor_slot_never_executes(store):
    gate = threading.Event()
    ex = ScriptedExecutor(gate=gate)  # one slot, two workers: the second run waits for the slot
    sched = start(store, [ex], concurrency=2)
    try:
        bid = sched.submit(make_spec(backbones=("b0", "b1"), seeds=(0,)))
        deadline = time.monotonic() + 30
        while sched.get(bid).counts["running"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        sched.cancel(bid)
        gate.set()
        deadline = time.monotonic() + 30  # generous: a loaded machine; the loop ends when the run does
        while sched.get(bid).counts["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        status = sched.get(bid)
        assert sum(ex.calls.values()) == 1
        assert status.counts["finished"] == 1 and status.counts["cancelled"] == 1
    finally:
        sched.close()


def test_restarted_scheduler_registers_the_stored_battles_custom_backbones_again(store):
    """A user-defined backbone lives only in the battle spec: after a restart (a new process has an empty
    registry) the scheduler registers it again from the stored spec, so its runs can be published and
    sent with their definition."""
    from bobench.backbones import BACKBONES, get_spec
    from bobench.battle.plan import CUSTOM_BACKBONES

    custom = {
        "name": "restart-custom-toy",
        "source": "timm",
        "model_id": "resnet18",
        "weights": "random",
        "input_size": 64,
    }
    spec = parse_spec({"name": "custom", "backbones": [custom], "datasets": ["d0"], "protocols": ["p0"]})
    gate = threading.Event()  # the first scheduler never finishes the run
    first = start(store, [ScriptedExecutor(gate=gate)])
    try:
        first.submit(spec, battle_id="custom-restart")
    finally:
        first.close(timeout_s=0.1)
        gate.set()
    assert "restart-custom-toy" not in BACKBONES  # the grid planner registers nothing: a fresh process
    second = start(store, [ScriptedExecutor()])
    try:
        assert get_spec("restart-custom-toy").model_id == "resnet18"
        assert second.wait("custom-restart", timeout_s=10).state == "finished"
    finally:
        second.close()
        BACKBONES._items.pop("restart-custom-toy", None)
        CUSTOM_BACKBONES.pop("restart-custom-toy", None)


def test_close_releases_the_preparer(store):
    class ClosablePreparer:
        closed = False

        def __call__(self, plan, battle_id):
            pass

        def close(self):
            self.closed = True

    preparer = ClosablePreparer()
    start(store, [ScriptedExecutor()], preparer=preparer).close()
    assert preparer.closed
