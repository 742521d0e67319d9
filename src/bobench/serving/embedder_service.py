"""The embedder service: Triton serving a model repository, until SIGTERM/SIGINT.

The repository is a directory or `s3://bucket/prefix` (read by Triton straight from S3 with the
settings' endpoint and credentials). An S3 repository starts with every model it already holds
(`--load-model=*`, so published models come back after a restart; a fresh store: none); new ones
arrive through `bob publish`, which asks Triton to load them. With the setting `triton_admin_key`,
only callers sending that key may load/unload models or register shared memory; with
`triton_service_key`, only callers sending that one may infer or read model metadata.

`serve_embedder(repo, ...)` is the library entry point (`bob serve embedder` and
`python -m bobench.serving.embedder_service` are thin adapters over it). Once the server and every model are
ready it writes ONE line of JSON to `out` (stdout by default) with the ports actually bound, e.g.
`{"grpc": 40123, "http": 40124, "metrics": 40125, "host": "127.0.0.1", "pid": 4242}`, so a parent
process started with port 0 can find it.

The service supervises tritonserver: when it dies (a crash, `kill -9`), it is started again on the
same ports with exponential backoff (`restart_backoff_s` doubling up to `max_restart_backoff_s`, back
to the first delay once a server stayed up `stable_s`), and loads its models again (an S3 repository:
every published model). tritonserver and its python-backend stubs stay in this service's process
group, so `stack down` can stop every one of them by group even after this process was killed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from bobench.exit_codes import report_exit
from bobench.logs import setup_logging
from bobench.serving.triton import TritonServer

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = 1.0
MAX_RESTART_BACKOFF_S = 30.0
STABLE_S = 60.0


def build_repository_for(
    backbones: Sequence[str],
    repo_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    variant: str = "local",
    input_dtype: str = "uint8",
    **repo_options: Any,
) -> list[Path]:
    """Export each backbone to ONNX (cached) and write its repository entry; return the model dirs.

    Uses `bobench.backbones.create_backbone` and `bobench.export.onnx_export.export_cached` (verified
    exports cached under `cache_dir`, so a rebuild reuses them);
    `repo_options` go to `write_model_repository` (max_batch_size, instances, ...). Raises
    InvalidArgument for an unknown backbone name (with close matches).
    """
    from bobench.backbones import create_backbone
    from bobench.export.onnx_export import export_cached
    from bobench.export.triton_repo import write_model_repository

    written = []
    for name in backbones:
        loaded = create_backbone(name, cache_dir=cache_dir)
        report = export_cached(loaded, cache_dir, input_dtype=input_dtype)
        written.append(
            write_model_repository(
                loaded.spec,
                report.path,
                repo_dir,
                variant=variant,
                input_dtype=input_dtype,
                export_report=report.to_dict(),
                **repo_options,
            )
        )
    return written


def serve_embedder(
    repo: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    grpc_port: int = 0,
    http_port: int = 0,
    metrics_port: int = 0,
    models: Sequence[str] | None = None,
    log_dir: str | os.PathLike | None = None,
    ready_timeout_s: float = 180.0,
    out: TextIO | None = None,
    stop_event: threading.Event | None = None,
    settings: Any = None,
    restart: bool = True,
    restart_backoff_s: float = RESTART_BACKOFF_S,
    max_restart_backoff_s: float = MAX_RESTART_BACKOFF_S,
) -> int:
    """Serve `repo` with tritonserver until SIGTERM/SIGINT (or `stop_event`); return an exit code.

    0 after a clean stop; 1 when tritonserver died on its own and `restart` is False (with
    `restart`, it is started again, see the module docstring). Failures of the first start raise
    the bobench error from `TritonServer.start` (Unavailable / DeadlineExceeded) with the server's
    log tail. Signal handlers are installed only when called from the main thread. `settings`
    supplies the S3 endpoint/credentials of an s3:// repository and the `triton_admin_key`.
    """
    stop = stop_event or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    server = TritonServer(
        repo,
        host=host,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_dir=log_dir,
        models=models,
        settings=settings,
        admin_key=getattr(settings, "triton_admin_key", ""),
        service_key=getattr(settings, "triton_service_key", ""),
        new_session=False,  # one process group with this service: stopped together, see above
    )
    try:
        server.start(timeout_s=ready_timeout_s)
        stream = out or sys.stdout
        stream.write(json.dumps(server.info(), sort_keys=True) + "\n")
        stream.flush()
        if not restart:
            while not stop.wait(0.5):
                if not server.alive():
                    log.error("tritonserver exited unexpectedly; log tail:\n%s", server.log_tail())
                    return 1
        else:
            supervise(
                server,
                stop,
                ready_timeout_s=ready_timeout_s,
                backoff_s=restart_backoff_s,
                max_backoff_s=max_restart_backoff_s,
            )
        log.info("stopping tritonserver pid %s", server.pid)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def supervise(
    server: TritonServer,
    stop: threading.Event,
    *,
    ready_timeout_s: float = 180.0,
    backoff_s: float = RESTART_BACKOFF_S,
    max_backoff_s: float = MAX_RESTART_BACKOFF_S,
    stable_s: float = STABLE_S,
    poll_s: float = 0.5,
) -> int:
    """Keep `server` running until `stop` is set: a dead server is restarted on its ports after a
    delay that doubles per restart (capped at `max_backoff_s`, reset once a server lived
    `stable_s`); a failed restart is retried the same way. Returns the number of restarts."""
    from bobench.errors import BobenchError

    delay_s, restarts = backoff_s, 0
    up_since = time.monotonic()
    while not stop.wait(poll_s):
        if server.alive():
            if time.monotonic() - up_since >= stable_s:
                delay_s = backoff_s
            continue
        code = server.process.poll() if server.process is not None else None
        log.error(
            "tritonserver pid %s exited with code %s; restarting it on ports %s in %.1f s; log tail:\n%s",
            server.pid,
            code,
            server.ports,
            delay_s,
            server.log_tail(),
        )
        died_at = time.monotonic()
        while not stop.wait(delay_s):
            delay_s = min(max_backoff_s, delay_s * 2)
            try:
                server.restart(timeout_s=ready_timeout_s)
            except BobenchError as exc:
                log.error(
                    "tritonserver restart failed; next try in %.1f s: %s", delay_s, str(exc).splitlines()[0]
                )
                continue
            restarts += 1
            up_since = time.monotonic()
            log.warning(
                "tritonserver restarted (restart %d): pid %d on ports %s, %.1f s after it died",
                restarts,
                server.pid,
                server.ports,
                up_since - died_at,
            )
            break
    return restarts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bobench.serving.embedder_service",
        description="Serve a bobench Triton model repository with the tritonserver from nvidia-pytriton.",
    )
    add_arguments(p)
    p.add_argument(
        "--config", metavar="FILE", help="settings file (YAML); env BOBENCH_CONFIG"
    )  # `bob`: global
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The service's flags; shared by `python -m bobench.serving.embedder_service` and
    `bob serve embedder`."""
    p.add_argument("--repo", required=True, help="model repository: a directory or s3://bucket/prefix")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--grpc-port", type=int, default=0, help="0 = pick a free port (printed once ready)")
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--metrics-port", type=int, default=0)
    p.add_argument(
        "--models", default=None, help="comma-separated models to load at start (default: all; '*' for S3)"
    )
    p.add_argument("--log-dir", default=None, help="keep tritonserver.log here (default: temporary)")
    p.add_argument("--ready-timeout-s", type=float, default=180.0)
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="exit (code 1) when tritonserver dies instead of restarting it",
    )
    p.add_argument(
        "--restart-backoff-s", type=float, default=RESTART_BACKOFF_S, help="first restart delay; doubles"
    )
    p.add_argument("--build", default=None, help="comma-separated backbones to export into --repo first")
    p.add_argument("--cache-dir", default=None, help="ONNX export cache for --build")
    p.add_argument("--variant", choices=("local", "cluster"), default="local", help="for --build")
    p.add_argument("--input-dtype", choices=("uint8", "float32"), default="uint8", help="for --build")
    p.add_argument("--build-only", action="store_true", help="write the repository and exit")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI adapter: parse `argv`, optionally build the repository, serve until a signal."""
    args = _parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Build the repository if asked, then serve until a signal. The settings (the --config file,
    BOBENCH_*: S3, keys, log level, cache_dir under --cache-dir) are resolved here, once, and passed
    down. The exit code (`bobench.exit_codes`): 2 for a bad flag or setting, 3 when Triton does not
    come up, 1 when it dies unsupervised."""
    from bobench.config import load_settings
    from bobench.errors import BobenchError

    try:
        settings = load_settings(getattr(args, "config", None), cache_dir=args.cache_dir)
    except BobenchError as exc:
        return report_exit(exc, "embedder_service")
    setup_logging(settings.log_level, stream=sys.stderr)
    try:
        if args.build and args.repo.startswith("s3://"):
            from bobench.errors import InvalidArgument

            raise InvalidArgument("--build writes a local repository; publish to S3 with `bob publish`")
        if args.build:
            cache_dir = settings.cache_dir
            names = [n.strip() for n in args.build.split(",") if n.strip()]
            build_repository_for(
                names, args.repo, cache_dir, variant=args.variant, input_dtype=args.input_dtype
            )
            if args.build_only:
                return 0
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        return serve_embedder(
            args.repo,
            host=args.host,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            metrics_port=args.metrics_port,
            models=models,
            log_dir=args.log_dir,
            ready_timeout_s=args.ready_timeout_s,
            settings=settings,
            restart=not args.no_restart,
            restart_backoff_s=args.restart_backoff_s,
        )
    except BobenchError as exc:  # a bad flag or setting: 2; Triton did not come up: 3
        return report_exit(exc, "embedder_service")


if __name__ == "__main__":
    sys.exit(main())
