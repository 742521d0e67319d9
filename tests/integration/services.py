"""Start the real Evaluator and Scheduler processes for integration tests (ports from 127.0.0.1:0)."""

from __future__ import annotations

from pathlib import Path

from bobench.stack.procs import start_bobench_service


def start_evaluator(tmp_path: Path, env: dict[str, str], cache: str = "c-ev", results: str = "ev"):
    """An evaluator process with its own cache and results directory under `tmp_path`."""
    return start_bobench_service(
        "evaluator", "bobench.rpc.evaluator_service",
        ["--port", "0", "--metrics-port", "0", "--results-dir", str(tmp_path / results),
         "--cache-dir", str(tmp_path / cache)],
        tmp_path / "logs", env=env,
    )  # fmt: skip


def start_scheduler(tmp_path: Path, evaluator_address: str, env: dict[str, str]):
    """A scheduler process storing its state under `tmp_path/store`, dispatching to one evaluator."""
    return start_bobench_service(
        "scheduler", "bobench.rpc.scheduler_service",
        ["--port", "0", "--metrics-port", "0", "--store", str(tmp_path / "store"), "--evaluators",
         evaluator_address],
        tmp_path / "logs", env=env,
    )  # fmt: skip


def spawn_evaluator_process(tmp_path: Path, *extra_args: str):
    """`python -m bobench.rpc.evaluator_service` on port 0 with stdout piped; returns (Popen, the
    parsed JSON ready line). The caller stops the process."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "BOBENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bobench.rpc.evaluator_service", "--port", "0", "--metrics-port", "0",
           "--results-dir", str(tmp_path / "results"), "--threads", "1", *extra_args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    return proc, json.loads(proc.stdout.readline())
