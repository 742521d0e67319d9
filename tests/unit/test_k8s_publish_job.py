"""Publish Jobs without a cluster: the Job manifest (strict Kubernetes schema and client models, labels,
env from Secrets only, GPU request, deterministic name), its command against the `bob` CLI, the
JobConfig publish keys, and `find_published` against an entry `publish` really wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bobench.backbones import get_spec
from bobench.battle.executors.k8s_jobs import (
    CONFIG_ERROR_EXIT_CODE,
    LABEL_PART_OF,
    JobConfig,
    load_job_config,
)
from bobench.battle.k8s_publish import (
    LABEL_JOB_KIND,
    LABEL_PUBLISH_KEY,
    JobPublisher,
    build_publish_job,
    publish_job_key,
    publish_job_name,
    publish_step_for_jobs,
)
from bobench.battle.publish_step import publish_job_argv
from bobench.config import Settings
from bobench.errors import FailedPrecondition, InvalidArgument
from bobench.exit_codes import UNAVAILABLE
from bobench.store import LocalStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from k8s_schema import schema_problems  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DIGEST = get_spec("toy").digest()
GPU = JobConfig(
    store="s3://bobench/artifacts",
    s3_endpoint="http://minio:9000",
    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
    queue="gpu-queue",
    env={"OMP_NUM_THREADS": "4"},
)
CPU = JobConfig(store="s3://b/p", s3_endpoint="http://minio:9000", gpus=0, image="bobench/evaluator")


def job(variant: str = "onnx", config: JobConfig = GPU, target: str = "cluster-gpu", digest: str = DIGEST):
    return build_publish_job("toy", variant, digest=digest, config=config, store_url="s3://bobench/triton-models",
                             triton_url="embedder:8001", target=target)  # fmt: skip


def container_of(manifest: dict) -> dict:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("variant,config", [("onnx", GPU), ("trt-fp16", GPU), ("onnx", CPU)])
def test_the_publish_job_passes_the_strict_schema_and_the_client_models(variant, config):
    manifest = job(variant, config)
    assert schema_problems(manifest, "V1Job") == []
    assert schema_problems({**manifest, "spec": {**manifest["spec"], "backofLimit": 3}}, "V1Job")  # it bites


def test_the_publish_job_is_labelled_as_a_publish_job_on_the_job_and_its_pods():
    manifest = job()
    pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
    key = publish_job_key(DIGEST, "onnx", "cluster-gpu")
    assert pod_labels == {LABEL_PART_OF: "bobench", LABEL_JOB_KIND: "publish", LABEL_PUBLISH_KEY: key}
    assert manifest["metadata"]["labels"] == {**pod_labels, "kueue.x-k8s.io/queue-name": "gpu-queue"}
    assert "bobench.io/run-key" not in pod_labels  # the run-Job NetworkPolicies do not select it


def test_credentials_and_the_admin_key_come_from_the_secret_only():
    env = {e["name"]: e for e in container_of(job())["env"]}
    for name, key in [("BOBENCH_S3_ACCESS_KEY", "BOBENCH_S3_ACCESS_KEY"),
                      ("BOBENCH_S3_SECRET_KEY", "BOBENCH_S3_SECRET_KEY"),
                      ("BOBENCH_TRITON_ADMIN_KEY", "TRITON_ADMIN_KEY")]:  # fmt: skip
        assert "value" not in env[name]
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "bobench-credentials", "key": key}}
    assert env["BOBENCH_S3_ENDPOINT"]["value"] == "http://minio:9000"
    assert env["BOBENCH_CACHE_DIR"]["value"] == "/cache"
    assert env["OMP_NUM_THREADS"]["value"] == "4"
    literal = {e["name"] for e in env.values() if "value" in e}
    assert not {n for n in literal if "KEY" in n or "SECRET" in n}


def test_the_container_runs_the_bob_publish_command_line():
    from bobench.cli import build_parser

    container = container_of(job("onnx"))
    argv = [*container["command"], *container["args"]]
    assert argv == publish_job_argv("toy", "onnx", store_url="s3://bobench/triton-models",
                                    triton_url="embedder:8001", target="cluster-gpu")  # fmt: skip
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.backbones, args.variant, args.target) == (
        "publish",
        ["toy"],
        "onnx",
        "cluster-gpu",
    )
    assert args.triton_url == "embedder:8001" and args.store == "s3://bobench/triton-models"
    rule = job()["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [CONFIG_ERROR_EXIT_CODE]


def test_a_gpu_is_requested_for_tensorrt_variants_only_unless_configured():
    def gpus(variant, config):
        return container_of(job(variant, config))["resources"]["requests"].get("nvidia.com/gpu")

    assert gpus("trt-fp16", GPU) == "1" and gpus("onnx", GPU) is None
    assert gpus("onnx", JobConfig(gpus=2, publish_gpu="always")) == "2"
    assert gpus("trt-fp16", JobConfig(publish_gpu="never")) is None
    assert container_of(job(config=GPU))["image"] == "bobench/finetune-gpu"
    assert container_of(job(config=JobConfig(publish_image="reg/pub:1")))["image"] == "reg/pub:1"


def test_the_job_name_is_a_dns_label_fixed_by_digest_variant_and_target():
    name = job()["metadata"]["name"]
    assert (
        name == job()["metadata"]["name"] == publish_job_name(publish_job_key(DIGEST, "onnx", "cluster-gpu"))
    )
    assert len(name) <= 63 and name.startswith("bobench-publish-")
    others = {job("trt-fp16")["metadata"]["name"], job(target="cluster-cpu")["metadata"]["name"],
              job(digest="0" * 64)["metadata"]["name"]}  # fmt: skip
    assert name not in others and len(others) == 3


@pytest.mark.parametrize(
    "path,gpu", [("deploy/k8s/scheduler/jobs.yaml", "tensorrt"), ("deploy/overlays/cpu/jobs.yaml", "never")]
)
def test_the_deployed_job_configs_turn_publish_jobs_on(path, gpu):
    config = load_job_config(ROOT / path)
    assert config.publish_jobs and config.publish_gpu == gpu
    assert (config.s3_secret, config.triton_admin_key_key) == ("bobench-credentials", "TRITON_ADMIN_KEY")


@pytest.mark.parametrize(
    "text,message",
    [
        ("publish_gpu: sometimes\n", "'publish_gpu' must be one of"),
        ("publish_jobs: 'yes'\n", "'publish_jobs'"),
    ],
)
def test_bad_publish_keys_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=message) as err:
        load_job_config(path)
    assert str(path) in str(err.value)


def test_publish_jobs_need_a_model_store_and_a_triton_url(tmp_path):
    from kubernetes import client

    api = client.ApiClient(client.Configuration())
    with pytest.raises(FailedPrecondition, match="BOBENCH_PUBLISH_TO"):
        publish_step_for_jobs(CPU, Settings(cache_dir=str(tmp_path)), api_client=api)
    with pytest.raises(FailedPrecondition, match="s3://"):
        JobPublisher(
            CPU, LocalStore(tmp_path / "m"), triton_url="embedder:8001", target="cluster-cpu", api_client=api
        )


def test_find_published_returns_what_publish_wrote_and_none_otherwise(tmp_path):
    pytest.importorskip("onnxruntime")
    from bobench.serving.publish import find_published, publish

    store = LocalStore(tmp_path / "models")
    assert find_published(store, "toy", "onnx", target="local") is None
    written = publish("toy", store, "onnx", target="local", cache_dir=tmp_path / "cache")
    found = find_published(store, "toy", "onnx", target="local")
    assert found is not None and found.to_dict() == {**written.to_dict(), "uploaded": False}
    assert find_published(store, "toy", "onnx", target="cluster-cpu") is None  # another publish key
    store.delete("toy/config.pbtxt")  # uploaded last: without it the entry is not complete
    assert find_published(store, "toy", "onnx", target="local") is None


def test_bob_publish_exits_2_for_a_config_error_and_3_for_an_unreachable_store(tmp_path, monkeypatch, capsys):
    """The publish Job's contract: exit 2 fails the Job at once for good, anything else is retried."""
    from bobench.cli import main

    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOBENCH_S3_ENDPOINT", "http://127.0.0.1:9")  # loopback discard port: refused
    monkeypatch.setenv("BOBENCH_S3_ACCESS_KEY", "access")
    monkeypatch.setenv("BOBENCH_S3_SECRET_KEY", "secret")
    assert main(["publish", "toy", "--store", str(tmp_path / "not-s3")]) == CONFIG_ERROR_EXIT_CODE
    assert main(["publish", "toy", "--store", "s3://bobench/models"]) == UNAVAILABLE
    assert "127.0.0.1:9" in capsys.readouterr().err


def test_a_user_defined_backbone_travels_to_its_publish_job_and_registers_there():
    """The Job's process knows only the image's registry: the definition goes along in
    BOBENCH_JOB_BACKBONE, and `register_job_backbone` (what `bob publish`/`bob job run` call) registers it."""
    import json

    from bobench.backbones import BACKBONES
    from bobench.battle.executors.k8s_jobs import BACKBONE_ENV, register_job_backbone
    from bobench.battle.plan import CUSTOM_BACKBONES, register_custom_backbones
    from bobench.battle.spec import custom_backbone_entry

    entry = custom_backbone_entry(
        {"name": "pub-custom", "source": "timm", "model_id": "resnet18", "weights": "random"}, "t", None
    )
    register_custom_backbones((entry,))
    try:
        manifest = build_publish_job("pub-custom", "onnx", digest=DIGEST, config=CPU,
                                     store_url="s3://b/m", triton_url="embedder:8001", target="cluster-cpu")  # fmt: skip
        env = {e["name"]: e for e in container_of(manifest)["env"]}
        assert json.loads(env[BACKBONE_ENV]["value"]) == entry
        assert BACKBONE_ENV not in {e["name"] for e in container_of(job())["env"]}  # a registered one
        BACKBONES._items.pop("pub-custom")  # a fresh process
        CUSTOM_BACKBONES.pop("pub-custom")
        register_job_backbone(env[BACKBONE_ENV]["value"])
        assert get_spec("pub-custom").model_id == "resnet18"
        for bad in ("{not json", '["a list"]'):
            with pytest.raises(InvalidArgument, match=BACKBONE_ENV):
                register_job_backbone(bad)
    finally:
        BACKBONES._items.pop("pub-custom", None)
        CUSTOM_BACKBONES.pop("pub-custom", None)
