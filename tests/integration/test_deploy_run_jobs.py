"""The Jobs the scheduler creates at run time fit the rendered deployment they run in: a Job built by the
executor's own code (`bobench.battle.executors.k8s_jobs.build_job`) from the rendered `bobench-jobs` ConfigMap
(GPU and CPU) passes the strict schema and Pod Security "restricted", its Secret references resolve to
the rendered Secret, its pods are the ones the NetworkPolicies open MinIO and Triton to, and it asks
for a GPU exactly on the GPU stack.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deploy_render import (
    containers,
    find,
    kustomization_images,
    model_problems,
    render_target,
    resolved_env,
    restricted_pod_problems,
    schema_problems,
    selects,
)


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def target(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def stack(target, tmp_path_factory) -> list[dict[str, Any]]:
    return render_target(target, tmp_path_factory.mktemp(f"runjobs-{target}"))[0]


def run_job(stack: list[dict[str, Any]], protocol: str, task: str) -> dict[str, Any]:
    """The Job the scheduler would create for a `protocol` run, from the rendered `bobench-jobs`
    ConfigMap, with the store/endpoint the scheduler fills in."""
    import dataclasses

    from bobench.battle.executors.k8s_jobs import JobConfig, build_job
    from bobench.battle.plan import RunPlan

    jobs_map = next(
        d for d in stack if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("bobench-jobs")
    )
    config = JobConfig.from_dict(yaml.safe_load(jobs_map["data"]["jobs.yaml"]), "bobench-jobs")
    endpoints = find(stack, "ConfigMap", "bobench-endpoints")["data"]
    config = dataclasses.replace(
        config,
        store=config.store or endpoints["BOBENCH_STORE"],
        s3_endpoint=config.s3_endpoint or endpoints["BOBENCH_S3_ENDPOINT"],
    )
    plan = RunPlan(
        run_key="a1b2c3d4e5f6a7b8c9d0e1f2",
        backbone="toy",
        dataset="toy",
        dataset_ref="toy",
        protocol=protocol,
        protocol_version="1",
        task=task,
        config={},
        seed=0,
        primary_metric="accuracy",
        battle="b1",
    )
    return build_job(plan, config)


@pytest.fixture(scope="module")
def job(stack) -> dict[str, Any]:
    """The fine-tune Job the scheduler would create."""
    return run_job(stack, "finetune", "finetune")


def test_the_run_job_passes_the_strict_schema_and_pod_security(job):
    assert not schema_problems(job) + model_problems(job)
    assert not restricted_pod_problems("run Job", job["spec"]["template"]["spec"])
    assert job["metadata"]["namespace"] == "bobench"


def test_the_run_job_takes_its_credentials_from_the_rendered_secret(stack, job):
    secret = find(stack, "Secret", "bobench-credentials")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = resolved_env(stack, c)  # raises for a reference the render does not hold
    refs = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert {r["name"] for r in refs} == {"bobench-credentials"} and all(
        r["key"] in secret["data"] for r in refs
    )
    assert env["BOBENCH_S3_ENDPOINT"] == "http://minio:9000"


def test_the_run_job_gets_no_api_token_and_no_signing_key(job):
    """A run Job calls no bobench API and signs nothing (job_entry writes jobs/<run_key>/record.json; the
    scheduler verifies and signs when it copies it to results/), so none of the auth credentials reach it."""
    (c,) = job["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in c["env"]}
    keys = {
        e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert not names & {"BOBENCH_AUTH_TOKEN", "BOBENCH_AUTH_TOKENS_FILE", "BOBENCH_RESULT_SIGNING_KEY"}
    assert not keys & {"SCHEDULER_TOKEN", "ADMIN_TOKEN", "RESULT_SIGNING_KEY"}
    assert not [v for v in job["spec"]["template"]["spec"].get("volumes", []) if "secret" in v]


def test_the_network_policies_treat_the_run_job_pod_as_a_run_job(stack, job):
    labels = job["spec"]["template"]["metadata"]["labels"]
    policies = {d["metadata"]["name"]: d["spec"] for d in stack if d["kind"] == "NetworkPolicy"}
    assert selects(policies["run-jobs-egress"]["podSelector"], labels)
    minio_peers = policies["minio-ingress"]["ingress"][0]["from"]
    assert any(selects(p["podSelector"], labels) for p in minio_peers)
    for name in ("scheduler-egress", "evaluator-egress", "embedder-egress", "grafana-egress"):
        assert not selects(policies[name]["podSelector"], labels), name


def test_the_run_job_asks_for_a_gpu_on_the_gpu_stack_only(job, target):
    (c,) = containers(job["spec"]["template"]["spec"])
    gpus = c["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpus == ("1" if target == "gpu" else None)


def test_the_run_job_image_is_the_one_the_kustomization_pins(job, target):
    """The image inside the ConfigMap is data kustomize's `images:` does not rewrite: it must be the
    stack's run-Job image, by its plain name or by the reference `make push` pinned."""
    name = {"gpu": "bobench/finetune-gpu", "cpu": "bobench/evaluator"}[target]
    pinned = next(e for e in kustomization_images(target) if e["name"] == name)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["image"] in (name, f"{pinned['newName']}:{pinned['newTag']}")


def test_a_detection_run_job_fits_the_stack_and_trains_on_the_gpu_there(stack, target):
    """A detection run's Job from the same rendered config: schema, Pod Security, and on the GPU stack a
    GPU with BOBENCH_DEVICE=cuda (the detector trains there under bf16 autocast); none on the CPU stack."""
    job = run_job(stack, "detection", "detection")
    assert not schema_problems(job) + model_problems(job)
    assert not restricted_pod_problems("detection Job", job["spec"]["template"]["spec"])
    (c,) = containers(job["spec"]["template"]["spec"])
    env = {e["name"]: e.get("value") for e in c["env"]}
    gpu = target == "gpu"
    assert c["resources"].get("limits", {}).get("nvidia.com/gpu") == ("1" if gpu else None)
    assert env.get("BOBENCH_DEVICE") == ("cuda" if gpu else None)


def test_the_rendered_job_config_sends_every_training_protocol_to_jobs(stack):
    """The deployed jobs.yaml leaves `protocols` to the code's one list, so fine-tuning and the
    detection protocols run as Jobs in the cluster (GPU and CPU stacks alike)."""
    from bobench.battle.executors.k8s_jobs import JOB_PROTOCOLS, JobConfig

    (jobs_map,) = [
        d for d in stack if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("bobench-jobs")
    ]
    config = JobConfig.from_dict(yaml.safe_load(jobs_map["data"]["jobs.yaml"]), "bobench-jobs")
    assert config.protocols == JOB_PROTOCOLS
    assert {"finetune", "detection", "instance_segmentation", "ood_detection"} <= set(config.protocols)
