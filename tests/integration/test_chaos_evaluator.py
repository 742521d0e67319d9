"""Chaos with real processes: an evaluator SIGKILLed mid-run, restarted after ~7 s, and SIGTERMed
mid-run. After each fault every run of the battle finishes exactly once (finished records per run key
in the evaluator's log and result objects in the store), and a SIGTERMed evaluator exits within its
grace period with its run recorded cancelled. Each test prints how long recovery took. Auth is on
(chaos_helpers: tokens file, the scheduler's service token, signed results), as in the local stack."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from chaos_helpers import (
    assert_auth_on,
    efficiency_spec,
    evaluator_lines,
    finished_per_key,
    start_chaos_scheduler,
    start_evaluator_on,
    wait_until,
)

from bobench.battle.plan import plan_battle
from bobench.client import EvaluatorClient, SchedulerClient
from bobench.stack.procs import probe_free_port, stop_pid

pytestmark = pytest.mark.integration

RUNS = 6


def _results(tmp_path):
    return list((tmp_path / "store" / "results").glob("*.json"))


def _finish_and_check(tmp_path, client, battle_id, t_fault):
    """Wait for the battle, then check exactly-once; returns seconds from the fault to the end."""
    for _ in client.watch(battle_id, timeout_s=180):
        pass
    took_s = time.monotonic() - t_fault
    battle = client.get(battle_id)
    assert battle.counts.finished == RUNS and battle.counts.failed == 0, battle.counts
    keys = {r.run_key for r in client.results(battle_id)}
    per_key = finished_per_key(tmp_path)
    assert set(per_key) == keys and set(per_key.values()) == {1}, per_key
    assert len(_results(tmp_path)) == RUNS
    return took_s


@pytest.mark.timeout(300)
def test_evaluator_sigkilled_mid_run_is_restarted_and_every_run_finishes_once(tmp_path):
    port = probe_free_port()
    evaluator = start_evaluator_on(tmp_path, port)
    sched = start_chaos_scheduler(tmp_path, f"127.0.0.1:{port}", str(tmp_path / "store"))
    try:
        assert_auth_on(sched.address, evaluator.address)
        with SchedulerClient(sched.address, timeout_s=30) as client:
            battle_id = client.submit(efficiency_spec(range(RUNS)), battle_id="chaos-kill").battle_id
            wait_until(lambda: len(_results(tmp_path)) >= 2, 120, "two runs finished")
            time.sleep(0.5)  # the third run is in flight
            os.kill(evaluator.pid, signal.SIGKILL)
            t_fault = time.monotonic()
            done_at_kill = len(_results(tmp_path))
            assert done_at_kill < RUNS, "the kill must land mid-battle"
            time.sleep(1.0)
            evaluator = start_evaluator_on(tmp_path, port, "evaluator-2")
            restarted_s = time.monotonic() - t_fault
            first_after_s = wait_until(
                lambda: len(_results(tmp_path)) > done_at_kill, 120, "a run finished after the restart"
            )
            total_s = _finish_and_check(tmp_path, client, battle_id, t_fault)
        print(
            f"SIGKILL evaluator: restarted after {restarted_s:.1f} s; next run finished "
            f"{restarted_s + first_after_s:.1f} s after the kill; battle done {total_s:.1f} s after it"
        )
    finally:
        stop_pid(sched.pid)
        stop_pid(evaluator.pid)


@pytest.mark.timeout(300)
def test_a_seven_second_evaluator_restart_loses_no_run(tmp_path):
    port = probe_free_port()
    evaluator = start_evaluator_on(tmp_path, port)
    sched = start_chaos_scheduler(tmp_path, f"127.0.0.1:{port}", str(tmp_path / "store"))
    try:
        with SchedulerClient(sched.address, timeout_s=30) as client:
            battle_id = client.submit(efficiency_spec(range(RUNS)), battle_id="chaos-restart").battle_id
            wait_until(lambda: len(_results(tmp_path)) >= 1, 120, "a run finished")
            t_fault = time.monotonic()
            stop_pid(evaluator.pid)  # SIGTERM: its run in flight is recorded cancelled
            time.sleep(max(0.0, 7.0 - (time.monotonic() - t_fault)))
            down_s = time.monotonic() - t_fault
            evaluator = start_evaluator_on(tmp_path, port, "evaluator-2")
            total_s = _finish_and_check(tmp_path, client, battle_id, t_fault)
            assert client.get(battle_id).counts.failed == 0
        print(f"evaluator down {down_s:.1f} s (plus its start): battle done {total_s:.1f} s after the stop")
    finally:
        stop_pid(sched.pid)
        stop_pid(evaluator.pid)


@pytest.mark.timeout(180)
def test_sigterm_mid_run_exits_within_the_grace_period_and_records_the_run_cancelled(tmp_path):
    port = probe_free_port()
    evaluator = start_evaluator_on(tmp_path, port)  # --grace-s 1 --stop-timeout-s 2
    spec = efficiency_spec([0], min_time_s=600.0)  # a 10-minute timing loop
    (plan,) = plan_battle(spec)
    progressed = threading.Event()
    outcome: dict = {}

    def run() -> None:
        with EvaluatorClient(evaluator.address, timeout_s=120) as client:
            try:
                outcome["result"] = client.evaluate(
                    "toy",
                    plan.dataset_ref,
                    "efficiency",
                    plan.config,
                    progress=lambda *_: progressed.set(),
                    dataset_name=plan.dataset,
                )
            except Exception as exc:  # UNAVAILABLE / CANCELLED as the server stops
                outcome["error"] = exc

    caller = threading.Thread(target=run)
    caller.start()
    try:
        assert progressed.wait(90), "the run never reported progress"
        time.sleep(0.5)  # inside the timing loop
        os.kill(evaluator.pid, signal.SIGTERM)
        t0 = time.monotonic()
        wait_until(lambda: not _alive(evaluator.pid), 30, "the evaluator exited")
        exited_s = time.monotonic() - t0
        caller.join(30)
        lines = evaluator_lines(tmp_path)
        assert [d["status"] for d in lines] == ["cancelled"], lines
        assert lines[0]["error"].startswith("Cancelled")
        assert "result" not in outcome or not outcome["result"].record.finished
        print(f"SIGTERM mid-run: exited {exited_s:.2f} s after the signal (grace 1 s + stop timeout 2 s)")
    finally:
        stop_pid(evaluator.pid)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
