"""A real Prometheus (started by the test, generated config, bind-probed port: Prometheus cannot
listen on port 0) scrapes a real scheduler and evaluator; PromQL finds the RPC latency histogram."""

from __future__ import annotations

import time

import pytest

from bobench.stack.procs import start_bobench_service, stop_pid
from bobench.stack.prometheus import prometheus_binary, query, start_prometheus, targets_health, write_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        prometheus_binary() is None,
        reason="prometheus binary not installed (apt-get install -y --no-install-recommends prometheus)",
    ),
]


def test_prometheus_scrapes_services_and_answers_the_rpc_latency_query(tmp_path):
    from bobench.battle.spec import parse_spec
    from bobench.client import SchedulerClient

    started = []
    try:
        ev = start_bobench_service(
            "evaluator",
            "bobench.rpc.evaluator_service",
            [
                "--port",
                "0",
                "--metrics-port",
                "0",
                "--results-dir",
                str(tmp_path / "ev"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            tmp_path / "logs",
            env={"OMP_NUM_THREADS": "1", "BOBENCH_EMBEDDER": "torch", "BOBENCH_THREADS": "1"},
        )
        started.append(ev)
        sched = start_bobench_service(
            "scheduler",
            "bobench.rpc.scheduler_service",
            [
                "--port",
                "0",
                "--metrics-port",
                "0",
                "--store",
                str(tmp_path / "store"),
                "--evaluators",
                ev.address,
            ],
            tmp_path / "logs",
        )
        started.append(sched)
        config = write_config(
            tmp_path / "prometheus.yml",
            {"scheduler": [sched.metrics_address], "evaluator": [ev.metrics_address]},
            scrape_interval_s=1,
        )
        prom = start_prometheus(config, tmp_path / "prom")
        started.append(prom)
        with SchedulerClient(sched.address) as client:
            client.wait_ready()
            bid = client.submit(
                parse_spec({"backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn"]})
            ).battle_id
            for _ in client.watch(bid, timeout_s=60):
                pass
        deadline = time.monotonic() + 30
        wanted = {("scheduler", "SubmitBattle"), ("evaluator", "Evaluate")}
        methods: set = set()
        runs: list = []
        while time.monotonic() < deadline and not (wanted <= methods and runs):
            latency = query(
                prom.address, 'sum by (job, method) (bobench_rpc_latency_seconds_bucket{le="+Inf"})'
            )
            methods = {(r["metric"]["job"], r["metric"]["method"]) for r in latency}
            runs = query(prom.address, 'bobench_scheduler_runs{state="finished"}')
            time.sleep(0.5)
        health = targets_health(prom.address)
        assert set(health.values()) == {"up"} and len(health) == 2, health
        assert wanted <= methods, methods
        assert float(runs[0]["value"][1]) == 1.0
    finally:
        for s in reversed(started):
            stop_pid(s.pid)
