"""The Scheduler service as a real process with a real Evaluator process: end to end over gRPC,
and crash recovery (SIGKILL mid-battle, restart, every run finished exactly once)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from bobench.battle.spec import parse_spec
from bobench.stack.procs import start_bobench_service, stop_pid

pytestmark = pytest.mark.integration

THREADS_ENV = {
    "OMP_NUM_THREADS": "1",
    "BOBENCH_THREADS": "1",
    "BOBENCH_EMBEDDER": "torch",
    "BOBENCH_BATCH_SIZE": "16",
}


def spec(seeds=(0, 1)):
    """One knn run per split seed: knn is deterministic, so it runs once per split, not per seed."""
    return parse_spec(
        {
            "name": "sched-e2e",
            "backbones": ["toy"],
            "datasets": [{"name": f"toy-s{s}", "ref": {"name": "toy", "split_seed": s}} for s in seeds],
            "protocols": [{"name": "knn", "config": {"ks": [5, 10]}}],
        }
    )


@pytest.fixture
def evaluator(tmp_path):
    svc = start_bobench_service(
        "evaluator",
        "bobench.rpc.evaluator_service",
        [
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--results-dir",
            str(tmp_path / "ev-results"),
            "--cache-dir",
            str(tmp_path / "ev-cache"),
        ],
        tmp_path / "logs",
        env=THREADS_ENV,
    )
    yield svc
    stop_pid(svc.pid)


def start_scheduler(tmp_path, evaluator, name="scheduler"):
    return start_bobench_service(
        name,
        "bobench.rpc.scheduler_service",
        [
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--store",
            str(tmp_path / "store"),
            "--evaluators",
            evaluator.address,
            "--concurrency",
            "1",
            "--backoff-s",
            "0.2",
        ],
        tmp_path / "logs",
        env=THREADS_ENV,
    )


def wait_done(client, battle_id, timeout_s=120):
    for _ in client.watch(battle_id, timeout_s=timeout_s):
        pass
    return client.get(battle_id)


def test_battle_over_grpc_matches_the_embedded_run(tmp_path, evaluator, settings):
    from bobench.battle.runner import run_battle
    from bobench.client import SchedulerClient
    from bobench.config import Settings

    embedded = run_battle(
        spec(), tmp_path / "embedded", Settings(**{**settings.__dict__, "embedder": "torch"}), progress=False
    )
    sched = start_scheduler(tmp_path, evaluator)
    try:
        with SchedulerClient(sched.address) as client:
            client.wait_ready()
            sub = client.submit(spec())
            assert sub.total_runs == 2 and sub.reused_runs == 0
            battle = wait_done(client, sub.battle_id)
            assert battle.state == 3 and battle.counts.finished == 2  # BATTLE_STATE_FINISHED
            remote = {r.run_key: r for r in client.results(sub.battle_id)}
        local = {r.run_key: r for r in embedded.records}
        assert remote.keys() == local.keys()
        for key, rec in local.items():
            assert rec.finished and remote[key].finished
            assert remote[key].metrics == pytest.approx(rec.metrics)
    finally:
        stop_pid(sched.pid)


def finished_lines(results_dir: Path) -> Counter:
    path = results_dir / "results.jsonl"
    lines = (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )
    return Counter(d["run_key"] for d in lines if d["status"] == "finished")


def test_scheduler_killed_mid_battle_resumes_and_runs_each_run_exactly_once(tmp_path, evaluator):
    from bobench.client import SchedulerClient

    seeds = tuple(range(8))
    first = start_scheduler(tmp_path, evaluator, "scheduler-1")
    with SchedulerClient(first.address) as client:
        client.wait_ready()
        battle_id = client.submit(spec(seeds), battle_id="crash-test").battle_id
    results = tmp_path / "store" / "results"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(results.glob("*.json"))) < 2:
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)  # no chance to clean up
    os.waitpid(first.pid, 0)
    done_before = len(list(results.glob("*.json")))
    assert 2 <= done_before < len(seeds), "the kill must land mid-battle"

    second = start_scheduler(tmp_path, evaluator, "scheduler-2")
    try:
        with SchedulerClient(second.address) as client:
            battle = wait_done(client, battle_id)
            assert battle.counts.finished == len(seeds) and battle.counts.failed == 0
            keys = {r.run_key for r in client.results(battle_id)}
        per_key = finished_lines(tmp_path / "ev-results")
        assert set(per_key) == keys and set(per_key.values()) == {1}, per_key  # each finished exactly once
        assert len(list(results.glob("*.json"))) == len(seeds)
    finally:
        stop_pid(second.pid)


def test_grpc_executor_maps_a_bad_run_to_a_failed_record_and_reuses_stored_results(evaluator):
    from bobench.battle.executors.grpc import GrpcExecutor
    from bobench.battle.plan import plan_battle

    (good,) = plan_battle(spec(seeds=(0,)), battle_id="direct")
    bad = good.__class__(**{**good.to_dict(), "run_key": "0" * 24})  # a key the evaluator does not plan
    ex = GrpcExecutor(evaluator.address, timeout_s=60)
    try:
        first = ex.execute(good)
        assert first.finished and first.battle == "direct" and ex.reused == 0
        assert ex.execute(good).metrics == first.metrics and ex.reused == 1  # answered from its results
        failed = ex.execute(bad)
        assert failed.status == "failed" and failed.error.startswith("FailedPrecondition: evaluator")
    finally:
        ex.close()
