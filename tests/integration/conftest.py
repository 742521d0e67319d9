"""Fixtures that start real servers for the integration tier and stop them by PID.

Generic pieces (`stop_pid`, `pid_reaper`) serve any server a test starts; the Triton fixtures start the
real `tritonserver` from nvidia-pytriton on a repository generated for the `toy` backbone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own zombie children
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall back to a signal-0 probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM `pid`, wait up to `timeout_s` for it to exit, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            _alive(pid)
            return
        time.sleep(0.05)


@pytest.fixture
def pid_reaper():
    """`pid_reaper(pid)` registers a process to be stopped (SIGTERM, then SIGKILL) after the test."""
    pids: list[int] = []
    yield pids.append
    for pid in reversed(pids):
        stop_pid(pid)


@pytest.fixture(scope="session")
def triton_toy(tmp_path_factory):
    """A running tritonserver serving `toy` (uint8 input) and `toy_f32` (float32 input), local variant.

    Yields a dict: server (TritonServer), repo, cache_dir, spec, onnx_path (the uint8 export).
    Skips when the tritonserver binary (nvidia-pytriton) is not installed.
    """
    from bobench.errors import Unavailable
    from bobench.serving.triton import TritonServer, tritonserver_home

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    import torch

    torch.set_num_threads(1)
    from bobench.export.triton_repo import read_model_metadata
    from bobench.serving.embedder_service import build_repository_for

    root = tmp_path_factory.mktemp("triton")
    repo, cache = root / "repo", root / "cache"
    options = {"max_batch_size": 32, "preferred_batch_sizes": (4, 8, 16), "intra_op_threads": 1}
    (toy_dir,) = build_repository_for(["toy"], repo, cache, **options)
    build_repository_for(["toy"], repo, cache, input_dtype="float32", model_name="toy_f32", **options)
    meta = read_model_metadata(toy_dir)
    server = TritonServer(repo, log_dir=root / "log")
    server.start(timeout_s=120)
    pid = server.pid
    try:
        yield {
            "server": server,
            "repo": repo,
            "cache_dir": cache,
            "spec_dict": meta["spec"],
            "onnx_path": toy_dir / "1" / "model.onnx",
        }
    finally:
        server.stop()
        stop_pid(pid)


# SeaweedFS S3 fixtures (engineer G2): seaweedfs, s3_settings
from s3_fixtures import s3_settings, seaweedfs  # noqa: E402,F401
