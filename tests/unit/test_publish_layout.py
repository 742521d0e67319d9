"""Publishing without servers: version derivation, served model names, publish keys, variant/target
layouts, idempotent uploads into a real (local-directory) artifact store, and the scheduler's
PublishStep memoization (one publish per digest and variant, even from concurrent runs)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from bobench.backbones import get_spec
from bobench.battle.plan import RunPlan, register_custom_backbones
from bobench.battle.publish_step import InProcessPublisher, PublishStep, publish_job_argv
from bobench.errors import InvalidArgument, NotFound
from bobench.export.triton_repo import read_model_config, served_model_name
from bobench.serving.publish import is_published, publish, publish_key, repository_layout, version_for
from bobench.store.local import LocalStore


def test_version_is_a_positive_int_below_2_60_derived_from_the_key():
    key = publish_key(get_spec("toy"), "onnx", "uint8", "local")
    assert version_for(key) == int(key[:15], 16)
    assert 1 <= version_for(key) < 2**60
    assert version_for("0" * 64) == 1  # never version 0
    with pytest.raises(InvalidArgument, match="not a hex digest"):
        version_for("not-hex")


def test_publish_key_changes_with_weights_variant_dtype_and_target_only():
    toy = get_spec("toy")
    base = publish_key(toy, "onnx", "uint8", "local")
    assert publish_key(toy, "onnx", "uint8", "local") == base
    others = {
        publish_key(dataclasses.replace(toy, seed=1), "onnx", "uint8", "local"),
        publish_key(toy, "trt-fp16", "uint8", "cluster-gpu"),
        publish_key(toy, "onnx", "float32", "local"),
        publish_key(toy, "onnx", "uint8", "cluster-cpu"),
    }
    assert base not in others and len(others) == 4


def test_served_model_names_keep_onnx_and_suffix_tensorrt():
    toy = get_spec("toy")
    assert served_model_name(toy) == served_model_name(toy, "onnx") == "toy"
    assert served_model_name(toy, "trt-fp16") == "toy-trt-fp16"
    assert served_model_name("a/b", "trt-fp32") == "a_b-trt-fp32"
    with pytest.raises(InvalidArgument, match="embedder_variant"):
        served_model_name(toy, "int8")


@pytest.mark.parametrize(
    ("variant", "target", "needle"),
    [("trt-fp16", "local", "only target 'cluster-gpu'"), ("trt-fp32", "cluster-cpu", "cluster-gpu"),
     ("onnx", "edge", "target must be"), ("bf16", "local", "embedder_variant must be")],
)  # fmt: skip
def test_bad_variant_target_pairs_are_refused(variant, target, needle):
    with pytest.raises(InvalidArgument, match=needle):
        repository_layout(variant, target)


def test_layouts_pick_backend_platform_and_instance_kind():
    assert repository_layout("onnx", "local")["variant"] == "local"
    assert repository_layout("onnx", "cluster-cpu")["instance_kind"] == "cpu"
    trt = repository_layout("trt-fp16", "cluster-gpu")
    assert (
        trt["platform"] == "tensorrt_plan"
        and trt["trt_precision"] == "fp16"
        and trt["instance_kind"] == "gpu"
    )


def test_publish_pins_the_version_and_a_second_publish_uploads_nothing(tmp_path):
    store = LocalStore(tmp_path / "models")
    first = publish("toy", store, cache_dir=tmp_path / "cache", intra_op_threads=1)
    assert first.uploaded and not first.loaded
    config = read_model_config(tmp_path / "models" / "toy")
    assert list(config.version_policy.specific.versions) == [first.version]
    assert (tmp_path / "models" / "toy" / str(first.version) / "model.onnx").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "models").rglob("*") if p.is_file()}
    again = publish("toy", store, cache_dir=tmp_path / "cache")
    assert not again.uploaded and again.version == first.version
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "models").rglob("*") if p.is_file()} == mtimes
    assert is_published(store, "toy", first.publish_key, first.version)
    assert not is_published(store, "toy", first.publish_key, first.version + 1)


def test_cluster_cpu_entry_is_onnxruntime_on_cpu(tmp_path):
    from tritonclient.grpc import model_config_pb2 as mc

    store = LocalStore(tmp_path / "models")
    model = publish("toy", store, target="cluster-cpu", cache_dir=tmp_path / "cache")
    config = read_model_config(tmp_path / "models" / "toy")
    assert (
        config.platform == "onnxruntime_onnx"
        and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    )
    assert list(config.version_policy.specific.versions) == [model.version]


def _plan(backbone: str, protocol: str = "knn") -> RunPlan:
    return RunPlan(run_key="k", backbone=backbone, dataset="toy", dataset_ref="toy", protocol=protocol,
                   protocol_version="1", task="classification", config={}, seed=0, primary_metric="acc")  # fmt: skip


def test_publish_step_publishes_once_for_concurrent_runs_and_skips_fine_tuning(tmp_path):
    store = LocalStore(tmp_path / "models")
    step = PublishStep(InProcessPublisher(store, cache_dir=tmp_path / "cache", triton_url=None))
    step(_plan("toy", "finetune"), "b")
    assert step.publishes == 0 and not store.list("")
    threads = [threading.Thread(target=step, args=(_plan("toy"), "b")) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert step.publishes == 1
    assert step.prepare("toy", "onnx").model_name == "toy" and step.publishes == 1
    # a restarted scheduler (new step) finds it in the store: nothing uploaded
    fresh = PublishStep(InProcessPublisher(store, cache_dir=tmp_path / "cache", triton_url=None))
    assert not fresh.prepare("toy", "onnx").uploaded


def test_publish_step_remembers_a_permanent_failure_for_that_backbone(tmp_path):
    register_custom_backbones(({"name": "unit-unpublishable", "source": "onnx", "family": "cnn",
                                "pretraining_method": "other", "pretraining_data": "unknown",
                                "model_id": "/nonexistent/u.onnx", "weights": "/nonexistent/u.onnx",
                                "input_size": 32, "embed_dim": 8},))  # fmt: skip
    step = PublishStep(
        InProcessPublisher(LocalStore(tmp_path / "m"), cache_dir=tmp_path / "c", triton_url=None)
    )
    for _ in range(2):
        with pytest.raises(NotFound, match="publishing 'unit-unpublishable'"):
            step(_plan("unit-unpublishable"), "b")
    assert step.publishes == 1


def test_publish_job_argv_is_a_bob_publish_command():
    argv = publish_job_argv("toy", "trt-fp16", store_url="s3://bobench/triton-models",
                            triton_url="embedder:8001", target="cluster-gpu")  # fmt: skip
    from bobench.cli import build_parser

    args = build_parser().parse_args(argv[1:])
    assert (args.backbones, args.store, args.variant, args.target) == (
        ["toy"], "s3://bobench/triton-models", "trt-fp16", "cluster-gpu")  # fmt: skip
    assert get_spec("toy")  # registered names are what a Job publishes


def test_tensorrt_publish_without_a_gpu_is_failed_precondition_and_uploads_nothing(tmp_path):
    from bobench.errors import FailedPrecondition
    from bobench.export import tensorrt

    if tensorrt.tensorrt_available()[0]:
        pytest.skip("TensorRT and a GPU are present: covered by the gpu test")
    store = LocalStore(tmp_path / "models")
    with pytest.raises(FailedPrecondition, match="TensorRT unavailable"):
        publish("toy", store, "trt-fp16", target="cluster-gpu", cache_dir=tmp_path / "cache")
    assert not store.list("")


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["trt-fp16", "trt-fp32"])
def test_tensorrt_publish_builds_the_plan_here_and_matches_onnxruntime(tmp_path, variant):
    import numpy as np

    from bobench.export import tensorrt

    ok, reason = tensorrt.tensorrt_available()
    if not ok:
        pytest.skip(reason)
    store = LocalStore(tmp_path / "models")
    model = publish(
        "toy", store, variant, target="cluster-gpu", cache_dir=tmp_path / "cache", max_batch_size=8
    )
    entry = tmp_path / "models" / model.model_name
    assert model.model_name == f"toy-{variant}" and read_model_config(entry).platform == "tensorrt_plan"
    onnx_path = next((tmp_path / "cache" / "onnx").glob("toy-*-uint8")) / "model.onnx"
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    check = tensorrt.verify_engine(entry / str(model.version) / "model.plan", onnx_path, images,
                                   atol=5e-2 if variant == "trt-fp16" else 1e-3)  # fmt: skip
    assert check["ok"], check


def test_a_user_model_whose_weights_file_changed_is_published_as_a_new_version(tmp_path):
    """The weights file's digest is part of the publish key, the PublishStep memo and the publish Job's
    name: re-saving a user's checkpoint under the same path publishes a new version."""
    import timm
    import torch

    from bobench.backbones import BACKBONES
    from bobench.battle.plan import CUSTOM_BACKBONES

    weights = tmp_path / "mine.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), weights)
    entry = {"name": "publish-mine", "source": "timm", "model_id": "resnet18", "weights": str(weights),
             "input_size": 32, "crop_pct": 1}  # fmt: skip
    from bobench.battle.spec import custom_backbone_entry

    register_custom_backbones((custom_backbone_entry(entry, "test", tmp_path),))
    try:
        store = LocalStore(tmp_path / "models")
        first = publish("publish-mine", store, cache_dir=tmp_path / "cache", intra_op_threads=1)
        torch.manual_seed(1)
        torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), weights)
        second = publish("publish-mine", store, cache_dir=tmp_path / "cache", intra_op_threads=1)
        assert second.uploaded and second.version != first.version
    finally:
        BACKBONES._items.pop("publish-mine", None)
        CUSTOM_BACKBONES.pop("publish-mine", None)
