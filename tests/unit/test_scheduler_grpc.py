"""GrpcExecutor without a server: addresses are validated and an unreachable evaluator is a transient
failure that the scheduler retries up to its cap, then records."""

from __future__ import annotations

import pytest

from bobench.battle.executors.grpc import GrpcExecutor, parse_addresses
from bobench.battle.plan import RunPlan
from bobench.battle.scheduler import Scheduler
from bobench.battle.spec import parse_spec
from bobench.errors import InvalidArgument, Unavailable
from bobench.store import LocalStore


def plan(battle_id="b"):
    return RunPlan(
        run_key="k" * 24,
        backbone="toy",
        dataset="toy",
        dataset_ref="toy",
        protocol="knn",
        protocol_version="1",
        task="classification",
        config={},
        seed=0,
        primary_metric="top1",
        battle=battle_id,
    )


def test_parse_addresses_accepts_lists_and_csv_and_names_bad_entries():
    assert parse_addresses("a:1, b:2,") == ["a:1", "b:2"]
    assert parse_addresses(["h:3"]) == ["h:3"]
    with pytest.raises(InvalidArgument, match="'nohost'"):
        parse_addresses("a:1,nohost")
    with pytest.raises(InvalidArgument, match="no evaluator"):
        parse_addresses(" , ")


def test_slots_follow_addresses_and_runs_per_address():
    ex = GrpcExecutor(["127.0.0.1:1", "127.0.0.1:2"], runs_per_address=3)
    try:
        assert ex.slots == 6
    finally:
        ex.close()


def test_unreachable_evaluator_raises_unavailable_naming_it():
    ex = GrpcExecutor("127.0.0.1:1", timeout_s=5)
    try:
        with pytest.raises(Unavailable, match="127.0.0.1:1"):
            ex.execute(plan())
    finally:
        ex.close()


def test_scheduler_retries_an_unreachable_evaluator_then_records_the_failure(tmp_path):
    sched = Scheduler(
        LocalStore(tmp_path, fsync=False),
        [GrpcExecutor("127.0.0.1:1", timeout_s=5)],
        max_retries=2,
        backoff_s=0.01,
        planner=lambda spec, bid: [plan(bid)],
    ).start()
    try:
        bid = sched.submit(parse_spec({"backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn"]}))
        status = sched.wait(bid, timeout_s=20)
        assert status.state == "failed" and sched.retries_total == 2
        (record,) = sched.results(bid)
        assert record.error.startswith("Unavailable: evaluator 127.0.0.1:1: UNAVAILABLE")
    finally:
        sched.close()
