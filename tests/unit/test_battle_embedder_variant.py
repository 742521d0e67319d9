"""`embedder_variant` in battle specs: validation, the run key of embedding runs (TensorRT fp16
changes the numbers, so it is part of the key; ONNX keeps the keys planned before the field
existed; fine-tuning does not embed, so its key ignores the variant), and the wire format."""

from __future__ import annotations

import pytest

from bobench.battle.executors.grpc import plan_to_request
from bobench.battle.plan import plan_battle
from bobench.battle.spec import parse_spec
from bobench.errors import InvalidArgument
from bobench.rpc import convert

SPEC = {"name": "v", "backbones": ["toy"], "datasets": ["toy"],
        "protocols": ["knn", {"name": "finetune", "config": {"epochs": 1}}]}  # fmt: skip


def _keys(**extra):
    return {p.protocol: p for p in plan_battle(parse_spec({**SPEC, **extra}))}


def test_default_is_onnx_and_unknown_variants_name_the_field():
    assert parse_spec(SPEC).embedder_variant == "onnx"
    assert "embedder_variant" not in parse_spec(SPEC).to_dict()
    with pytest.raises(InvalidArgument, match="embedder_variant: must be one of"):
        parse_spec({**SPEC, "embedder_variant": "int8"})


def test_variant_is_in_the_run_key_of_embedding_runs_only():
    onnx, implicit, trt = _keys(embedder_variant="onnx"), _keys(), _keys(embedder_variant="trt-fp16")
    assert onnx["knn"].run_key == implicit["knn"].run_key  # the default leaves old keys alone
    assert trt["knn"].run_key != onnx["knn"].run_key and trt["knn"].embedder_variant == "trt-fp16"
    assert trt["finetune"].run_key == onnx["finetune"].run_key and trt["finetune"].embedder_variant == "onnx"


def test_variant_travels_in_battle_specs_and_run_requests():
    from bobench.battle.single_run import plan_single_run
    from bobench.rpc.evaluator_service import validate_run_request

    spec = parse_spec({**SPEC, "embedder_variant": "trt-fp32"})
    assert convert.battle_spec_from_proto(convert.battle_spec_to_proto(spec)) == spec
    plan = _keys(embedder_variant="trt-fp32")["knn"]
    request = plan_to_request(plan)
    assert request.embedder_variant == "trt-fp32"
    assert plan_single_run(**validate_run_request(request)).run_key == plan.run_key
    request.embedder_variant = "fp8"
    with pytest.raises(InvalidArgument, match="run.embedder_variant"):
        validate_run_request(request)


def test_the_batch_size_bound_is_this_servers_setting_not_the_default():
    from bobench.config import Settings
    from bobench.rpc.evaluator_service import validate_run_request

    request = plan_to_request(_keys()["knn"], batch_size=100)
    validate_run_request(request)  # within the default bound
    with pytest.raises(InvalidArgument, match=r"run.batch_size: must be 0 \(server default\) to 64"):
        validate_run_request(request, Settings(max_batch_size=64))
