"""Start, watch and stop the real `tritonserver` binary shipped in the nvidia-pytriton wheel.

That build only bundles the python backend, so bobench's local repositories serve ONNX Runtime from a
python-backend `model.py`. Measured facts this module encodes (see shared notes, "Triton"):

- the backend stub must see the venv interpreter's LIBDIR on LD_LIBRARY_PATH and the venv's `bin`
  first on PATH, or model initialisation fails in the stub;
- the stub and libtriton_python.so find their bundled CUDA runtime through a relative RPATH, so the
  backend directory holds *symlinks* to the wheel's files (a copied stub cannot start);
- port 0: tritonserver refuses two endpoints on the same "address:0" (its option check compares the
  strings before binding) and logs "127.0.0.1:0" instead of the port gRPC actually bound. So ports
  requested as 0 are chosen by bind-probing loopback/the host, and a start that fails with
  "already in use" (another process won the race) is retried with fresh ports;
- the repository may be `s3://bucket/prefix`: tritonserver reads it straight from the S3 endpoint of
  the Settings (`--model-repository=s3://http://host:port/bucket/prefix`), with the credentials passed
  as AWS_* environment variables of the child process only (never on its command line or in logs).
  Triton's S3 path check allows only `[0-9a-zA-Z.-_]` in path segments and a lower-case bucket;
- `--exit-on-error=false` always: one model that fails to load must not take the others down, and
  `--strict-readiness=false` so that model does not make the whole server report unready;
- `--metrics-config=summary_latencies=true` adds latency quantiles to the Prometheus metrics;
- with an `admin_key`, model control, shared memory, trace and log settings are restricted to
  requests carrying the header `bobench-admin-key: <key>`; with a `service_key`, inference, metadata,
  model config and statistics to requests carrying `bobench-service-key: <key>` (gRPC
  `--grpc-restricted-protocol`, HTTP `--http-restricted-api`, see `triton_access`); health stays open;
- `restart()` brings a dead server back on the ports it had (clients keep their address) and loads
  the start models again; `new_session=False` keeps tritonserver and its python-backend stubs in the
  caller's process group, so whoever started the caller can stop all of them with one `killpg`, even
  after the caller itself is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from bobench.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from bobench.serving.triton_access import (
    admin_headers,
    ensure_s3_repository,
    restricted_flags,
    s3_environment,
    service_client,
    triton_s3_repository,
)
from bobench.triton_errors import to_bobench_error

log = logging.getLogger(__name__)

_BIND_RETRIES = 3
_IN_USE = re.compile(r"Socket '[^']*:(\d+)' already in use")
_POLL_S = 0.2
ALL_MODELS = "*"  # `models=["*"]`: load every model in the repository at start


def tritonserver_home() -> Path:
    """The `pytriton/tritonserver` directory of the installed wheel (Unavailable if not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("tritonserver not found: install nvidia-pytriton (it ships the binary)")
    home = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise Unavailable(f"tritonserver binary missing under {home}")
    return home


def prepare_backend_dir(dest: str | os.PathLike) -> Path:
    """Create `dest/python` with symlinks to the wheel's python backend and the stub for this Python."""
    home = tritonserver_home()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise Unavailable(f"no python backend stub for Python {version} in {home}")
    target = Path(dest) / "python"
    target.mkdir(parents=True, exist_ok=True)
    sources = [
        home / "backends" / "python" / "libtriton_python.so",
        home / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ]
    for src in sources:
        link = target / src.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
    return Path(dest)


def server_environment() -> dict[str, str]:
    """Environment for tritonserver: venv LIBDIR on LD_LIBRARY_PATH, venv bin first on PATH."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def probe_free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports the OS reports free on `host` (all held open until every one is chosen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class TritonServer:
    """A tritonserver process serving `repo` (a directory or `s3://bucket/prefix`) in explicit
    model-control mode.

    Use as a context manager (`with TritonServer(repo) as server:`) or call `start()`/`stop()`.
    `models` lists what to load at start (default: every model directory of a local repository;
    for an S3 repository `["*"]`, every model it holds, so published models come back after a
    restart). `settings` supplies the S3 endpoint and credentials; `admin_key` restricts model
    control and shared memory to callers sending it, `service_key` inference and metadata (see
    module docstring).
    """

    def __init__(
        self,
        repo: str | os.PathLike,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log_dir: str | os.PathLike | None = None,
        models: Iterable[str] | None = None,
        extra_args: Iterable[str] = (),
        settings=None,
        admin_key: str = "",
        new_session: bool = True,
        service_key: str = "",
    ) -> None:
        from bobench.export.triton_repo import list_models

        self.s3_env: dict[str, str] = {}
        if str(repo).startswith("s3://"):
            if settings is None:
                raise InvalidArgument(f"model repository {repo}: S3 needs settings (s3_endpoint, keys)")
            self.repo: Path | str = str(repo)
            self._repository_flag = triton_s3_repository(str(repo), settings.s3_endpoint)
            self.s3_env = s3_environment(settings)
            self._s3_endpoint = settings.s3_endpoint
            self.models = list(models) if models is not None else [ALL_MODELS]
        else:
            self.repo = Path(repo).resolve()
            if not self.repo.is_dir():
                raise NotFound(f"model repository {self.repo} does not exist")
            self._repository_flag = str(self.repo)
            self.models = list(models) if models is not None else list_models(self.repo)
        if ALL_MODELS in self.models and len(self.models) > 1:
            raise InvalidArgument(f"models: '*' (load all) cannot be combined with names, got {self.models}")
        self.admin_key = admin_key
        self.service_key = service_key
        self.new_session = new_session
        self.host = host
        self._requested = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        for name, port in self._requested.items():
            if not 0 <= port <= 65535:
                raise InvalidArgument(f"{name}_port must be in 0..65535, got {port}")
        self.ports: dict[str, int] = {}
        self.extra_args = list(extra_args)
        self._own_workdir = log_dir is None
        self.workdir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="bobench-triton-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "tritonserver.log"
        self.process: subprocess.Popen | None = None
        self._client = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> TritonServer:
        """Start the server and wait until it and its models are ready; returns self.

        Raises Unavailable when the binary is missing or the server exits (the message carries the
        log tail), DeadlineExceeded when it is not ready within `timeout_s`.
        """
        if self.process is not None:
            return self
        if self.s3_env:
            ensure_s3_repository(str(self.repo), self._s3_endpoint, self.s3_env)
        backend_dir = prepare_backend_dir(self.workdir / "backends")
        deadline = time.monotonic() + timeout_s
        for attempt in range(1, _BIND_RETRIES + 1):
            self._choose_ports()
            self._spawn(backend_dir)
            try:
                self.wait_ready(self._named_models(), timeout_s=max(0.0, deadline - time.monotonic()))
                log.info("tritonserver pid %d ready on %s %s", self.pid, self.host, self.ports)
                return self
            except Unavailable:
                lost = self._port_lost_to_race()
                self._terminate()
                if lost is None or attempt == _BIND_RETRIES:
                    raise
                log.warning("tritonserver lost port %d to another process; retrying with fresh ports", lost)
            except BaseException:
                self._terminate()
                raise
        raise Unavailable("tritonserver could not bind its ports")  # pragma: no cover - loop returns/raises

    def restart(self, timeout_s: float = 120.0) -> TritonServer:
        """Start a server that died again, on the same ports, loading the start models again (for
        an S3 repository: every model it holds). The dead server's log is kept as
        `tritonserver.log.1`. Raises what `start` raises (Unavailable when a port was taken)."""
        self._terminate(5.0)
        if self.ports:
            self._requested = dict(self.ports)
        if self.log_path.is_file():
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        return self.start(timeout_s)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM the server, wait up to `timeout_s`, then SIGKILL; returns its exit code."""
        rc = self._terminate(timeout_s)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return rc

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def grpc_url(self) -> str:
        return f"{self._url_host()}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"{self._url_host()}:{self.ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._url_host()}:{self.ports['metrics']}/metrics"

    @property
    def admin_headers(self) -> dict[str, str] | None:
        """Headers that unlock model control on this server (None when it is unrestricted)."""
        return admin_headers(self.admin_key)

    def info(self) -> dict:
        """The one-line JSON the service prints once ready: ports, host, pid."""
        return {**self.ports, "host": self.host, "pid": self.pid}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- readiness and model control ---------------------------------------------------------------
    def client(self):
        """A tritonclient gRPC client for this server (created once, reused); it sends the service
        key (the owner may infer), model control adds the admin headers per call."""
        if self._client is None:
            self._client = service_client(self.grpc_url, self.service_key)
        return self._client

    def wait_ready(self, models: Iterable[str] = (), timeout_s: float = 60.0) -> None:
        """Block until the server and every model in `models` report ready.

        Raises Unavailable (with the log tail) if the process exits, DeadlineExceeded on timeout.
        """
        models = list(models)
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                rc = self.process.poll() if self.process else None
                raise Unavailable(
                    f"tritonserver exited (code {rc}) before it was ready; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if self._ready(models):
                return
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"tritonserver not ready within {timeout_s:.0f} s (models {models}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL_S)

    def load(self, model: str, timeout_s: float = 120.0) -> None:
        """Load (or reload) `model` from the repository and wait until it is ready.

        Raises NotFound when a local repository has no such model directory (Triton itself only says
        INTERNAL "failed to poll"), else the mapped Triton error.
        """
        if isinstance(self.repo, Path) and not (self.repo / model / "config.pbtxt").is_file():
            raise NotFound(
                f"model {model!r} is not in repository {self.repo} (models: {', '.join(self.models)})"
            )
        try:
            self.client().load_model(model, headers=self.admin_headers, client_timeout=timeout_s)
        except Exception as exc:
            raise to_bobench_error(exc, f"loading model {model!r} on Triton {self.grpc_url}") from None
        self.wait_ready([model], timeout_s=timeout_s)

    def unload(self, model: str, timeout_s: float = 60.0) -> None:
        """Unload `model` and wait until the server no longer reports it ready."""
        try:
            self.client().unload_model(model, headers=self.admin_headers, client_timeout=timeout_s)
        except Exception as exc:
            raise to_bobench_error(exc, f"unloading model {model!r} on Triton {self.grpc_url}") from None
        deadline = time.monotonic() + timeout_s
        while self._model_ready(model):
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"model {model!r} still ready {timeout_s:.0f} s after unload")
            time.sleep(_POLL_S)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- internals ---------------------------------------------------------------------------------
    def _named_models(self) -> list[str]:
        return [m for m in self.models if m != ALL_MODELS]

    def _url_host(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    def _choose_ports(self) -> None:
        zero = [k for k, v in self._requested.items() if v == 0]
        fresh = dict(zip(zero, probe_free_ports(self.host or "127.0.0.1", len(zero)), strict=True))
        self.ports = {k: fresh.get(k, v) for k, v in self._requested.items()}

    def _port_lost_to_race(self) -> int | None:
        """The probed (not user-fixed) port that tritonserver found taken, if that is why it exited."""
        if self.process is None or self.process.poll() is None:
            return None
        match = _IN_USE.search(self.log_tail())
        if not match:
            return None
        port = int(match.group(1))
        probed = {v for k, v in self.ports.items() if self._requested[k] == 0}
        return port if port in probed else None

    def _command(self, backend_dir: Path) -> list[str]:
        cmd = [
            str(tritonserver_home() / "bin" / "tritonserver"),
            f"--model-repository={self._repository_flag}",
            f"--backend-directory={backend_dir}",
            "--model-control-mode=explicit",
            "--strict-readiness=false",
            "--exit-on-error=false",
            "--exit-timeout-secs=10",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.ports['http']}",
            f"--grpc-port={self.ports['grpc']}",
            f"--metrics-port={self.ports['metrics']}",
            "--allow-metrics=true",
            "--allow-cpu-metrics=true",
            "--metrics-config=summary_latencies=true",
        ]
        cmd += restricted_flags(self.admin_key, self.service_key)
        cmd += [f"--load-model={m}" for m in self.models]
        return cmd + self.extra_args

    def _spawn(self, backend_dir: Path) -> None:
        self._client = None
        with open(self.log_path, "wb") as log_file:  # one attempt per log: stale errors mislead
            self.process = subprocess.Popen(
                self._command(backend_dir),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**server_environment(), **self.s3_env},
                start_new_session=self.new_session,  # default: our caller forwards Ctrl-C, not the tty
            )
        log.debug(
            "started tritonserver pid %d: ports %s, log %s", self.process.pid, self.ports, self.log_path
        )

    def _ready(self, models: list[str]) -> bool:
        try:
            client = self.client()
            if not client.is_server_ready(client_timeout=2.0):
                return False
            return all(client.is_model_ready(m, client_timeout=2.0) for m in models)
        except Exception:  # not listening yet: any transport error means "not ready"
            return False

    def _model_ready(self, model: str) -> bool:
        try:
            return bool(self.client().is_model_ready(model, client_timeout=2.0))
        except Exception:
            return False

    def _terminate(self, timeout_s: float = 15.0) -> int | None:
        proc, self.process = self.process, None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, timeout_s)
                proc.kill()
                proc.wait()
        return proc.returncode
