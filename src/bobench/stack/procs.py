"""Process plumbing for the local stack and the integration fixtures: start, wait ready, stop by PID.

Programs that can bind port 0 report their port (the gRPC services print one JSON line). SeaweedFS
and Prometheus cannot take port 0 (Prometheus needs a concrete --web.listen-address; `weed` derives
gRPC ports from the HTTP ones), so for them `probe_free_port` picks a port that was free a moment
ago and the caller retries the start when the bind races another process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bobench.errors import BobenchError, Unavailable

log = logging.getLogger(__name__)

# What a readiness probe raises while a service is still starting: connection refused / reset and
# unreadable files (OSError), a half-written JSON line or no ready line yet (ValueError, IndexError),
# a store or RPC that is not answering yet (BobenchError, e.g. Unavailable).
NOT_READY_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, IndexError, BobenchError)


@dataclass
class Service:
    """A started process: what `make down` needs to stop it and what clients need to reach it."""

    name: str
    pid: int
    address: str = ""  # host:port of its main endpoint
    metrics_address: str = ""  # host:port of its Prometheus /metrics endpoint ("" = none)
    log_path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    start_ticks: int = 0  # its start time (/proc/PID/stat, clock ticks after boot): tells a reused PID

    def __post_init__(self) -> None:
        if not self.start_ticks:
            self.start_ticks = process_start_ticks(self.pid) or 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listened on when probed (the caller must retry if the bind then fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def probe_free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports that were free when probed (all held open until every one is chosen,
    so no port is handed out twice; the caller retries if a bind then fails)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(
    argv: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    stdout_path: Path | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen:
    """Start `argv` in its own session (a Ctrl-C of the caller does not reach it), logging to files."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    err = log_path.open("ab")
    out = stdout_path.open("wb") if stdout_path is not None else err
    try:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    finally:
        err.close()
        if out is not err:
            out.close()


def wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen,
    what: str,
    log_path: Path,
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
) -> None:
    """Poll `ready()` until True; raise Unavailable with the log tail if the process exits or time runs out.

    `ready()` raising one of NOT_READY_ERRORS means "not up yet" (logged at debug, and the last one is
    named when time runs out); any other exception is a bug in the probe and propagates.
    """
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(
                f"{what} exited with code {proc.returncode} before it was ready; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        try:
            if ready():
                return
        except NOT_READY_ERRORS as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            log.debug("%s not ready yet: %s", what, last_error)
        time.sleep(interval_s)
    probe = f" (last probe: {last_error})" if last_error else ""
    raise Unavailable(
        f"{what} was not ready within {timeout_s:.0f} s{probe}; log {log_path}:\n{log_tail(log_path)}"
    )


def read_ready_line(stdout_path: Path) -> dict[str, Any]:
    """The JSON line a bobench gRPC service prints once serving (see `bobench.rpc.server`)."""
    for line in stdout_path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            info = json.loads(line)
            if info.get("event") == "serving":
                return info
    raise ValueError("not serving yet")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state), or None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot), or None when there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def stop_group(pid: int, start_ticks: int = 0, timeout_s: float = 10.0) -> bool:
    """Stop a service started in its own session (`spawn`) and everything left in its process
    group: SIGTERM to the leader and up to `timeout_s` for it to stop its children, then SIGTERM to
    the members still there (the leader may be long gone: its children keep the group) and up to
    `timeout_s` more, then SIGKILL.

    `start_ticks` (from `Service`) guards against a reused PID: when a live `pid` started at
    another time, or a member started before the leader did, it is not ours and is left alone.
    Returns True when something was running."""
    leader_ticks = process_start_ticks(pid)
    if start_ticks and leader_ticks is not None and leader_ticks != start_ticks:
        log.warning("pid %d is another process now (started at another time); leaving it", pid)
        return False
    if leader_ticks is not None:
        stop_pid(pid, timeout_s)

    def ours() -> list[int]:
        return [m for m in group_members(pid) if (process_start_ticks(m) or 0) >= start_ticks]

    left = ours()
    had_members = bool(left)
    if left:
        log.info("stopping pids %s left in the process group of pid %d", left, pid)
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        for member in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, sig)
        deadline = time.monotonic() + wait_s
        while (left := ours()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not left:
            break
    if left:
        log.warning("pids %s of group %d did not stop after SIGKILL", left, pid)
    return leader_ticks is not None or had_members


def stop_pid(pid: int, timeout_s: float = 10.0, proc: subprocess.Popen | None = None) -> bool:
    """SIGTERM, wait up to `timeout_s`, then SIGKILL. Returns True if it had to kill."""
    if not pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if proc is None and not pid_alive(pid):
            return False
        time.sleep(0.05)
    log.warning("pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    if proc is not None:
        proc.wait(5)
    else:  # SIGKILL is delivered asynchronously: return only once the process is gone
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    return True


def start_bobench_service(
    name: str,
    module: str,
    args: list[str],
    log_dir: str | Path,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 90.0,
) -> Service:
    """Run `python -m <module> <args>` (a bobench gRPC service started with --port 0), wait for its
    JSON "serving" line and return the Service with the address and metrics port it reports."""
    import sys

    log_dir = Path(log_dir)
    log_path, out_path = log_dir / f"{name}.log", log_dir / f"{name}.out"
    proc = spawn([sys.executable, "-m", module, *args], log_path, env=env, stdout_path=out_path)
    info: dict[str, Any] = {}

    def ready() -> bool:
        info.update(read_ready_line(out_path))
        return True

    try:
        wait_until(ready, proc, name, log_path, timeout_s)
    except Unavailable:
        stop_pid(proc.pid, 5, proc)
        raise
    metrics = f"{info['host']}:{info['metrics_port']}" if info.get("metrics_port") else ""
    return Service(name, proc.pid, info["address"], metrics, str(log_path), extra={"stdout": str(out_path)})
