"""Open WatchBattle streams never block the scheduler's control RPCs (a real gRPC server on loopback):
with more watchers than the default thread pool has threads, SubmitBattle, CancelBattle and
ListResults still answer."""

from __future__ import annotations

import hashlib
import os
import threading

import grpc
import pytest

from bobench.battle.executors.base import Executor
from bobench.battle.plan import RunPlan
from bobench.battle.scheduler import Scheduler
from bobench.config import Settings
from bobench.rpc.background import BackgroundServer
from bobench.rpc.scheduler_service import SchedulerServicer
from bobench.rpc.server import ServiceBinding
from bobench.store import LocalStore
from bobench.v1 import scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.integration

# asyncio's default executor has min(32, cpus + 4) threads; open more watchers than that (>= 10)
WATCHERS = max(10, min(32, (os.cpu_count() or 1) + 4) + 2)


class GatedExecutor(Executor):
    """Finishes each run once `gate` is set (keeps battles running while the test watches them)."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def execute(self, plan, progress=None):
        self.gate.wait(60)
        record = plan.new_record()
        record.status, record.metrics = "finished", {"top1": 0.5}
        return record


def planner(spec, battle_id):
    return [
        RunPlan(
            run_key=hashlib.sha256(f"{battle_id}|{d.name}".encode()).hexdigest()[:24],
            backbone="toy",
            dataset=d.name,
            dataset_ref=d.ref,
            protocol="knn",
            protocol_version="1",
            task="classification",
            config={},
            seed=0,
            primary_metric="top1",
            battle=battle_id,
        )
        for d in spec.datasets
    ]


def spec_yaml(name: str) -> str:
    return (
        f"name: {name}\nbackbones: [toy]\nprotocols: [knn]\n"
        "datasets: [{name: a, ref: toy}, {name: b, ref: toy}]\n"
    )


@pytest.fixture
def scheduler_server(tmp_path):
    gate = threading.Event()
    sched = Scheduler(
        LocalStore(tmp_path / "store", fsync=False), [GatedExecutor(gate)], planner=planner, concurrency=1
    ).start()
    binding = ServiceBinding.of(
        scheduler_pb2_grpc.add_SchedulerServicer_to_server, SchedulerServicer(sched, settings=Settings())
    )
    with BackgroundServer([binding]) as running:
        yield running, sched
    gate.set()
    sched.close()


def test_control_rpcs_answer_while_many_watchers_are_open(scheduler_server):
    running, _ = scheduler_server
    channel = grpc.insecure_channel(running.address)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    watched = stub.SubmitBattle(scheduler_pb2.SubmitBattleRequest(spec_yaml=spec_yaml("watched")), timeout=10)
    streams = []
    try:
        for _ in range(WATCHERS):
            stream = stub.WatchBattle(
                scheduler_pb2.WatchBattleRequest(battle_id=watched.battle_id), timeout=30
            )
            next(stream)  # the snapshot: this watcher's server side is following the battle
            streams.append(stream)
        other = stub.SubmitBattle(scheduler_pb2.SubmitBattleRequest(spec_yaml=spec_yaml("other")), timeout=10)
        assert other.total_runs == 2
        results = list(
            stub.ListResults(scheduler_pb2.ListResultsRequest(battle_id=other.battle_id), timeout=10)
        )
        assert len(results) == 2
        cancelled = stub.CancelBattle(
            scheduler_pb2.CancelBattleRequest(battle_id=other.battle_id), timeout=10
        )
        assert cancelled.state == scheduler_pb2.BATTLE_STATE_CANCELLED
        stub.CancelBattle(scheduler_pb2.CancelBattleRequest(battle_id=watched.battle_id), timeout=10)
        for stream in streams:  # every watcher still follows its battle and sees the cancel
            assert next(stream).battle_state == scheduler_pb2.BATTLE_STATE_CANCELLED
    finally:
        for stream in streams:
            stream.cancel()
        channel.close()
