"""Scheduler faults with a real LocalStore that can be switched off: workers survive a store outage,
health follows it, retries outlast a restart, one battle id per spec, signed results."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from doubles import gated_local_store
from test_scheduler import ScriptedExecutor, grid_planner, make_spec

from bobench.battle.result_signing import ResultSigner
from bobench.battle.scheduler import Scheduler
from bobench.battle.scheduler_state import result_key
from bobench.errors import AlreadyExists, Unavailable


class SwitchableStore(gated_local_store()):
    """A LocalStore whose every call raises Unavailable while `down` is set (a store outage)."""

    def __init__(self, root) -> None:
        super().__init__(root, fsync=False)
        self.down = threading.Event()
        self.refused = 0

    def _gate(self, write: bool = False) -> None:
        if self.down.is_set():
            self.refused += 1
            raise Unavailable("store is down")


@pytest.fixture
def store(tmp_path):
    return SwitchableStore(tmp_path / "store")


def start(store, executors, hang_after_s: float | None = None, **kw):
    """A started Scheduler with fast retries and store probes (and `hang_after_s` for its StateWriter)."""
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_backoff_s", 0.2)
    sched = Scheduler(store, executors, planner=grid_planner, **kw)
    sched.state.probe_interval_s = 0.05
    if hang_after_s is not None:
        sched.state.hang_after_s = hang_after_s
    return sched.start()


def wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_workers_survive_a_store_outage_and_every_run_finishes_once(store):
    gate = threading.Event()
    ex = ScriptedExecutor(gate=gate, slots=2)
    sched = start(store, [ex], concurrency=2)
    try:
        bid = sched.submit(make_spec(seeds=[0, 1]))  # 6 runs
        assert wait_for(lambda: ex.active == 2)
        assert sched.healthy()
        store.down.set()  # the outage starts while two runs execute and four wait
        gate.set()
        assert wait_for(lambda: not sched.healthy())
        assert wait_for(lambda: store.refused > 20)  # workers keep trying through the outage
        assert all(t.is_alive() for t in sched._workers)
        store.down.clear()
        status = sched.wait(bid, timeout_s=20)
        assert status.state == "finished" and status.counts["finished"] == 6
        assert wait_for(sched.healthy)
        assert set(ex.calls.values()) == {1} and len(ex.calls) == 6  # none lost, none twice
        assert len(store.list("results/")) == 6
        assert wait_for(lambda: store.get_json(f"battles/{bid}/battle.json")["state"] == "finished")
    finally:
        store.down.clear()
        sched.close()


def test_health_is_not_ready_while_an_idle_scheduler_cannot_reach_its_store(store):
    sched = start(store, [ScriptedExecutor()])
    try:
        assert wait_for(sched.healthy)
        store.down.set()
        assert wait_for(lambda: not sched.healthy())
        store.down.clear()
        assert wait_for(sched.healthy)
    finally:
        sched.close()


def test_retries_outlast_an_evaluator_restart_within_the_window(store):
    # 8 transient failures in a row (an evaluator restarting): the old cap of 3 retries failed the run
    ex = ScriptedExecutor({"b0": ["unavailable"] * 8 + ["ok"]})
    sched = start(store, [ex], backoff_s=0.01, max_backoff_s=0.05, retry_window_s=30)
    try:
        bid = sched.submit(make_spec(backbones=["b0"], seeds=[0]))
        assert sched.wait(bid, timeout_s=20).state == "finished"
        assert sum(ex.calls.values()) == 9
    finally:
        sched.close()


def test_retries_stop_when_the_window_has_passed(store):
    ex = ScriptedExecutor({"b0": ["unavailable"]})
    sched = start(store, [ex], backoff_s=0.01, max_backoff_s=0.05, retry_window_s=0.3)
    try:
        bid = sched.submit(make_spec(backbones=["b0"], seeds=[0]))
        status = sched.wait(bid, timeout_s=20)
        assert status.state == "failed"
        (record,) = sched.results(bid)
        assert "evaluator for b0 is down" in record.error
        assert sum(ex.calls.values()) > 2
    finally:
        sched.close()


class SlowPlanner:
    """The grid planner, slowed down so concurrent submissions overlap."""

    def __call__(self, spec, battle_id):
        time.sleep(0.05)
        return grid_planner(spec, battle_id)


def _submit_all(sched, specs, battle_id):
    outcomes: list = [None] * len(specs)
    barrier = threading.Barrier(len(specs))

    def submit(i):
        barrier.wait()
        try:
            outcomes[i] = sched.submit(specs[i], battle_id=battle_id)
        except AlreadyExists as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return outcomes


def test_concurrent_submissions_of_one_id_with_different_specs_one_wins(store):
    sched = Scheduler(store, [ScriptedExecutor()], planner=SlowPlanner(), backoff_s=0.01).start()
    try:
        specs = [make_spec(backbones=[f"b{i}"], seeds=[0], name=f"n{i}") for i in range(6)]
        outcomes = _submit_all(sched, specs, "shared-id")
        won = [o for o in outcomes if o == "shared-id"]
        assert len(won) == 1
        assert sum(isinstance(o, AlreadyExists) for o in outcomes) == 5
        winner = specs[outcomes.index("shared-id")]
        assert sched.get("shared-id").spec == winner.to_dict()
    finally:
        sched.close()


def test_concurrent_submissions_of_one_id_with_the_same_spec_are_idempotent(store):
    ex = ScriptedExecutor()
    sched = Scheduler(store, [ex], planner=SlowPlanner(), backoff_s=0.01).start()
    try:
        outcomes = _submit_all(sched, [make_spec(seeds=[0])] * 5, "same")
        assert outcomes == ["same"] * 5
        assert sched.wait("same", timeout_s=10).state == "finished"
        assert set(ex.calls.values()) == {1} and len(ex.calls) == 3
    finally:
        sched.close()


SIGNER = ResultSigner("unit-test-signing-key")


def test_a_forged_unsigned_result_is_not_reused_and_the_run_executes(store):
    plan = grid_planner(make_spec(backbones=["b0"], seeds=[0]), "forged")[0]
    forged = plan.new_record()
    forged.status, forged.metrics = "finished", {"top1": 0.999}
    store.put_json(result_key(plan.run_key), json.loads(forged.to_json()))
    ex = ScriptedExecutor()
    sched = start(store, [ex], signer=SIGNER)
    try:
        bid = sched.submit(make_spec(backbones=["b0"], seeds=[0]), battle_id="forged")
        assert sched.get(bid).reused == 0
        assert sched.wait(bid, timeout_s=10).state == "finished"
        assert ex.calls[plan.run_key] == 1
        (record,) = sched.results(bid)
        assert record.metrics["top1"] == 0.5
        assert SIGNER.verify(store.get_json(result_key(plan.run_key)))
    finally:
        sched.close()


def test_a_result_tampered_with_after_it_finished_is_rerun_on_recovery(store):
    ex = ScriptedExecutor()
    sched = start(store, [ex], signer=SIGNER)
    bid = sched.submit(make_spec(backbones=["b0", "b1"], seeds=[0]), battle_id="tamper")
    assert sched.wait(bid, timeout_s=10).state == "finished"
    sched.close()
    victim = sorted(ex.calls)[0]
    doc = store.get_json(result_key(victim))
    doc["metrics"] = {"top1": 0.999}  # the old signature no longer matches
    store.put_json(result_key(victim), doc)
    again = start(store, [ex], signer=SIGNER)
    try:
        assert again.wait(bid, timeout_s=10).state == "finished"
        assert ex.calls[victim] == 2 and Counter(ex.calls.values()) == Counter({1: 1, 2: 1})
        assert all(r.metrics["top1"] == 0.5 for r in again.results(bid))
    finally:
        again.close()


def test_signatures_need_the_same_key():
    doc = SIGNER.sign({"run_key": "k", "status": "finished", "metrics": {"top1": 0.5}})
    assert SIGNER.verify(doc)
    assert not ResultSigner("another-key").verify(doc)
    assert not SIGNER.verify({**doc, "metrics": {"top1": 0.6}})
    assert not SIGNER.verify({k: v for k, v in doc.items() if k != "signature"})
