"""Evaluator readiness follows its embedder: a real evaluator process with `--embedder triton` and the
real `tritonserver` (nvidia-pytriton). Health of `bobench.v1.Evaluator` is SERVING only while Triton
is live; the overall "" service (liveness) stays SERVING through a Triton outage."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bobench.stack.procs import stop_pid
from services import spawn_evaluator_process

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BOUND_S = 30.0  # the check runs every 0.5 s here; the bound only keeps a broken build from hanging


def start_triton(tmp_path, name: str, grpc_port: int = 0):
    from bobench.errors import Unavailable
    from bobench.serving.triton import TritonServer, tritonserver_home

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    repo = tmp_path / "empty-repo"
    repo.mkdir(exist_ok=True)
    return TritonServer(repo, grpc_port=grpc_port, log_dir=tmp_path / name, models=[]).start(timeout_s=120)


def wait_status(stub, service: str, want: int) -> int:
    deadline = time.monotonic() + BOUND_S
    status = None
    while time.monotonic() < deadline:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        if status == want:
            return status
        time.sleep(0.2)
    return status


def test_evaluator_is_ready_only_while_triton_is_live(tmp_path):
    triton = start_triton(tmp_path, "triton-1")
    port = triton.ports["grpc"]
    proc, ready = spawn_evaluator_process(
        tmp_path, "--embedder", "triton", "--triton-url", triton.grpc_url, "--readiness-interval-s", "0.5"
    )
    channel = grpc.insecure_channel(ready["address"])
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        assert wait_status(stub, "bobench.v1.Evaluator", SERVING) == SERVING
        triton.stop()
        assert wait_status(stub, "bobench.v1.Evaluator", NOT_SERVING) == NOT_SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == SERVING
        assert proc.poll() is None  # an embedder outage is not a reason to exit
        triton = start_triton(tmp_path, "triton-2", grpc_port=port)
        assert wait_status(stub, "bobench.v1.Evaluator", SERVING) == SERVING
    finally:
        channel.close()
        stop_pid(proc.pid)
        triton.stop()


def test_evaluator_without_triton_starts_not_ready_but_live(tmp_path):
    import socket

    with socket.socket() as s:  # a Triton address where nothing listens
        s.bind(("127.0.0.1", 0))
        url = f"127.0.0.1:{s.getsockname()[1]}"
        proc, ready = spawn_evaluator_process(
            tmp_path, "--embedder", "triton", "--triton-url", url, "--readiness-interval-s", "0.5"
        )
        channel = grpc.insecure_channel(ready["address"])
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            assert stub.Check(
                health_pb2.HealthCheckRequest(service="bobench.v1.Evaluator"), timeout=5
            ).status == (NOT_SERVING)
            assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == SERVING
        finally:
            channel.close()
            stop_pid(proc.pid)
