"""The embedder service supervises tritonserver, and the Triton client survives a dead server.

Real processes: `python -m bobench.serving.embedder_service` started the way the stack starts it (its own
session), the real tritonserver and its python-backend stubs, SIGKILLed by the test.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bobench.stack.procs import group_members, pid_alive, process_start_ticks, spawn, stop_group, wait_until

pytestmark = [pytest.mark.integration]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _tritons(pgid: int) -> list[int]:
    return [p for p in group_members(pgid) if "bin/tritonserver" in _cmdline(p)]


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _start_embedder_service(repo: Path, log_dir: Path):
    out = log_dir / "embedder.out"
    proc = spawn(
        [sys.executable, "-m", "bobench.serving.embedder_service", "--repo", str(repo), "--models", "toy",
         "--log-dir", str(log_dir / "triton"), "--restart-backoff-s", "0.2"],
        log_dir / "embedder.log",
        stdout_path=out,
    )  # fmt: skip
    info: dict = {}

    def ready() -> bool:
        info.update(json.loads(out.read_text().splitlines()[0]))
        return True

    wait_until(ready, proc, "embedder", log_dir / "embedder.log", timeout_s=180)
    return proc, info


def test_killed_tritonserver_comes_back_on_its_port_and_down_stops_it_after_the_service_died(
    triton_toy, tmp_path
):
    from bobench.embed import make_embedder

    proc, info = _start_embedder_service(triton_toy["repo"], tmp_path)
    ticks = process_start_ticks(proc.pid)
    emb = None
    try:
        assert _tritons(proc.pid) == [info["pid"]]  # tritonserver runs in the service's group
        emb = make_embedder("triton", "toy", url=f"127.0.0.1:{info['grpc']}", batch_size=8)
        before = emb.embed(_images(6))
        killed_at = time.monotonic()
        os.kill(info["pid"], signal.SIGKILL)
        after = emb.embed(_images(6))  # the same embedder: new channel, retried until Triton is back
        recovered_s = time.monotonic() - killed_at
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
        assert emb.reconnects >= 1
        (restarted,) = _tritons(proc.pid)
        assert restarted != info["pid"]
        log_path = tmp_path / "embedder.log"  # the service logs once its own readiness poll saw it
        wait_until(
            lambda: "tritonserver restarted (restart 1)" in log_path.read_text(), proc, "log", log_path, 30
        )
        assert f"--grpc-port={info['grpc']}" in _cmdline(restarted)
        print(f"embedder recovered {recovered_s:.1f} s after SIGKILL of tritonserver")
        stubs = [p for p in group_members(proc.pid) if "triton_python_backend_stub" in _cmdline(p)]
        assert stubs  # the python backend's stub for `toy` is in the group too
        os.kill(proc.pid, signal.SIGKILL)  # the supervisor dies: tritonserver and stubs stay behind
        proc.wait(10)
        assert _tritons(proc.pid) == [restarted]
        assert stop_group(proc.pid, ticks, timeout_s=5)
        assert group_members(proc.pid) == []
        assert not any(pid_alive(p) for p in (restarted, *stubs))
    finally:
        if emb is not None:
            emb.close()
        stop_group(proc.pid, ticks or 0, timeout_s=5)
        proc.wait(10)


def test_stop_group_leaves_a_reused_pid_alone(tmp_path):
    """A recorded PID that now belongs to another process (another start time) is not signalled."""
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleeper.log")
    try:
        ticks = process_start_ticks(proc.pid)
        assert not stop_group(proc.pid, ticks - 1, timeout_s=1)
        assert proc.poll() is None
        assert stop_group(proc.pid, ticks, timeout_s=5)
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_a_closed_channel_is_replaced_instead_of_failing_every_later_call(triton_toy):
    """The evaluator's "Cannot invoke RPC on closed channel!": the embedder makes a fresh client."""
    from bobench.embed.triton_embedder import TritonEmbedder

    emb = TritonEmbedder("toy", url=triton_toy["server"].grpc_url, batch_size=4, concurrency=2)
    try:
        before = emb.embed(_images(8))
        emb.client.close()
        np.testing.assert_allclose(emb.embed(_images(8)), before, rtol=1e-5, atol=1e-6)
        assert emb.reconnects == 1  # one fresh client, however many threads saw the closed one
    finally:
        emb.close()


def test_an_unreachable_triton_is_a_transient_error_after_the_retry_window():
    import socket

    from bobench.embed.triton_embedder import TritonEmbedder
    from bobench.errors import Unavailable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unavailable, match=r"unreachable for .* reconnects"):
        TritonEmbedder("toy", url=f"127.0.0.1:{port}", retries=1, backoff_s=0.05, retry_window_s=0.5)
