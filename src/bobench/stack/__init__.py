"""The local stack (`make up` / `make down`): SeaweedFS S3, the Triton embedder (when the serving
module is available), evaluators, the scheduler (store = S3) and Prometheus scraping them, all on
loopback. `up()` records every PID and address in `<state_dir>/stack.json` and logs in
`<state_dir>/logs/`; `down()` stops exactly those PIDs (SIGTERM, then SIGKILL).

    python -m bobench.stack up [--evaluators 2] [--no-embedder]
    python -m bobench.stack down
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from bobench.errors import FailedPrecondition, Unavailable
from bobench.stack.procs import Service, pid_alive, start_bobench_service, stop_pid

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = ".bobench"
BUCKET = "bobench"


def _state_path(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def read_state(state_dir: str | Path = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The recorded stack (services, store URL, credentials' env) or None when none is up."""
    path = _state_path(Path(state_dir))
    return json.loads(path.read_text()) if path.is_file() else None


def _start_embedder(state_dir: Path, backbones: list[str]) -> Service:
    """Triton serving `backbones` through bobench.serving.embedder (builds the repository first)."""
    import sys

    from bobench.stack.procs import spawn, wait_until

    logs = state_dir / "logs"
    out_path, log_path = logs / "embedder.out", logs / "embedder.log"
    proc = spawn(
        [
            sys.executable,
            "-m",
            "bobench.serving.embedder",
            "--repo",
            str(state_dir / "model-repo"),
            "--build",
            ",".join(backbones),
            "--cache-dir",
            str(state_dir / "cache"),
            "--log-dir",
            str(logs / "triton"),
        ],
        log_path,
        stdout_path=out_path,
    )
    info: dict[str, Any] = {}

    def ready() -> bool:
        for line in out_path.read_text().splitlines():
            if line.startswith("{") and "grpc" in line:
                info.update(json.loads(line))
                return True
        return False

    try:
        wait_until(ready, proc, "embedder (Triton)", log_path, timeout_s=300)
    except Unavailable:
        stop_pid(proc.pid, 10, proc)
        raise
    host = info.get("host", "127.0.0.1")
    return Service(
        "embedder",
        proc.pid,
        f"{host}:{info['grpc']}",
        f"{host}:{info['metrics']}",
        str(log_path),
        extra={"http": f"{host}:{info['http']}"},
    )


def up(
    state_dir: str | Path = DEFAULT_STATE_DIR,
    *,
    evaluators: int = 1,
    embedder: bool = True,
    embedder_backbones: tuple[str, ...] = ("toy",),
    scrape_interval_s: float = 5.0,
) -> dict[str, Any]:
    """Start the stack and return what `stack.json` records. Raises FailedPrecondition when a stack
    is already up in `state_dir`, Unavailable (with the log tail) when a service does not come up;
    services started before the failure are stopped again."""
    from bobench.stack.prometheus import prometheus_binary, start_prometheus, write_config
    from bobench.stack.seaweedfs import S3Identity, start_seaweedfs

    state_dir = Path(state_dir).resolve()
    existing = read_state(state_dir)
    if existing and any(pid_alive(s["pid"]) for s in existing["services"]):
        raise FailedPrecondition(f"a stack is already up ({_state_path(state_dir)}); run `make down` first")
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[Service] = []
    notes: list[str] = []

    def record() -> dict[str, Any]:
        state = {
            "services": [s.to_dict() for s in started],
            "store": f"s3://{BUCKET}/artifacts",
            "env": env,
            "notes": notes,
        }
        _state_path(state_dir).write_text(json.dumps(state, indent=2))
        _state_path(state_dir).chmod(0o600)  # holds the S3 secret of this throwaway local stack
        return state

    admin = S3Identity("admin", "bobench", secrets.token_hex(16))
    env: dict[str, str] = {}
    try:
        s3 = start_seaweedfs(state_dir / "seaweedfs", [admin])
        started.append(s3)
        env = {
            "BOBENCH_S3_ENDPOINT": f"http://{s3.address}",
            "BOBENCH_S3_ACCESS_KEY": admin.access_key,
            "BOBENCH_S3_SECRET_KEY": admin.secret_key,
            "BOBENCH_STORE": f"s3://{BUCKET}/artifacts",
        }
        record()
        if embedder:
            try:
                import bobench.serving.embedder  # noqa: F401

                started.append(_start_embedder(state_dir, list(embedder_backbones)))
                env["BOBENCH_TRITON_URL"] = started[-1].address
                record()
            except ImportError as exc:
                notes.append(f"embedder not started: {exc}")
        ev_env = {**env, "BOBENCH_EMBEDDER": "triton"} if "BOBENCH_TRITON_URL" in env else env
        for i in range(evaluators):
            started.append(
                start_bobench_service(
                    f"evaluator-{i}",
                    "bobench.rpc.evaluator_service",
                    [
                        "--port",
                        "0",
                        "--metrics-port",
                        "0",
                        "--results-dir",
                        str(state_dir / f"evaluator-{i}"),
                        "--cache-dir",  # the stack's own features: computed through Triton
                        str(state_dir / "cache"),
                    ],
                    logs,
                    env=ev_env,
                )
            )
            record()
        addresses = ",".join(s.address for s in started if s.name.startswith("evaluator-"))
        started.append(
            start_bobench_service(
                "scheduler",
                "bobench.rpc.scheduler_service",
                [
                    "--port",
                    "0",
                    "--metrics-port",
                    "0",
                    "--store",
                    env["BOBENCH_STORE"],
                    "--evaluators",
                    addresses,
                ],
                logs,
                env=env,
            )
        )
        record()
        if prometheus_binary():
            targets: dict[str, list[str]] = {}
            for s in started:
                if s.metrics_address:
                    targets.setdefault(s.name.split("-")[0], []).append(s.metrics_address)
            config = write_config(state_dir / "prometheus.yml", targets, scrape_interval_s)
            started.append(start_prometheus(config, state_dir / "prometheus"))
        else:
            notes.append("prometheus not started: binary not found")
        return record()
    except BaseException:
        for s in reversed(started):
            stop_pid(s.pid)
        _state_path(state_dir).unlink(missing_ok=True)
        raise


def down(state_dir: str | Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop the PIDs recorded by `up()` (reverse start order); returns the names stopped."""
    state = read_state(state_dir)
    if state is None:
        return []
    stopped = []
    for s in reversed(state["services"]):
        if pid_alive(s["pid"]):
            stop_pid(s["pid"], timeout_s=15)
            stopped.append(s["name"])
    _state_path(Path(state_dir)).unlink(missing_ok=True)
    return stopped
