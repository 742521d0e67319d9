"""GrpcExecutor evaluator targets without a server: host:port lists versus one gRPC target URI."""

from __future__ import annotations

import pytest

from bobench.battle.executors.grpc import GrpcExecutor, is_target_uri, parse_addresses
from bobench.battle.plan import RunPlan
from bobench.errors import InvalidArgument, Unavailable


def test_a_target_uri_is_one_entry_even_with_commas():
    assert parse_addresses("dns:///evaluator-headless.bobench.svc.cluster.local:50051") == [
        "dns:///evaluator-headless.bobench.svc.cluster.local:50051"
    ]
    assert parse_addresses(" ipv4:127.0.0.1:1,127.0.0.1:2 ") == ["ipv4:127.0.0.1:1,127.0.0.1:2"]
    assert not is_target_uri("evaluator-0:50051,evaluator-1:50051")
    assert not is_target_uri(["dns:///a:1"])  # a list is always host:port entries


def test_a_target_uri_without_a_port_is_refused_naming_it():
    with pytest.raises(InvalidArgument, match="'dns:///evaluator-headless' must end with :port"):
        parse_addresses("dns:///evaluator-headless")


def test_runs_per_address_bounds_the_whole_target():
    ex = GrpcExecutor("dns:///localhost:1", runs_per_address=6)
    try:
        assert ex.slots == 6 and len(ex.addresses) == 1
    finally:
        ex.close()


def test_an_unresolvable_or_unreachable_target_is_transient():
    plan = RunPlan(
        run_key="k" * 24, backbone="toy", dataset="toy", dataset_ref="toy", protocol="knn",
        protocol_version="1", task="classification", config={}, seed=0, primary_metric="top1", battle="b",
    )  # fmt: skip
    ex = GrpcExecutor("dns:///localhost:1", timeout_s=5)
    try:
        with pytest.raises(Unavailable, match="dns:///localhost:1"):
            ex.execute(plan)
    finally:
        ex.close()
