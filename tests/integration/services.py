"""Start the real Evaluator and Scheduler processes for integration tests (ports from 127.0.0.1:0).

They run with auth on, like the local stack: each gets a tokens file (`auth_env`) holding the hashes
of TEST_TOKEN (admin) and SERVICE_TOKEN (the scheduler's identity towards evaluators). TEST_TOKEN is
this test process's BOBENCH_AUTH_TOKEN from the import on, so clients and gRPC executors built here
without explicit credentials present it, as any client presents its environment's token.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from bobench.rpc.auth_tokens import token_digest
from bobench.stack.procs import start_bobench_service

TEST_TOKEN = "bob_test_" + secrets.token_urlsafe(24)
SERVICE_TOKEN = "bob_service_" + secrets.token_urlsafe(24)
os.environ["BOBENCH_AUTH_TOKEN"] = TEST_TOKEN


def auth_env(tmp_path: Path) -> dict[str, str]:
    """The env that turns auth on for a service started under `tmp_path` (its tokens file)."""
    path = tmp_path / "auth-tokens.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [("tests", ["admin"], TEST_TOKEN), ("scheduler", ["service"], SERVICE_TOKEN)]
        path.write_text(
            "".join(
                json.dumps({"identity": i, "roles": r, "sha256": token_digest(t)}) + "\n"
                for i, r, t in entries
            )
        )
    return {"BOBENCH_AUTH_TOKENS_FILE": str(path)}


def start_evaluator(tmp_path: Path, env: dict[str, str], cache: str = "c-ev", results: str = "ev"):
    """An evaluator process with its own cache and results directory under `tmp_path`."""
    return start_bobench_service(
        "evaluator", "bobench.rpc.evaluator_service",
        ["--port", "0", "--metrics-port", "0", "--results-dir", str(tmp_path / results),
         "--cache-dir", str(tmp_path / cache)],
        tmp_path / "logs", env={**auth_env(tmp_path), **env},
    )  # fmt: skip


def start_scheduler(tmp_path: Path, evaluator_address: str, env: dict[str, str]):
    """A scheduler process storing its state under `tmp_path/store`, dispatching to one evaluator."""
    return start_bobench_service(
        "scheduler", "bobench.rpc.scheduler_service",
        ["--port", "0", "--metrics-port", "0", "--store", str(tmp_path / "store"), "--evaluators",
         evaluator_address],
        tmp_path / "logs", env={**auth_env(tmp_path), **env, "BOBENCH_AUTH_TOKEN": SERVICE_TOKEN},
    )  # fmt: skip


def spawn_evaluator_process(tmp_path: Path, *extra_args: str):
    """`python -m bobench.rpc.evaluator_service` on port 0 with stdout piped; returns (Popen, the
    parsed JSON ready line). The caller stops the process."""
    import subprocess
    import sys

    env = {**os.environ, "BOBENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           **auth_env(tmp_path)}  # fmt: skip
    cmd = [sys.executable, "-m", "bobench.rpc.evaluator_service", "--port", "0", "--metrics-port", "0",
           "--results-dir", str(tmp_path / "results"), "--threads", "1", *extra_args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    return proc, json.loads(proc.stdout.readline())
