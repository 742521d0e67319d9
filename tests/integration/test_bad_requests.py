"""Malformed requests against a real Evaluator: each gets the right status code and a message that
names the problem, and the service stays healthy and keeps answering good requests afterwards."""

from __future__ import annotations

import json

import grpc
import pytest
import torch
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bobench.config import Settings
from bobench.results.convert import run_request, to_struct
from bobench.rpc.background import BackgroundServer
from bobench.rpc.evaluator_service import EvaluatorServicer
from bobench.rpc.server import ServiceBinding
from bobench.v1 import common_pb2, evaluator_pb2, evaluator_pb2_grpc

pytestmark = pytest.mark.integration
torch.set_num_threads(1)
MAX_MESSAGE_MB = 1
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-requests")
    servicer = EvaluatorServicer(
        Settings(cache_dir=str(root / "cache"), batch_size=16, threads=1), root / "results"
    )
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    with BackgroundServer([binding], max_message_mb=MAX_MESSAGE_MB) as running:
        yield running.address
    servicer.close()


@pytest.fixture(scope="module")
def stub(address):
    with grpc.insecure_channel(address) as channel:
        yield evaluator_pb2_grpc.EvaluatorStub(channel)


def good() -> common_pb2.RunRequest:
    return run_request("toy", "toy", "knn", {"ks": [5]}, 0)


def _with(**changes) -> common_pb2.RunRequest:
    run = good()
    for path, value in changes.items():
        target = run
        *parents, leaf = path.split("__")
        for p in parents:
            target = getattr(target, p)
        if isinstance(value, struct_pb2.Struct):
            getattr(target, leaf).CopyFrom(value)
        elif value is None:
            target.ClearField(leaf)
        else:
            setattr(target, leaf, value)
    return run


def _struct(d: dict) -> struct_pb2.Struct:
    return to_struct(d)


CASES = [
    ("unknown backbone", _with(backbone__name="resnet9000"), INVALID, "unknown backbone 'resnet9000'"),
    ("empty backbone", _with(backbone__name=""), INVALID, "run.backbone.name"),
    ("missing backbone", _with(backbone=None), INVALID, "run.backbone.name"),
    ("unknown dataset", _with(dataset__registered="imagenet-99k"), INVALID, "unknown dataset 'imagenet-99k'"),
    ("missing dataset", _with(dataset=None), INVALID, "run.dataset"),
    (
        "dataset ref without a ref",
        _with(dataset__name="label-only", dataset__registered=None),
        INVALID,
        "one of registered, ref_json or structured",
    ),
    (
        "ref_json not JSON",
        _with(dataset__ref_json="{type: imagefolder"),
        INVALID,
        "run.dataset.ref_json: not valid JSON",
    ),
    ("ref_json not an object", _with(dataset__ref_json="[1, 2]"), INVALID, "must be a JSON object"),
    (
        "structured ref without type",
        _with(dataset__structured=_struct({"path": "/data"})),
        INVALID,
        "needs a 'type'",
    ),
    (
        "imagefolder that does not exist",
        _with(dataset__ref_json=json.dumps({"type": "imagefolder", "path": "/nonexistent/bob"})),
        INVALID,
        "/nonexistent/bob",
    ),
    ("unknown protocol", _with(protocol__name="knnn"), INVALID, "did you mean 'knn'"),
    ("missing protocol", _with(protocol=None), INVALID, "run.protocol.name"),
    ("bad config key", _with(protocol__config_json='{"kk": 3}'), INVALID, "unknown config key(s) ['kk']"),
    ("config_json not an object", _with(protocol__config_json="3"), INVALID, "run.protocol.config_json"),
    (
        "bad config key in a Struct",
        _with(protocol__config=_struct({"temperatur": 0.1})),
        INVALID,
        "temperatur",
    ),
    ("negative seed", _with(seed=-1), INVALID, "run.seed: must be >= 0"),
    ("negative batch size", _with(batch_size=-32), INVALID, "run.batch_size"),
    ("run key mismatch", _with(expected_run_key="0" * 24), grpc.StatusCode.FAILED_PRECONDITION, "0" * 24),
    (
        "oversized message",
        _with(dataset__ref_json=json.dumps({"type": "manifest", "pad": "x" * (2 << 20)})),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
]


def _first_error(stub, run) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Evaluate(evaluator_pb2.EvaluateRequest(run=run), timeout=30))
    return info.value


@pytest.mark.parametrize(("run", "code", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_evaluate_request_gets_the_right_code_and_message(stub, run, code, message):
    err = _first_error(stub, run)
    assert err.code() == code, err.details()
    assert message in err.details()


def test_request_without_a_run_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Evaluate(evaluator_pb2.EvaluateRequest(), timeout=10))
    assert info.value.code() == INVALID and "run: is required" in info.value.details()


@pytest.mark.parametrize(
    ("run_key", "code"), [("", INVALID), ("ffffffffffffffffffffffff", grpc.StatusCode.NOT_FOUND)]
)
def test_get_result_of_an_empty_or_unknown_key(stub, run_key, code):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetResult(evaluator_pb2.GetResultRequest(run_key=run_key), timeout=10)
    assert info.value.code() == code
    assert "run_key" in info.value.details() or "run key" in info.value.details()


def test_undecodable_bytes_are_rejected_without_killing_the_server(address):
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_stream(
            "/bobench.v1.Evaluator/Evaluate", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as info:
            list(call(b"\xff\xff\xff\xff not a protobuf", timeout=10))
    assert info.value.code() == INVALID and "not a valid message" in info.value.details()


def test_unknown_method_is_unimplemented(address):
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/bobench.v1.Evaluator/Explode", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_service_is_still_healthy_and_answers_a_good_request_after_the_bad_ones(stub, address):
    for _label, run, _code, _message in CASES:  # run them all again, back to back
        _first_error(stub, run)
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="bobench.v1.Evaluator"), timeout=5
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    events = list(stub.Evaluate(evaluator_pb2.EvaluateRequest(run=good()), timeout=60))
    assert events[-1].result.status == common_pb2.RUN_STATUS_FINISHED
    assert events[-1].result.metrics["top1_k5"] >= 0.0
