"""Proto <-> domain conversions: lossless records, Struct number typing, specs, error codes."""

from __future__ import annotations

import grpc
import pytest

from bobench import errors
from bobench.battle.executors.grpc import plan_to_request
from bobench.battle.spec import parse_spec
from bobench.results import RunRecord
from bobench.results.convert import (
    STATUS_FROM_PROTO,
    STATUS_TO_PROTO,
    dataset_ref_to_proto,
    record_to_result,
    result_to_record,
    to_struct,
)
from bobench.rpc import convert
from bobench.rpc.interceptors import split_method
from bobench.status_codes import status_for
from bobench.v1 import common_pb2


def _record(**changes) -> RunRecord:
    base = dict(
        run_key="a" * 24,
        backbone="toy",
        dataset="toy",
        protocol="knn",
        protocol_version="1",
        task="classification",
        config={"ks": [5, 10], "temperature": 0.07},
        seed=3,
        status="finished",
        metrics={"top1_k5": 0.5, "n_test": 16, "top5_k5": None, "per_class": [0.1, 0.9]},
        higher_is_better={"top1_k5": True},
        primary_metric="top1_k5",
        backbone_info={"family": "cnn"},
        dataset_fingerprint="f" * 16,
        environment={"runtime": "torch", "threads": 1},
        started_at="2025-01-02T03:04:05.678+00:00",
        finished_at="2025-01-02T03:04:06.000+00:00",
        duration_s=0.322,
        battle="b1",
    )
    base.update(changes)
    return RunRecord(**base)


def test_record_round_trips_exactly_through_record_json():
    record = _record()
    assert result_to_record(record_to_result(record)) == record


def test_typed_fields_alone_rebuild_the_record_with_ints_and_nulls():
    result = record_to_result(_record())
    assert dict(result.metrics) == {"top1_k5": 0.5, "n_test": 16.0}  # scalars only
    result.record_json = ""
    rebuilt = result_to_record(result)
    assert rebuilt == _record()  # ints come back as ints, None stays None, timestamps keep ms


def test_status_values_map_both_ways_and_cancelled_is_not_finished():
    for status, value in STATUS_TO_PROTO.items():
        assert STATUS_FROM_PROTO[value] == status
    result = record_to_result(_record(status="cancelled", metrics={}))
    assert result.status == common_pb2.RUN_STATUS_CANCELLED
    assert not result_to_record(result).finished


def test_struct_numbers_follow_the_protocol_defaults():
    msg = common_pb2.ProtocolConfig(name="knn", config=to_struct({"ks": [5], "temperature": 1}))
    config = convert.protocol_config_from_proto(msg, "run.protocol")
    assert config == {"ks": [5], "temperature": 1.0}
    assert isinstance(config["ks"][0], int) and isinstance(config["temperature"], float)


def test_config_json_keeps_types_exactly_and_bad_json_names_the_field():
    msg = common_pb2.ProtocolConfig(name="knn", config_json='{"temperature": 1, "ks": [5]}')
    assert convert.protocol_config_from_proto(msg, "run.protocol") == {"temperature": 1, "ks": [5]}
    with pytest.raises(errors.InvalidArgument, match=r"run.protocol.config_json: not valid JSON"):
        convert.protocol_config_from_proto(
            common_pb2.ProtocolConfig(name="knn", config_json="{"), "run.protocol"
        )


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("toy", "toy"),
        ({"type": "imagefolder", "path": "/d"}, {"type": "imagefolder", "path": "/d"}),
        ({"name": "toy", "per_class": 5}, {"name": "toy", "per_class": 5}),
    ],
)
def test_dataset_refs_round_trip(ref, expected):
    msg = dataset_ref_to_proto(ref, "label")
    assert convert.dataset_ref_from_proto(msg, "run.dataset") == (expected, "label")


def test_battle_spec_round_trips_through_the_proto():
    spec = parse_spec(
        {
            "name": "b",
            "backbones": ["toy"],
            "datasets": ["toy", {"name": "t5", "ref": {"name": "toy", "per_class": 5}}],
            "protocols": [{"name": "knn", "config": {"ks": [5]}, "datasets": ["toy"]}, "linear_probe"],
            "seeds": [0, 2],
            "embedder": "torch",
            "settings": {"batch_size": 8},
        }
    )
    assert convert.battle_spec_from_proto(convert.battle_spec_to_proto(spec)) == spec


def test_plan_to_request_carries_the_run_key_and_exact_config():
    from bobench.battle.single_run import plan_single_run

    plan = plan_single_run("toy", "toy", "knn", {"ks": [5]}, 2, battle_id="b7")
    request = plan_to_request(plan)
    assert request.expected_run_key == plan.run_key and request.battle_id == "b7" and request.seed == 2
    assert convert.protocol_config_from_proto(request.protocol, "p") == plan.config


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Cancelled("x"), grpc.StatusCode.CANCELLED),
        (errors.BobenchError("x"), grpc.StatusCode.INTERNAL),
        (ZeroDivisionError(), grpc.StatusCode.INTERNAL),
    ],
)
def test_error_classes_map_to_status_codes(exc, code):
    assert status_for(exc) is code


def test_split_method_names_service_and_method():
    assert split_method("/bobench.v1.Evaluator/Evaluate") == ("bobench.v1.Evaluator", "Evaluate")


def test_protocol_backbone_filters_and_custom_backbones_survive_the_proto():
    from bobench.battle.plan import plan_battle

    spec = parse_spec(
        {
            "name": "filters",
            "backbones": [
                "toy",
                {"name": "wire-net", "source": "timm", "model_id": "resnet18", "weights": "random",
                 "crop_pct": 1, "mean": [0, 0.5, 1], "std": [1, 1, 1]},
            ],
            "datasets": ["toy"],
            "protocols": ["knn", {"name": "linear_probe", "backbones": ["toy"]}],
        }
    )  # fmt: skip
    back = convert.battle_spec_from_proto(convert.battle_spec_to_proto(spec))
    assert back.to_dict() == spec.to_dict()
    assert back.protocols[1].backbones == ("toy",)
    local, remote = plan_battle(spec), plan_battle(back)
    assert [p.run_key for p in remote] == [p.run_key for p in local]  # same keys on both sides
    assert len(local) == 3  # knn x 2 backbones + linear probe for toy only


def test_custom_backbone_not_listed_in_backbones_is_rejected():
    msg = convert.battle_spec_to_proto(parse_spec({"name": "x", "backbones": ["toy"], "datasets": ["toy"],
                                                   "protocols": ["knn"]}))  # fmt: skip
    msg.custom_backbones.add().update({"name": "ghost", "source": "timm", "model_id": "resnet18"})
    with pytest.raises(errors.InvalidArgument, match="ghost"):
        convert.battle_spec_from_proto(msg)
