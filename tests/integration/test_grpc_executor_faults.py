"""The scheduler's gRPC executor against a real evaluator on loopback: a dead evaluator address is
skipped once its circuit opens, and cancelling a battle stops its run inside the evaluator."""

from __future__ import annotations

import time

import pytest
from doubles import register_sleepy_protocol

from bobench.battle.executors.grpc import GrpcExecutor
from bobench.battle.scheduler import Scheduler
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.rpc.background import BackgroundServer
from bobench.rpc.evaluator_service import EvaluatorServicer
from bobench.rpc.server import ServiceBinding
from bobench.stack.procs import probe_free_port
from bobench.store import LocalStore
from bobench.v1 import evaluator_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture
def evaluator(tmp_path):
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1)
    servicer = EvaluatorServicer(settings, tmp_path / "ev-results", max_concurrent_runs=2)
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    with BackgroundServer([binding]) as running:
        yield running, servicer
    servicer.close()


def sleepy_spec(splits, steps, step_s, name="faults"):
    return parse_spec(
        {
            "name": name,
            "backbones": ["toy"],
            "datasets": [{"name": f"toy-s{s}", "ref": {"name": "toy", "split_seed": s}} for s in splits],
            "protocols": [{"name": register_sleepy_protocol(), "config": {"steps": steps, "step_s": step_s}}],
        }
    )


def test_a_dead_evaluator_is_skipped_once_its_circuit_opens(tmp_path, evaluator):
    running, _ = evaluator
    dead = f"127.0.0.1:{probe_free_port()}"  # nothing listens there
    executor = GrpcExecutor([dead, running.address], breaker_failures=2, breaker_cooldown_s=600, timeout_s=30)
    sched = Scheduler(
        LocalStore(tmp_path / "store", fsync=False), [executor], concurrency=1, backoff_s=0.01
    ).start()
    try:
        bid = sched.submit(sleepy_spec(range(8), steps=2, step_s=0.0))
        status = sched.wait(bid, timeout_s=120)
        assert status.state == "finished" and status.counts["finished"] == 8
        assert sched.retries_total == 2  # the dead address got 2 calls, then none for the cool-down
    finally:
        sched.close()


def test_cancelling_a_battle_stops_its_run_inside_the_evaluator(tmp_path, evaluator):
    running, servicer = evaluator
    executor = GrpcExecutor(running.address, timeout_s=60)
    sched = Scheduler(LocalStore(tmp_path / "store", fsync=False), [executor], backoff_s=0.01).start()
    try:
        bid = sched.submit(sleepy_spec([0], steps=1500, step_s=0.02))  # 30 s unless stopped
        deadline = time.monotonic() + 30
        while not servicer._flights:  # the run is executing remotely
            assert time.monotonic() < deadline, "the run never reached the evaluator"
            time.sleep(0.05)
        (key,) = list(servicer._flights)
        time.sleep(0.3)
        t0 = time.monotonic()
        sched.cancel(bid, "test")
        deadline = time.monotonic() + 30
        while (status := sched.get(bid)).counts["running"] and time.monotonic() < deadline:
            time.sleep(0.02)  # the battle is cancelled at once; its run ends when the evaluator stops it
        stopped_after_s = time.monotonic() - t0
        assert status.state == "cancelled" and status.counts["cancelled"] == 1
        (record,) = sched.results(bid)
        assert record.status == "cancelled"
        deadline = time.monotonic() + 20
        while servicer.results.finished(key) is None and time.monotonic() < deadline:
            try:
                if servicer.results.get(key).status == "cancelled":
                    break
            except KeyError:
                pass
            time.sleep(0.05)
        assert servicer.results.get(key).status == "cancelled"  # the evaluator stopped it
        assert servicer.results.finished(key) is None
        print(f"cancel reached the evaluator's run: battle cancelled {stopped_after_s:.2f} s after the call")
    finally:
        sched.close()
