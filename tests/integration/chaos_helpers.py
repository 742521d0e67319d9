"""Shared pieces of the chaos tests (test_chaos_*.py): real scheduler and evaluator processes on fixed
loopback ports (so a restarted evaluator is found again), runs that take a second or two, and
exactly-once counts from the evaluator's result log.

The services run the way the local stack runs them: auth on (the tokens file of `services.auth_env`;
the scheduler presents the service token to the evaluators, this test process the admin token) and
the scheduler signs the results it stores."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from pathlib import Path

from bobench.battle.spec import parse_spec
from bobench.stack.procs import Service, start_bobench_service
from services import SERVICE_TOKEN, auth_env

THREADS_ENV = {
    "OMP_NUM_THREADS": "1",
    "BOBENCH_THREADS": "1",
    "BOBENCH_EMBEDDER": "torch",
    "BOBENCH_BATCH_SIZE": "8",
}


def efficiency_spec(splits, min_time_s: float = 1.5, name: str = "chaos"):
    """One efficiency run per split seed of the toy dataset, each timing the toy backbone for
    `min_time_s` (a run in flight long enough to be hit by a fault, stopped at its next step)."""
    config = {
        "batch_sizes": [1],
        "warmup_steps": 1,
        "timed_steps": 5,
        "min_time_s": min_time_s,
        "max_timed_steps": 10**6,
        "flops": False,
    }
    return parse_spec(
        {
            "name": name,
            "backbones": ["toy"],
            "datasets": [{"name": f"toy-s{s}", "ref": {"name": "toy", "split_seed": s}} for s in splits],
            "protocols": [{"name": "efficiency", "config": config}],
        }
    )


def start_evaluator_on(tmp_path: Path, port: int, name: str = "evaluator", *extra: str) -> Service:
    """An evaluator on 127.0.0.1:`port` sharing its results and cache under `tmp_path` across restarts."""
    return start_bobench_service(
        name, "bobench.rpc.evaluator_service",
        ["--port", str(port), "--results-dir", str(tmp_path / "ev-results"), "--cache-dir",
         str(tmp_path / "ev-cache"), "--grace-s", "1", "--stop-timeout-s", "2", *extra],
        tmp_path / "logs", env={**THREADS_ENV, **auth_env(tmp_path)},
    )  # fmt: skip


RESULT_SIGNING_KEY = secrets.token_hex(32)  # one per test session, like the stack's secrets.env


def start_chaos_scheduler(
    tmp_path: Path, evaluator_address: str, store: str, env: dict[str, str] | None = None, name="scheduler"
) -> Service:
    """A scheduler with fast retries (backoff 0.2 s, capped at 1 s; breaker cool-down 1 s) and
    readiness checked every 0.5 s; auth on, its service token towards the evaluators, results signed."""
    return start_bobench_service(
        name, "bobench.rpc.scheduler_service",
        ["--port", "0", "--store", store, "--evaluators", evaluator_address, "--concurrency", "1",
         "--backoff-s", "0.2", "--max-backoff-s", "1", "--breaker-cooldown-s", "1",
         "--readiness-interval-s", "0.5"],
        tmp_path / "logs",
        env={**THREADS_ENV, **auth_env(tmp_path), "BOBENCH_AUTH_TOKEN": SERVICE_TOKEN,
             "BOBENCH_RESULT_SIGNING_KEY": RESULT_SIGNING_KEY, **(env or {})},
    )  # fmt: skip


def evaluator_lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "ev-results" / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def finished_per_key(tmp_path: Path) -> Counter:
    """How many finished records the evaluator's log holds per run key (exactly once: all 1)."""
    return Counter(d["run_key"] for d in evaluator_lines(tmp_path) if d["status"] == "finished")


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.05) -> float:
    """Poll `condition()` until True; returns the seconds it took (AssertionError naming `what`)."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(interval_s)
    return time.monotonic() - t0


def health_status(address: str, service: str = "bobench.v1.Scheduler") -> str:
    """The health status name of `service` at `address` ("UNREACHABLE" when the call fails)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def assert_auth_on(scheduler_address: str, evaluator_address: str) -> None:
    """Both services refuse a caller without a token (UNAUTHENTICATED), so the test runs with auth on."""
    import pytest

    from bobench.auth_client import ClientAuth
    from bobench.client import EvaluatorClient, SchedulerClient
    from bobench.errors import Unauthenticated

    with SchedulerClient(scheduler_address, auth=ClientAuth(), timeout_s=10) as anonymous:
        with pytest.raises(Unauthenticated):
            anonymous.get("no-such-battle")
    with EvaluatorClient(evaluator_address, auth=ClientAuth(), timeout_s=10) as anonymous:
        with pytest.raises(Unauthenticated):
            anonymous.get_result("no-such-run")
