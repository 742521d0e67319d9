"""Runs stop at their next step: the timing loops call the run's progress/cancel check every call,
the executor enforces cancel and the per-run time limit, and a stopped attempt never hides a finished
result in the evaluator's result log."""

from __future__ import annotations

import threading
import time

import pytest
from doubles import register_sleepy_protocol

from bobench.battle.executors.local import LocalExecutor
from bobench.battle.single_run import plan_single_run
from bobench.config import Settings
from bobench.errors import Cancelled
from bobench.protocols.latency import Budget, measure_alone, measure_interleaved
from bobench.protocols.serving_latency import _next_window
from bobench.results import RunRecord
from bobench.rpc.result_log import ResultLog


class StopAfter:
    """An `on_step` check that raises Cancelled on its `n`-th call."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls >= self.n:
            raise Cancelled("stop")


def test_interleaved_timing_checks_after_every_call_and_stops_when_the_check_raises():
    calls = {"a": 0, "b": 0}
    steps = {name: (lambda name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls}
    check = StopAfter(25)
    budget = Budget(warmup_steps=3, timed_steps=10**6, max_timed_steps=10**6, block_steps=10)
    with pytest.raises(Cancelled):
        measure_interleaved(steps, budget, on_step=check)
    assert check.calls == 25 == sum(calls.values())  # one check per call, warm-up included


def test_timing_alone_without_a_check_measures_the_budget():
    n = []
    times = measure_alone(lambda: n.append(1), Budget(warmup_steps=2, timed_steps=5, max_timed_steps=5))
    assert len(times) == 5 and len(n) == 7


def test_a_serving_window_polls_the_check_while_it_waits():
    check = StopAfter(3)
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        _next_window([], t0, 5.0, 1, [], 1, check)  # a 5 s window, stopped at its third poll (1.5 s)
    assert check.calls == 3


@pytest.mark.timeout(120)
def test_an_efficiency_run_past_the_time_limit_fails_with_deadline_exceeded(tmp_path):
    config = {"batch_sizes": [1], "timed_steps": 10**6, "max_timed_steps": 10**6, "flops": False}
    plan = plan_single_run("toy", "toy", "efficiency", config)
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1, embedder="torch", max_run_s=1)
    record = LocalExecutor(settings).execute(plan)
    assert record.status == "failed"
    assert record.error.startswith("DeadlineExceeded") and "time limit of 1 s" in record.error


@pytest.mark.timeout(60)
def test_cancel_stops_a_local_run_at_its_next_step(tmp_path):
    name = register_sleepy_protocol()
    plan = plan_single_run("toy", "toy", name, {"steps": 2000, "step_s": 0.01})
    executor = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache"), threads=1))
    stepped = threading.Event()
    out: list[RunRecord] = []
    worker = threading.Thread(target=lambda: out.append(executor.execute(plan, lambda *_: stepped.set())))
    worker.start()
    assert stepped.wait(30)
    executor.cancel(plan.run_key)
    worker.join(30)
    (record,) = out
    assert record.status == "cancelled" and record.error.startswith("Cancelled")
    assert record.duration_s < 15  # the whole run takes 20 s
    again = executor.execute(plan_single_run("toy", "toy", name, {"steps": 3, "step_s": 0.0}))
    assert again.finished  # the cancel was for that run only


def _record(status: str, top1: float | None = None) -> RunRecord:
    record = RunRecord("k1", "toy", "toy", "knn", "1", "classification", {}, 0, status=status)
    if top1 is not None:
        record.metrics = {"top1": top1}
    return record


def test_a_cancelled_rerun_never_hides_the_finished_result(tmp_path):
    log = ResultLog(tmp_path)
    log.put(_record("finished", 0.7))
    log.put(_record("cancelled"))
    log.put(_record("failed"))
    assert log.get("k1").status == "finished" and log.get("k1").metrics == {"top1": 0.7}
    reopened = ResultLog(tmp_path)  # the same answer from the file after a restart
    assert reopened.get("k1").metrics == {"top1": 0.7} and reopened.attempts == 3
    reopened.put(_record("finished", 0.8))  # a finished re-run is the newer fact
    assert ResultLog(tmp_path).get("k1").metrics == {"top1": 0.8}
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4  # every attempt kept beside the finished one


def test_a_key_that_never_finished_answers_its_latest_attempt(tmp_path):
    log = ResultLog(tmp_path)
    log.put(_record("failed"))
    log.put(_record("cancelled"))
    assert log.get("k1").status == "cancelled" and log.finished("k1") is None
    assert len(log) == 1
