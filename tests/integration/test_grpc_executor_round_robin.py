"""GrpcExecutor through ONE load-balanced gRPC target over two real evaluator processes.

In the cluster the target is `dns:///evaluator-headless.<ns>.svc.cluster.local:50051`, which DNS
resolves to every ready evaluator pod on the same port. On one loopback machine DNS cannot return two
ports, so the two-evaluator case uses gRPC's own `ipv4:` resolver (same round_robin policy, same
single channel), and the `dns:///` resolver is exercised with `localhost` and one evaluator."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bobench.battle.executors.grpc import GrpcExecutor
from bobench.battle.plan import plan_battle
from bobench.battle.spec import parse_spec
from bobench.stack.procs import stop_pid
from services import start_evaluator

pytestmark = pytest.mark.integration

ENV = {
    "OMP_NUM_THREADS": "1",
    "BOBENCH_THREADS": "1",
    "BOBENCH_EMBEDDER": "torch",
    "BOBENCH_BATCH_SIZE": "16",
}


def plans(seeds):
    """One knn run per split seed (knn is deterministic: once per split, not per seed)."""
    datasets = [{"name": f"toy-s{s}", "ref": {"name": "toy", "split_seed": s}} for s in seeds]
    spec = parse_spec(
        {"name": "rr", "backbones": ["toy"], "datasets": datasets, "protocols": [{"name": "knn", "config": {"ks": [5]}}]}
    )  # fmt: skip
    return plan_battle(spec, battle_id="rr")


def finished_runs(results_dir) -> Counter:
    lines = (
        (results_dir / "results.jsonl").read_text().splitlines()
        if (results_dir / "results.jsonl").exists()
        else []
    )
    return Counter(json.loads(line)["run_key"] for line in lines if json.loads(line)["status"] == "finished")


@pytest.fixture
def two_evaluators(tmp_path):
    services = [start_evaluator(tmp_path, ENV, cache=f"c{i}", results=f"ev{i}") for i in range(2)]
    yield services
    for svc in services:
        stop_pid(svc.pid)


def test_one_round_robin_target_spreads_runs_over_both_evaluators(tmp_path, two_evaluators):
    ports = [svc.address.rpartition(":")[2] for svc in two_evaluators]
    target = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
    ex = GrpcExecutor(target, runs_per_address=2, timeout_s=120)
    try:
        assert ex.slots == 2  # the bound is for the whole target, not per resolved address
        records = [ex.execute(p) for p in plans(range(4))]
    finally:
        ex.close()
    assert all(r.finished for r in records), [r.error for r in records]
    per_evaluator = [finished_runs(tmp_path / f"ev{i}") for i in range(2)]
    assert all(sum(c.values()) >= 1 for c in per_evaluator), per_evaluator  # both got runs
    assert sum(per_evaluator, Counter()) == Counter(r.run_key for r in records)  # each ran exactly once


def test_a_dns_target_reaches_an_evaluator(tmp_path):
    svc = start_evaluator(tmp_path, ENV)
    port = svc.address.rpartition(":")[2]
    ex = GrpcExecutor(f"dns:///localhost:{port}", timeout_s=120)
    try:
        (plan,) = plans([0])
        record = ex.execute(plan)
    finally:
        ex.close()
        stop_pid(svc.pid)
    assert record.finished and record.run_key == plan.run_key
    assert finished_runs(tmp_path / "ev") == Counter({plan.run_key: 1})


def test_connections_age_out_so_clients_re_resolve_while_runs_in_flight_finish(tmp_path):
    """With max_connection_age_s the evaluator sends GOAWAY: the client's channel leaves READY (and
    re-resolves its dns:/// name on reconnecting), but a run streaming past that age still finishes."""
    import threading

    import grpc
    from doubles import register_sleepy_protocol

    from bobench.battle.single_run import plan_single_run
    from bobench.config import Settings
    from bobench.rpc.background import BackgroundServer
    from bobench.rpc.evaluator_service import EvaluatorServicer
    from bobench.rpc.server import ServiceBinding
    from bobench.v1 import evaluator_pb2_grpc

    protocol = register_sleepy_protocol()
    servicer = EvaluatorServicer(Settings(cache_dir=str(tmp_path / "cache"), threads=1), tmp_path / "results")
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    with BackgroundServer([binding], max_connection_age_s=1.0) as running:
        ex = GrpcExecutor(f"dns:///localhost:{running.port}", timeout_s=60)
        states: list[grpc.ChannelConnectivity] = []
        left_ready = threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            states.append(state)
            if grpc.ChannelConnectivity.READY in states[:-1] and state != grpc.ChannelConnectivity.READY:
                left_ready.set()

        ex._channels[0].subscribe(watch)
        try:
            long_run = plan_single_run("toy", "toy", protocol, {"steps": 40, "step_s": 0.1}, seed=1)
            record = ex.execute(long_run)  # streams for ~4 s, past the 1 s connection age
            assert record.finished, record.error
            assert left_ready.wait(30), states  # GOAWAY closed the aged connection
            again = ex.execute(plan_single_run("toy", "toy", protocol, {"steps": 2, "step_s": 0.01}, seed=2))
            assert again.finished, again.error
        finally:
            ex._channels[0].unsubscribe(watch)
            ex.close()
    servicer.close()
