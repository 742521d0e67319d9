"""A backbone's identity covers everything it loads, and records say the same about it either way.

Issue 9: an ONNX model saved with external data was fingerprinted by `model.onnx` alone (re-exported
weights reused old features under the same run key); an unquoted all-digit `weights_sha256` skipped
the check; records built from cached features lost `weights_sha256` and `num_params`.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from bobench.backbones import create_backbone
from bobench.backbones.spec import BackboneSpec
from bobench.backbones.weights import weights_digest
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.plan import plan_battle
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.hashing import sha256_file

SIZE, DIM = 8, 4


def _export(path, seed: int, external: bool = True) -> None:
    """A tiny network (flatten -> matmul) saved the way torch's exporter does: weights in model.onnx.data."""
    weight = np.random.default_rng(seed).standard_normal((3 * SIZE * SIZE, DIM)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", DIM])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        (path.parent / (path.name + ".data")).unlink(missing_ok=True)  # onnx appends to an existing one
        onnx.save_model(
            model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0
        )
    else:
        onnx.save_model(model, str(path))


def _entry(path, name: str = "tiny-ext") -> dict:
    return {"name": name, "source": "onnx", "model_id": str(path), "weights": str(path),
            "input_size": SIZE, "embed_dim": DIM, "mean": [0.5] * 3, "std": [0.5] * 3}  # fmt: skip


def _spec(path, name: str = "tiny-ext") -> BackboneSpec:
    return BackboneSpec.from_dict(
        {**_entry(path, name), "family": "cnn", "pretraining_method": "other", "pretraining_data": "x"}
    )


def test_the_digest_of_an_onnx_model_covers_its_external_data(tmp_path):
    path = tmp_path / "model.onnx"
    _export(path, seed=0)
    graph_sha, first = sha256_file(path), weights_digest(_spec(path))
    _export(path, seed=1)  # re-exported weights: model.onnx itself is byte-identical
    assert sha256_file(path) == graph_sha
    assert weights_digest(_spec(path)) != first
    data = {"model.onnx": graph_sha, "model.onnx.data": sha256_file(tmp_path / "model.onnx.data")}
    assert (
        weights_digest(_spec(path)) == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    )


def test_a_single_file_onnx_model_keeps_its_plain_file_digest(tmp_path):
    path = tmp_path / "one.onnx"
    _export(path, seed=0, external=False)
    assert weights_digest(_spec(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_sha256_protects_an_onnx_model_with_external_data(tmp_path):
    path = tmp_path / "model.onnx"
    _export(path, seed=0)
    spec = _spec(path)
    declared = weights_digest(spec)
    loaded = create_backbone(spec.replace(weights_sha256=declared), cache_dir=tmp_path / "cache")
    assert loaded.spec.weights_sha256 == declared
    _export(path, seed=1)
    with pytest.raises(InvalidArgument, match="declares weights_sha256"):
        create_backbone(spec.replace(weights_sha256=declared), cache_dir=tmp_path / "cache")


def test_re_exported_external_weights_change_the_run_key_and_the_features(tmp_path):
    path = tmp_path / "model.onnx"
    battle = {"backbones": [_entry(path, "tiny-rekey")], "datasets": ["toy"],
              "protocols": [{"name": "knn", "config": {"ks": [5]}}]}  # fmt: skip
    _export(path, seed=0)
    (before,) = plan_battle(parse_spec(battle))
    executor = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache"), threads=1))
    first = executor.execute(before)
    _export(path, seed=1)
    (after,) = plan_battle(parse_spec(battle))
    assert after.run_key != before.run_key
    second = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache"), threads=1)).execute(after)
    assert first.finished and second.finished, (first.error, second.error)
    assert first.backbone_info["weights_sha256"] != second.backbone_info["weights_sha256"]


DIGITS = "1" * 64


def test_an_unquoted_all_digit_weights_sha256_is_refused_naming_the_field():
    text = f"backbones:\n- name: r\n  source: timm\n  model_id: resnet18\n  weights_sha256: {DIGITS}\n"
    data = {**yaml.safe_load(text), "datasets": ["toy"], "protocols": ["knn"]}
    assert isinstance(data["backbones"][0]["weights_sha256"], int)
    with pytest.raises(InvalidArgument, match=r"backbones\[0\]\.weights_sha256.*quote"):
        parse_spec(data)
    quoted = parse_spec({**data, "backbones": [{**data["backbones"][0], "weights_sha256": DIGITS}]})
    assert quoted.custom_backbones[0]["weights_sha256"] == DIGITS


@pytest.mark.parametrize("bad", [int(DIGITS), 12.5, ["ab"], "not-hex", "ab" * 16])
def test_a_non_string_or_malformed_digest_is_refused_by_specs_and_the_factory(bad, tmp_path):
    fields = {"name": "d", "source": "toy", "model_id": "toy", "family": "cnn",
              "pretraining_method": "random", "pretraining_data": "none", "weights": str(tmp_path / "w.pth")}  # fmt: skip
    with pytest.raises(InvalidArgument, match="weights_sha256"):
        BackboneSpec.from_dict({**fields, "weights_sha256": bad})
    with pytest.raises(InvalidArgument, match="weights_sha256"):
        create_backbone(BackboneSpec(**fields).replace(weights_sha256=bad), cache_dir=tmp_path)


def _knn_run(entry: dict):
    (plan,) = plan_battle(
        parse_spec(
            {"backbones": [entry], "datasets": ["toy"], "protocols": [{"name": "knn", "config": {"ks": [5]}}]}
        )
    )
    return plan


@pytest.mark.parametrize("backbone", ["user-onnx", "toy"])
def test_a_record_is_the_same_whether_its_features_came_from_the_cache_or_not(tmp_path, backbone):
    path = tmp_path / "model.onnx"
    _export(path, seed=0)
    plan = _knn_run(_entry(path, "tiny-record") if backbone == "user-onnx" else "toy")
    computed = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache"), threads=1))
    fresh = computed.execute(plan)
    cached_executor = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache"), threads=1))
    cached = cached_executor.execute(plan)
    assert cached_executor._embedder is None and cached_executor.cache.hits > 0  # really from the cache
    assert fresh.finished and cached.finished
    assert cached.backbone_info == fresh.backbone_info
    assert fresh.backbone_info["num_params"] and fresh.backbone_info["weights_sha256"]
    if backbone == "user-onnx":
        assert fresh.backbone_info["num_params"] == 3 * SIZE * SIZE * DIM
        assert fresh.backbone_info["weights_sha256"] == weights_digest(_spec(path, "tiny-record"))


def test_a_record_measures_a_backbone_whose_facts_were_never_stored(tmp_path):
    """A cache filled before facts were kept (or by another process) still yields full records."""
    plan = _knn_run("toy")
    fresh = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache"), threads=1)).execute(plan)
    for facts in (tmp_path / "cache" / "backbones").glob("*.json"):
        facts.unlink()
    cached = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache"), threads=1)).execute(plan)
    assert cached.backbone_info == fresh.backbone_info


def test_a_backbone_that_cannot_be_measured_keeps_its_spec_and_is_tried_once(tmp_path):
    from bobench.backbones import get_spec
    from bobench.battle.backbone_facts import BackboneFacts
    from bobench.errors import Unavailable

    calls = []

    def unavailable():
        calls.append(1)
        raise Unavailable("no weights here")

    facts, spec = BackboneFacts(tmp_path), get_spec("toy")
    assert facts.fill(spec, unavailable) == spec
    assert facts.fill(spec, unavailable) == spec and len(calls) == 1


def test_package_random_and_hub_weights_are_not_hashed_at_plan_time():
    """A scheduler image has no weights packages: its keys must equal the evaluators' (which do)."""
    from bobench.backbones import get_spec
    from bobench.backbones.weights import with_weights_digest

    for name in ("open_nsfw", "toy", "resnet18-random"):
        assert with_weights_digest(get_spec(name)) == get_spec(name)


def test_a_file_that_is_not_onnx_is_an_invalid_argument_and_plans_as_a_failing_run(tmp_path):
    from bobench.backbones.weights import onnx_weights_digest

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf\xff" * 8)
    with pytest.raises(InvalidArgument, match="junk.onnx"):
        onnx_weights_digest(junk)
    plan = _knn_run(_entry(junk, "tiny-junk"))
    record = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache"), threads=1)).execute(plan)
    assert record.status == "failed" and record.error
