"""The local stack (`make up` / `make down`): SeaweedFS S3, the Triton embedder (when the serving
module is available), evaluators, the scheduler (store = S3) and Prometheus scraping them, all on
loopback. `up()` records every PID and address in `<state_dir>/stack.json` and logs in
`<state_dir>/logs/`; `down()` stops exactly those PIDs (SIGTERM, then SIGKILL).

Models take the cluster's path: Triton reads `s3://bobench/triton-models` (a prefix of the stack's
bucket) straight from SeaweedFS, the demo backbones are published there at `up`, and the scheduler
publishes any other backbone a battle needs before dispatching its runs (in process). Secrets (the S3
secret key, the Triton admin and service keys and the local user's admin token) live only in
`<state_dir>/secrets.env` (mode 0600); `stack.json` names that file and `stack_env()` merges both for
clients. The services run with auth on: `<state_dir>/auth-tokens.jsonl` holds the hashes of the
user's token and of the scheduler's service token (which only the scheduler's environment holds).
Triton is restricted with two keys: the admin key (model control; the embedder and the scheduler,
which publishes) and the service key (inference and metadata; the embedder and the evaluators).

    python -m bobench.stack up [--evaluators 2] [--no-embedder]
    python -m bobench.stack down
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from bobench.errors import BobenchError, FailedPrecondition, Unavailable
from bobench.rpc.auth_tokens import fresh_tokens_file
from bobench.stack.procs import Service, pid_alive, start_bobench_service

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = ".bobench"
BUCKET = "bobench"
MODEL_REPOSITORY = f"s3://{BUCKET}/triton-models"
SECRETS_FILE = "secrets.env"
_SECRET_VARS = (
    "BOBENCH_S3_SECRET_KEY",
    "BOBENCH_TRITON_ADMIN_KEY",
    "BOBENCH_TRITON_SERVICE_KEY",
    "BOBENCH_AUTH_TOKEN",
    "BOBENCH_RESULT_SIGNING_KEY",
)
TOKENS_FILE = "auth-tokens.jsonl"  # hashes only: the local user's admin token and the scheduler's


def _state_path(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def read_state(state_dir: str | Path = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The recorded stack (services, store URL, credentials' env) or None when none is up."""
    path = _state_path(Path(state_dir))
    return json.loads(path.read_text()) if path.is_file() else None


def read_secrets(state_dir: str | Path = DEFAULT_STATE_DIR) -> dict[str, str]:
    """The stack's secret environment variables from `<state_dir>/secrets.env` ({} when absent)."""
    path = Path(state_dir) / SECRETS_FILE
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def stack_env(state_dir: str | Path = DEFAULT_STATE_DIR) -> dict[str, str]:
    """Every BOBENCH_* variable a client of the running stack needs (stack.json env + secrets)."""
    state = read_state(state_dir) or {}
    return {**state.get("env", {}), **read_secrets(state_dir)}


def _write_secrets(state_dir: Path, secrets_env: dict[str, str]) -> Path:
    path = state_dir / SECRETS_FILE
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"{k}={v}\n" for k, v in secrets_env.items()))
    return path


def _start_embedder(state_dir: Path, env: dict[str, str]) -> Service:
    """Triton reading MODEL_REPOSITORY from S3 (bobench.serving.embedder_service); starts with what is
    there."""
    import sys

    from bobench.stack.procs import spawn, wait_until

    logs = state_dir / "logs"
    out_path, log_path = logs / "embedder.out", logs / "embedder.log"
    proc = spawn(
        [sys.executable, "-m", "bobench.serving.embedder_service", "--repo", MODEL_REPOSITORY,
         "--log-dir", str(logs / "triton")],
        log_path,
        stdout_path=out_path,
        env=env,
    )  # fmt: skip
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
        _stop_service({"pid": proc.pid})
        proc.wait(5)
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


def _publish_demo(env: dict[str, str], backbones: list[str], cache_dir: Path) -> list[str]:
    """Publish `backbones` to MODEL_REPOSITORY and load them on the stack's Triton; returns notes."""
    from bobench.battle.publish_step import InProcessPublisher
    from bobench.config import Settings
    from bobench.store import open_store

    settings = Settings(
        cache_dir=str(cache_dir),
        s3_endpoint=env["BOBENCH_S3_ENDPOINT"],
        s3_access_key=env["BOBENCH_S3_ACCESS_KEY"],
        s3_secret_key=env["BOBENCH_S3_SECRET_KEY"],
    )
    store = open_store(MODEL_REPOSITORY, settings, create_bucket=True)
    publisher = InProcessPublisher(
        store,
        cache_dir=cache_dir,
        triton_url=env["BOBENCH_TRITON_URL"],
        admin_key=env["BOBENCH_TRITON_ADMIN_KEY"],
    )
    notes = []
    for name in backbones:
        try:
            model = publisher.publish(name, "onnx")
        except BobenchError as exc:  # its runs will fail with this reason; the stack still comes up
            notes.append(f"could not publish {name}: {exc}")
            continue
        notes.append(f"served {model.model_name} version {model.version} from {MODEL_REPOSITORY}")
    return notes


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
            "env": {k: v for k, v in env.items() if k not in _SECRET_VARS},
            "secrets": str(secrets_path),
            "notes": notes,
        }
        _state_path(state_dir).write_text(json.dumps(state, indent=2))
        return state

    admin = S3Identity("admin", "bobench", secrets.token_hex(16))
    env: dict[str, str] = {}
    tokens = fresh_tokens_file(state_dir / TOKENS_FILE, {"stack-user": "admin", "scheduler": "service"})
    secrets_path = _write_secrets(
        state_dir,
        {"BOBENCH_S3_SECRET_KEY": admin.secret_key, "BOBENCH_TRITON_ADMIN_KEY": secrets.token_hex(16),
         "BOBENCH_TRITON_SERVICE_KEY": secrets.token_hex(16),  # evaluators' key to Triton inference
         "BOBENCH_AUTH_TOKEN": tokens["stack-user"],  # what `bob` against the stack presents
         "BOBENCH_RESULT_SIGNING_KEY": secrets.token_hex(32)},  # the scheduler signs stored results
    )  # fmt: skip
    try:
        s3 = start_seaweedfs(state_dir / "seaweedfs", [admin])
        started.append(s3)
        env = {
            "BOBENCH_S3_ENDPOINT": f"http://{s3.address}",
            "BOBENCH_S3_ACCESS_KEY": admin.access_key,
            "BOBENCH_STORE": f"s3://{BUCKET}/artifacts",
            **read_secrets(state_dir),
        }
        env.pop("BOBENCH_AUTH_TOKEN")  # services authenticate callers with the tokens file instead
        env["BOBENCH_AUTH_TOKENS_FILE"] = str(state_dir / TOKENS_FILE)
        record()
        if embedder:
            started.append(_start_embedder(state_dir, env))
            env["BOBENCH_TRITON_URL"] = started[-1].address
            env["BOBENCH_PUBLISH_TO"] = MODEL_REPOSITORY
            record()
            notes.extend(_publish_demo(env, list(embedder_backbones), state_dir / "cache"))
        ev_env = _without(env, "BOBENCH_TRITON_ADMIN_KEY", "BOBENCH_PUBLISH_TO", "BOBENCH_RESULT_SIGNING_KEY")
        if "BOBENCH_TRITON_URL" in env:  # evaluators infer; only the scheduler publishes and loads
            ev_env["BOBENCH_EMBEDDER"] = "triton"
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
                    "--cache-dir",  # exports of the backbones it publishes
                    str(state_dir / "cache"),
                ],
                logs,
                env={  # it publishes and loads models, never infers; its token: identity towards evaluators
                    **_without(env, "BOBENCH_TRITON_SERVICE_KEY"),
                    "BOBENCH_AUTH_TOKEN": tokens["scheduler"],
                },
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
            _stop_service(s.to_dict())
        _state_path(state_dir).unlink(missing_ok=True)
        secrets_path.unlink(missing_ok=True)
        raise


def _without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


def _stop_service(service: dict[str, Any]) -> bool:
    """Stop a recorded service and whatever is left in its process group (the embedder's
    tritonserver and python stubs, also when the embedder itself was killed). True if it ran."""
    from bobench.stack.procs import stop_group

    return stop_group(service["pid"], service.get("start_ticks", 0), timeout_s=15)


def secret_files(state_dir: str | Path = DEFAULT_STATE_DIR) -> list[Path]:
    """Every file of the stack that holds a credential (each 0600): `secrets.env` and SeaweedFS's
    S3 identities, JWT keys and TLS keys. No other file under `state_dir` may hold one."""
    from bobench.stack.seaweedfs import secret_files as seaweedfs_secret_files

    state_dir = Path(state_dir)
    return [state_dir / SECRETS_FILE, *seaweedfs_secret_files(state_dir / "seaweedfs")]


def public_state(state_dir: str | Path = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """`read_state` with every value that equals or contains a secret of the stack replaced by
    "<redacted>" (what `status` prints; stack.json should hold none, this makes sure)."""
    state = read_state(state_dir)
    values = [v for v in read_secrets(state_dir).values() if len(v) >= 8]

    def scrub(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: scrub(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [scrub(v) for v in obj]
        if isinstance(obj, str) and any(v in obj for v in values):
            return "<redacted>"
        return obj

    return None if state is None else scrub(state)


def down(state_dir: str | Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop the PIDs recorded by `up()` (reverse start order) and what they left in their process
    groups; returns the names of those that were running."""
    state = read_state(state_dir)
    if state is None:
        return []
    stopped = [s["name"] for s in reversed(state["services"]) if _stop_service(s)]
    _state_path(Path(state_dir)).unlink(missing_ok=True)
    (Path(state_dir) / SECRETS_FILE).unlink(missing_ok=True)
    return stopped
