"""The Evaluator servicer under grpc_testing: streaming, reuse, GetResult, error codes, cancellation."""

from __future__ import annotations

import json
import time

import grpc
import pytest
import torch

from bobench.battle.executors.local import LocalExecutor
from bobench.battle.single_run import plan_single_run
from bobench.results.convert import result_to_record, run_request
from bobench.rpc.evaluator_service import EvaluatorServicer
from bobench.v1 import common_pb2, evaluator_pb2

torch.set_num_threads(1)
SERVICE = evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"]
EVALUATE = SERVICE.methods_by_name["Evaluate"]
GET_RESULT = SERVICE.methods_by_name["GetResult"]
KNN = {"ks": [5]}


@pytest.fixture
def servicer(settings, tmp_path):
    s = EvaluatorServicer(settings, tmp_path / "results", max_concurrent_runs=1)
    yield s
    s.close()


@pytest.fixture
def server(servicer, testing_server):
    return testing_server(SERVICE, servicer)


def _evaluate(server, run: common_pb2.RunRequest, timeout_s: float | None = 60):
    rpc = server.invoke_unary_stream(EVALUATE, (), evaluator_pb2.EvaluateRequest(run=run), timeout_s)
    events = []
    while True:
        try:
            events.append(rpc.take_response())
        except ValueError:  # grpc_testing: no more responses
            break
    _metadata, code, details = rpc.termination()
    return events, code, details


def _knn_request(**options) -> common_pb2.RunRequest:
    return run_request("toy", "toy", "knn", KNN, 0, **options)


def test_evaluate_streams_started_progress_then_the_same_result_as_the_local_executor(server, settings):
    events, code, _ = _evaluate(server, _knn_request())
    assert code is grpc.StatusCode.OK
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "result" and "progress" in kinds
    assert kinds.count("result") == 1
    result = events[-1].result
    assert result.status == common_pb2.RUN_STATUS_FINISHED
    assert result.run_key == events[0].started.run_key
    # Reference: the same run in process, with a separate cache.
    local = LocalExecutor(
        settings.__class__(cache_dir=settings.cache_dir + "-local", batch_size=16, threads=1)
    )
    expected = local.execute(plan_single_run("toy", "toy", "knn", KNN, 0))
    local.close()
    assert result.run_key == expected.run_key
    record = result_to_record(result)
    assert record.metrics == expected.metrics
    assert dict(result.metrics)["top1_k5"] == pytest.approx(expected.metrics["top1_k5"])


def test_second_evaluate_reuses_the_stored_result_and_rerun_executes_again(server, servicer):
    _evaluate(server, _knn_request())
    executions = sum(ex.executions for ex in servicer.pool._all)
    events, code, _ = _evaluate(server, _knn_request())
    assert code is grpc.StatusCode.OK and events[0].started.reused
    assert sum(ex.executions for ex in servicer.pool._all) == executions
    events, _, _ = _evaluate(server, _knn_request(rerun=True))
    assert not events[0].started.reused
    assert sum(ex.executions for ex in servicer.pool._all) == executions + 1


def test_get_result_returns_the_stored_record_and_not_found_for_unknown_keys(server):
    events, _, _ = _evaluate(server, _knn_request())
    key = events[-1].result.run_key
    rpc = server.invoke_unary_unary(GET_RESULT, (), evaluator_pb2.GetResultRequest(run_key=key), 10)
    response, _, code, _ = rpc.termination()
    assert code is grpc.StatusCode.OK and response.run_key == key
    assert json.loads(response.record_json)["status"] == "finished"
    rpc = server.invoke_unary_unary(GET_RESULT, (), evaluator_pb2.GetResultRequest(run_key="0" * 24), 10)
    _, _, code, details = rpc.termination()
    assert code is grpc.StatusCode.NOT_FOUND and "0" * 24 in details


@pytest.mark.parametrize(
    ("request_options", "field"),
    [
        ({"backbone": "no_such_backbone"}, "backbone"),
        ({"dataset": "no_such_dataset"}, "dataset"),
        ({"protocol": "no_such_protocol"}, "protocol"),
        ({"config": {"bogus": 1}}, "bogus"),
        ({"seed": -3}, "seed"),
        ({"batch_size": -8}, "batch_size"),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(server, request_options, field):
    args = {"backbone": "toy", "dataset": "toy", "protocol": "knn", "config": KNN, "seed": 0}
    options = {k: request_options.pop(k) for k in list(request_options) if k in ("batch_size",)}
    args.update(request_options)
    run = run_request(args.pop("backbone"), args.pop("dataset"), args.pop("protocol"), **args, **options)
    _events, code, details = _evaluate(server, run)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in details


def test_mismatched_expected_run_key_is_failed_precondition(server):
    _events, code, details = _evaluate(server, _knn_request(expected_run_key="f" * 24))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "f" * 24 in details


def test_cancelled_call_is_stored_as_cancelled_never_finished(server, servicer, sleepy_protocol):
    run = run_request("toy", "toy", sleepy_protocol, {"steps": 200, "step_s": 0.02}, 0)
    rpc = server.invoke_unary_stream(EVALUATE, (), evaluator_pb2.EvaluateRequest(run=run), 60)
    key = rpc.take_response().started.run_key
    assert rpc.take_response().WhichOneof("event") == "progress"
    rpc.cancel()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            record = servicer.results.get(key)
            break
        except KeyError:
            time.sleep(0.05)
    else:
        pytest.fail("the cancelled run was never recorded")
    assert record.status == "cancelled" and record.metrics == {}
    assert record.duration_s < 3.5  # stopped early: the full run takes 200 x 20 ms = 4 s
    assert servicer.results.finished(key) is None
