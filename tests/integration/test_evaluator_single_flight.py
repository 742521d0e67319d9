"""The evaluator over real gRPC on loopback: one execution per run key however many callers ask
(single-flight), a stopped re-run never hides a finished result, and the per-run time limit."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bobench import errors
from bobench.client import EvaluatorClient
from bobench.config import Settings
from bobench.rpc.background import BackgroundServer
from bobench.rpc.evaluator_service import EvaluatorServicer
from bobench.rpc.server import ServiceBinding
from bobench.v1 import evaluator_pb2_grpc

pytestmark = pytest.mark.integration

COUNTED = "test_h4_counted"
EXECUTIONS: list[dict] = []  # one entry per time the protocol really ran
SLOW = threading.Event()  # while set, each step sleeps 0.2 s (same config, same run key)


def _register_counted_protocol() -> str:
    from bobench.protocols.base import PROTOCOLS, Protocol, register_protocol

    if COUNTED not in PROTOCOLS:

        def evaluate(ctx, config, seed):
            EXECUTIONS.append(dict(config))
            for i in range(config["steps"]):
                ctx.progress(i + 1, config["steps"], "counting")
                time.sleep(0.2 if SLOW.is_set() else config["step_s"])
            return {"steps_done": float(config["steps"]), "tag": float(config["tag"])}

        register_protocol(
            Protocol(
                name=COUNTED,
                version="1",
                task="classification",
                evaluate=evaluate,
                defaults={"steps": 20, "step_s": 0.05, "tag": 0},
                primary_metric="steps_done",
                higher_is_better={"steps_done": True},
                needs_features=False,
            )
        )
    return COUNTED


def _serve(root, max_concurrent_runs=4, **settings):
    settings = Settings(cache_dir=str(root / "cache"), batch_size=16, threads=1, **settings)
    servicer = EvaluatorServicer(settings, root / "results", max_concurrent_runs=max_concurrent_runs)
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    return BackgroundServer([binding]), servicer


@pytest.fixture
def evaluator(tmp_path):
    _register_counted_protocol()
    server, servicer = _serve(tmp_path)
    running = server.start()
    yield running, servicer
    server.stop()
    servicer.close()


def test_concurrent_calls_for_one_new_run_key_execute_it_once(evaluator):
    running, servicer = evaluator
    config = {"steps": 20, "step_s": 0.05, "tag": 1}
    outcomes: list = []

    def call() -> None:
        with EvaluatorClient(running.address, timeout_s=60) as client:
            outcomes.append(client.evaluate("toy", "toy", COUNTED, config))

    before = len(EXECUTIONS)
    callers = [threading.Thread(target=call) for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert len(outcomes) == 4 and all(o.record.finished for o in outcomes)
    assert len({o.record.run_key for o in outcomes}) == 1
    assert len({o.record.finished_at for o in outcomes}) == 1  # one record, shared
    assert len(EXECUTIONS) - before == 1  # the protocol ran once for the four callers
    assert servicer.results.attempts == 1


def test_one_caller_leaving_does_not_stop_the_run_the_others_wait_for(evaluator):
    running, _ = evaluator
    config = {"steps": 30, "step_s": 0.05, "tag": 2}
    with EvaluatorClient(running.address, timeout_s=60) as client:
        leaver = client.evaluate_events("toy", "toy", COUNTED, config)
        next(leaver)  # started: the run is in flight for this caller
        waiter: list = []
        t = threading.Thread(target=lambda: waiter.append(client.evaluate("toy", "toy", COUNTED, config)))
        t.start()
        time.sleep(0.3)
        leaver.close()  # cancels its call; the other caller still waits
        t.join(60)
    assert waiter and waiter[0].record.finished


def _lines(servicer) -> list[dict]:
    path = servicer.results.directory / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def test_a_rerun_stopped_by_its_deadline_never_hides_the_finished_result(evaluator):
    running, servicer = evaluator
    config = {"steps": 10, "step_s": 0.01, "tag": 3}
    with EvaluatorClient(running.address, timeout_s=60) as client:
        first = client.evaluate("toy", "toy", COUNTED, config)
        assert first.record.finished
        SLOW.set()
        try:
            with pytest.raises(errors.DeadlineExceeded):
                client.evaluate("toy", "toy", COUNTED, config, rerun=True, timeout_s=1.5)
            key = first.record.run_key
            deadline = time.monotonic() + 10
            while len(_lines(servicer)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # the stopped attempt is recorded once its worker returns
        finally:
            SLOW.clear()
        assert [d["status"] for d in _lines(servicer)] == ["finished", "cancelled"]  # kept beside it
        answer = client.get_result(key)
        assert answer.status == "finished" and answer.finished_at == first.record.finished_at
        again = client.evaluate("toy", "toy", COUNTED, config)
        assert again.reused and again.record.finished


def test_a_run_past_the_time_limit_fails_with_deadline_exceeded_and_frees_the_slot(tmp_path):
    _register_counted_protocol()
    server, servicer = _serve(tmp_path, max_concurrent_runs=1, max_run_s=1)
    with server as running, EvaluatorClient(running.address, timeout_s=60) as client:
        t0 = time.monotonic()
        outcome = client.evaluate("toy", "toy", COUNTED, {"steps": 600, "step_s": 0.05, "tag": 4})
        took_s = time.monotonic() - t0
        assert outcome.record.status == "failed"
        assert outcome.record.error.startswith("DeadlineExceeded") and "time limit" in outcome.record.error
        after = client.evaluate("toy", "toy", COUNTED, {"steps": 2, "step_s": 0.0, "tag": 5})
        assert after.record.finished  # the only slot is free again
    servicer.close()
    print(f"time limit 1 s: the 30 s run ended after {took_s:.2f} s")
