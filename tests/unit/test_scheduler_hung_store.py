"""A store that hangs instead of refusing (a SIGSTOPped SeaweedFS: connections accepted, no answer):
health turns NOT ready, state writes do not block their caller, submit and results answer Unavailable
at once, and once the store answers again every run finishes exactly once. The store is a real
LocalStore whose calls wait while `hang` is set (found by tests/integration/test_chaos_store.py)."""

from __future__ import annotations

import threading

import pytest
from doubles import gated_local_store
from test_scheduler import ScriptedExecutor, grid_planner, make_spec
from test_scheduler_faults import start, wait_for

from bobench.battle.scheduler import Scheduler
from bobench.battle.state_writer import StateWriter
from bobench.errors import Unavailable


class HangingStore(gated_local_store()):
    """A LocalStore whose every call waits (up to 30 s, like a client read timeout) while `hang` is set."""

    def __init__(self, root) -> None:
        super().__init__(root, fsync=False)
        self.hang = threading.Event()
        self.answered = threading.Event()  # cleared while hanging, set when it answers again
        self.answered.set()
        self.waiting_calls = 0
        self.only_writes = False  # hang puts only (reads answer), like a store whose writes stall

    def _gate(self, write: bool = False) -> None:
        if self.hang.is_set() and (write or not self.only_writes):
            self.waiting_calls += 1
            self.answered.wait(30)

    def stop(self) -> None:
        self.answered.clear()
        self.hang.set()

    def resume(self) -> None:
        self.hang.clear()
        self.answered.set()


@pytest.fixture
def store(tmp_path):
    s = HangingStore(tmp_path / "store")
    yield s
    s.resume()  # never leave a thread waiting on it


def test_a_hung_store_turns_the_writer_unhealthy_and_put_keeps_the_document(store):
    writer = StateWriter(store, probe_interval_s=0.05, hang_after_s=0.2).start()
    try:
        assert wait_for(lambda: writer.healthy)
        store.stop()
        assert wait_for(lambda: writer.hung) and not writer.healthy  # the probe never came back
        returned = threading.Event()
        threading.Thread(
            target=lambda: (writer.put("battles/b/battle.json", {"n": 1}), returned.set())
        ).start()
        assert returned.wait(10), "put blocked on a hung store"
        assert writer.waiting() == 1 and not (store.root / "battles/b/battle.json").exists()
        store.resume()
        assert wait_for(lambda: writer.healthy and writer.waiting() == 0)
        assert store.get_json("battles/b/battle.json") == {"n": 1}
    finally:
        store.resume()
        writer.close()


def test_submit_and_results_answer_unavailable_while_the_store_hangs_and_runs_finish_once(store):
    gate = threading.Event()
    ex = ScriptedExecutor(gate=gate)
    sched = start(store, [ex], hang_after_s=0.2)
    try:
        bid = sched.submit(make_spec(seeds=[0]))  # 3 runs, the first held at the gate
        assert wait_for(lambda: ex.active == 1) and wait_for(sched.healthy)
        store.stop()
        assert wait_for(lambda: not sched.healthy())
        with pytest.raises(Unavailable, match="has not answered"):
            sched.submit(make_spec(seeds=[1]), battle_id="during-the-hang")
        with pytest.raises(Unavailable, match=f"results of battle '{bid}'"):
            sched.results(bid)
        assert sched.get(bid).counts["running"] == 1  # in memory: answers
        gate.set()  # the run finishes while the store hangs: its result waits for the store
        store.resume()
        assert sched.wait(bid, timeout_s=20).state == "finished"
        assert wait_for(sched.healthy)
        assert sorted(ex.calls.values()) == [1, 1, 1]
        assert [r.status for r in sched.results(bid)] == ["finished"] * 3
        assert store.waiting_calls > 0  # the store really hung calls
    finally:
        gate.set()
        store.resume()
        sched.close()


def test_a_result_write_that_hangs_turns_health_not_ready_while_reads_answer(store):
    gate = threading.Event()
    ex = ScriptedExecutor(gate=gate)
    sched = start(store, [ex], hang_after_s=0.2)
    try:
        bid = sched.submit(make_spec(backbones=["b0"], seeds=[0]))
        assert wait_for(lambda: ex.active == 1) and wait_for(sched.healthy)
        store.only_writes = True
        store.stop()
        gate.set()  # the run finishes; writing its result hangs (the probe, a read, still answers)
        assert wait_for(lambda: not sched.healthy())
        store.resume()
        assert sched.wait(bid, timeout_s=20).state == "finished"
        assert wait_for(sched.healthy) and ex.calls.total() == 1
    finally:
        gate.set()
        store.resume()
        sched.close()


def test_a_hang_that_starts_as_a_run_fails_does_not_block_the_scheduler(store):
    # the failed run's state is written while the scheduler holds its lock: a hung write must not
    # keep GetBattle (and every other caller of the lock) waiting for the store
    gate = threading.Event()
    ex = ScriptedExecutor({"b0": ["fail"]}, gate=gate)
    sched = Scheduler(store, [ex], planner=grid_planner, backoff_s=0.01, max_backoff_s=0.2)
    sched.state.hang_after_s = 30.0  # the hang is not noticed during this test
    sched.start()
    try:
        bid = sched.submit(make_spec(backbones=["b0"], seeds=[0]))
        assert wait_for(lambda: ex.active == 1)
        store.stop()
        gate.set()  # the run fails now; its state write hangs
        assert wait_for(lambda: store.waiting_calls > 0)
        answered = []
        caller = threading.Thread(target=lambda: answered.append(sched.get(bid)), daemon=True)
        caller.start()
        caller.join(10)
        assert answered, "GetBattle waited for the hung store"
        assert answered[0].counts["failed"] == 1
        store.resume()
        assert sched.wait(bid, timeout_s=20).state == "failed"
        assert wait_for(lambda: sched.state.waiting() == 0)
        assert store.get_json(f"battles/{bid}/battle.json")["state"] == "failed"
    finally:
        gate.set()
        store.resume()
        sched.close()
