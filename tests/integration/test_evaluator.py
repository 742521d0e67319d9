"""The Evaluator as a real gRPC server on 127.0.0.1:0: client round trips, health, reflection,
metrics, deadlines, and the service process itself (ready line, SIGTERM drain)."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request

import grpc
import pytest
import torch
from doubles import register_sleepy_protocol
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bobench import errors
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.single_run import plan_single_run
from bobench.client import EvaluatorClient
from bobench.config import Settings
from bobench.rpc.background import BackgroundServer
from bobench.rpc.evaluator_service import EvaluatorServicer
from bobench.rpc.server import ServiceBinding
from bobench.v1 import evaluator_pb2_grpc
from services import spawn_evaluator_process

pytestmark = pytest.mark.integration
torch.set_num_threads(1)
KNN = {"ks": [5]}


def _sleepy_protocol() -> str:
    return register_sleepy_protocol()


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluator")
    settings = Settings(cache_dir=str(root / "cache"), batch_size=16, threads=1)
    servicer = EvaluatorServicer(settings, root / "results", max_concurrent_runs=2)
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    with BackgroundServer([binding], metrics_port=0) as running:
        yield running, servicer
    servicer.close()


@pytest.fixture
def client(evaluator):
    running, _ = evaluator
    with EvaluatorClient(running.address, timeout_s=10) as c:
        yield c


def test_remote_evaluate_equals_the_embedded_run(client, settings):
    progress = []
    outcome = client.evaluate(
        "toy", "toy", "knn", KNN, seed=0, rerun=True, progress=lambda d, t, m: progress.append((d, t))
    )
    local = LocalExecutor(settings)
    expected = local.execute(plan_single_run("toy", "toy", "knn", KNN, 0))
    local.close()
    assert outcome.record.status == "finished"
    assert outcome.record.run_key == expected.run_key
    assert outcome.record.metrics == expected.metrics
    assert outcome.record.config == expected.config  # ints stay ints end to end
    assert progress and all(0 <= d <= t for d, t in progress if t)
    assert client.get_result(expected.run_key).metrics == expected.metrics


def test_get_result_of_an_unknown_key_raises_not_found(client):
    with pytest.raises(errors.NotFound, match="NOT_FOUND"):
        client.get_result("deadbeef" * 3)


def test_health_reports_serving_for_the_service_and_overall(evaluator):
    running, _ = evaluator
    with grpc.insecure_channel(running.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "bobench.v1.Evaluator"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_evaluator_health_and_reflection_services(evaluator):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    running, _ = evaluator
    with grpc.insecure_channel(running.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "bobench.v1.Evaluator",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_deadline_stops_the_run_and_records_it_cancelled(client, evaluator):
    _, servicer = evaluator
    name = _sleepy_protocol()
    t0 = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        client.evaluate("toy", "toy", name, {"steps": 300, "step_s": 0.02}, timeout_s=0.8)
    assert time.monotonic() - t0 < 3
    key = plan_single_run("toy", "toy", name, {"steps": 300, "step_s": 0.02}).run_key
    for _ in range(100):
        try:
            record = servicer.results.get(key)
            break
        except errors.NotFound:
            time.sleep(0.05)
    assert record.status == "cancelled" and record.duration_s < 3  # the full run takes 6 s
    assert servicer.results.finished(key) is None


def test_closing_the_stream_early_cancels_the_run(client, evaluator):
    _, servicer = evaluator
    name = _sleepy_protocol()
    events = client.evaluate_events("toy", "toy", name, {"steps": 250, "step_s": 0.02}, seed=1)
    key = next(events).started.run_key
    assert next(events).WhichOneof("event") == "progress"
    events.close()
    for _ in range(100):
        try:
            record = servicer.results.get(key)
            break
        except errors.NotFound:
            time.sleep(0.05)
    assert record.status == "cancelled"


def test_metrics_endpoint_counts_calls_by_code(client, evaluator):
    running, _ = evaluator
    with pytest.raises(errors.InvalidArgument):
        client.evaluate("toy", "toy", "no_such_protocol")
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5).read().decode()
    )
    assert (
        'bobench_rpc_requests_total{code="INVALID_ARGUMENT",method="Evaluate",service="bobench.v1.Evaluator"}'
        in text
    )
    assert "bobench_rpc_latency_seconds_bucket" in text
    assert "bobench_evaluator_runs_total" in text


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_service_process_prints_its_ports_serves_and_drains_on_sigterm(tmp_path):
    proc, ready = spawn_evaluator_process(tmp_path, "--batch-size", "16")
    try:
        assert ready["event"] == "serving" and ready["port"] > 0 and ready["metrics_port"] > 0
        assert ready["services"] == ["bobench.v1.Evaluator"] and ready["pid"] == proc.pid
        with EvaluatorClient(ready["address"], timeout_s=30) as c:
            outcome = c.evaluate("toy", "toy", "knn", KNN)
        assert outcome.record.status == "finished"
        assert (tmp_path / "results" / "results.jsonl").read_text().count(outcome.record.run_key) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        _stop(proc)


class _CrashingEvaluator(evaluator_pb2_grpc.EvaluatorServicer):
    """A servicer with a bug: the interceptor must hide it behind a generic INTERNAL."""

    async def GetResult(self, request, context):
        return 1 / 0


def test_unexpected_errors_become_internal_with_a_generic_message(caplog):
    from bobench.rpc.interceptors import INTERNAL_MESSAGE

    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, _CrashingEvaluator())
    with BackgroundServer([binding]) as running, EvaluatorClient(running.address) as c:
        with pytest.raises(errors.BobenchError) as info:
            c.get_result("a" * 24)
    assert "INTERNAL" in str(info.value) and INTERNAL_MESSAGE in str(info.value)
    assert "ZeroDivisionError" not in str(info.value)
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)
