"""Offline validation of the Kubernetes deployment: `kubectl kustomize deploy/` (GPU) and
`deploy/overlays/cpu`, rendered from a temporary copy with generated secrets (tests/deploy_render.py).

Every rendered object is validated strictly against the Kubernetes OpenAPI schema
(`kubernetes_validate`, unknown fields fail) and rebuilt with the `kubernetes` client's models and
serialised back (a key that vanishes is a field the API does not know). Then the semantics no schema
catches: selectors, references to Secret/ConfigMap keys, probe ports, images from the `images:` list,
GPU requests, Pod Security "restricted", tokens, RBAC, the run-Job config and the minio-setup Job.
NetworkPolicies: test_deploy_netpol.py; Prometheus/Grafana: test_deploy_monitoring.py; wiring against the
code (env names, flags, Triton, endpoints): test_deploy_wiring.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_render import (
    container,
    containers,
    expand,
    find,
    kustomization_images,
    model_problems,
    mounted_file,
    name_of,
    pod_specs,
    render_target,
    resolved_env,
    restricted_pod_problems,
    schema_problems,
    selects,
)

CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ADMIN_KEY|TOKEN|ROOT_USER|ADMIN_USER")


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def target(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def rendered(target, tmp_path_factory) -> tuple[list[dict[str, Any]], dict[str, str]]:
    return render_target(target, tmp_path_factory.mktemp(f"render-{target}"))


@pytest.fixture(scope="module")
def stack(rendered) -> list[dict[str, Any]]:
    return rendered[0]


@pytest.fixture(scope="module")
def secret_values(rendered) -> dict[str, str]:
    return rendered[1]


# -- schema ----------------------------------------------------------------------------------------------
def test_every_rendered_object_matches_the_kubernetes_api_schema_strictly(stack):
    problems = [p for doc in stack for p in schema_problems(doc) + model_problems(doc)]
    assert not problems, "\n".join(problems)


def test_schema_checks_catch_misspelled_fields_and_wrong_types(stack):
    deployment = find(stack, "Deployment", "evaluator")
    typo = json.loads(json.dumps(deployment))
    c = typo["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    assert any(".containers[0].readinesProbe: unknown field" in p for p in model_problems(typo))
    assert schema_problems(typo)
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["replicas"] = "two"
    assert model_problems(wrong) and schema_problems(wrong)


# -- credentials -------------------------------------------------------------------------------------
def test_the_secret_holds_exactly_the_generated_values_and_no_placeholder(stack, secret_values):
    import base64

    secrets = {d["metadata"]["name"]: d for d in stack if d["kind"] == "Secret"}
    assert sorted(secrets) == ["bobench-auth-tokens", "bobench-credentials"]
    data = {k: base64.b64decode(v).decode() for k, v in secrets["bobench-credentials"]["data"].items()}
    assert data == secret_values
    assert list(secrets["bobench-auth-tokens"]["data"]) == ["auth-tokens.jsonl"]
    text = json.dumps(stack)
    assert not re.search(r"change[-_ ]?me", text, re.IGNORECASE), "a placeholder credential is rendered"


def test_no_credential_is_a_literal_env_value(stack):
    """A credential-named variable comes from a secretKeyRef; one ending in _FILE (BOBENCH_AUTH_TOKENS_FILE)
    may be a literal path, but only to a file a read-only Secret volume provides."""
    for workload, _, spec in pod_specs(stack):
        for c in containers(spec):
            for e in c.get("env", []):
                where = f"{workload} {c['name']}: {e['name']}"
                if not CREDENTIAL_NAME.search(e["name"]):
                    continue
                if e["name"].endswith("_FILE") and "value" in e:
                    _, mount, volume = mounted_file(stack, spec, c, e["value"])
                    assert "secret" in volume and mount.get("readOnly") is True, where
                else:
                    assert "secretKeyRef" in e.get("valueFrom", {}), where


def test_no_secret_value_is_rendered_in_cleartext_outside_the_secrets(stack, secret_values):
    """Tokens, keys and passwords appear only base64-encoded inside Secret data, and the tokens Secret
    holds their hashes, not the tokens."""
    import base64

    from bobench.rpc.auth_tokens import token_digest

    outside = json.dumps([d for d in stack if d["kind"] != "Secret"])
    tokens = base64.b64decode(
        find(stack, "Secret", "bobench-auth-tokens")["data"]["auth-tokens.jsonl"]
    ).decode()
    for key, value in secret_values.items():
        assert value not in outside, f"{key} is rendered in cleartext outside the Secrets"
        assert value not in tokens, f"{key} is in the tokens Secret in cleartext"
    for key in ("SCHEDULER_TOKEN", "ADMIN_TOKEN"):
        assert token_digest(secret_values[key]) in tokens, f"the hash of {key} is not in the tokens Secret"


def test_the_tokens_secret_is_mounted_whole_and_read_only_by_the_evaluator_and_scheduler_only(stack):
    holders = set()
    for workload, _, spec in pod_specs(stack):
        volumes = {v["name"] for v in spec.get("volumes", [])
                   if v.get("secret", {}).get("secretName") == "bobench-auth-tokens"}  # fmt: skip
        for c in containers(spec):
            for m in c.get("volumeMounts", []):
                if m["name"] in volumes:
                    holders.add(workload)
                    assert m["mountPath"] == "/etc/bobench-auth" and m.get("readOnly") is True, workload
                    assert "subPath" not in m, f"{workload}: a subPath mount never sees an updated Secret"
    assert holders == {"Deployment/evaluator", "Deployment/scheduler"}


def test_every_secret_and_configmap_reference_resolves_to_a_rendered_key(stack):
    kinds = {"secretKeyRef": "Secret", "configMapKeyRef": "ConfigMap"}
    objects = {(d["kind"], d["metadata"]["name"]): d for d in stack if d["kind"] in ("Secret", "ConfigMap")}
    claims = {d["metadata"]["name"] for d in stack if d["kind"] == "PersistentVolumeClaim"}
    for workload, _, spec in pod_specs(stack):
        for c in containers(spec):
            for e in c.get("env", []):
                for ref_kind, ref in e.get("valueFrom", {}).items():
                    obj = objects.get((kinds[ref_kind], ref["name"]))
                    assert obj is not None, f"{workload}: env {e['name']} -> missing {ref}"
                    assert ref["key"] in {**obj.get("data", {}), **obj.get("stringData", {})}, (
                        f"{workload}: env {e['name']} -> {ref}"
                    )
            resolved_env(stack, c)  # raises for an undefined $(VAR) too
            for part in ("command", "args"):
                for arg in c.get(part, []):
                    expand(arg, resolved_env(stack, c))
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in objects, f"{workload}: volume {v}"
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in objects, f"{workload}: volume {v}"
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, f"{workload}: volume {v}"


def test_the_run_job_config_loads_and_its_secret_keys_resolve(stack, target):
    import yaml

    from bobench.battle.executors.k8s_jobs import JobConfig

    jobs_map = next(
        d for d in stack if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("bobench-jobs")
    )
    config = JobConfig.from_dict(yaml.safe_load(jobs_map["data"]["jobs.yaml"]), "bobench-jobs jobs.yaml")
    secret = find(stack, "Secret", config.s3_secret)
    assert {config.s3_access_key_key, config.s3_secret_key_key} <= set(secret["data"])
    assert config.namespace == "bobench"
    assert (config.gpus == 0) == (target == "cpu")
    mounted = container(stack, "Deployment", "scheduler", "scheduler")
    path = resolved_env(stack, mounted)["BOBENCH_JOB_CONFIG"]
    mounts = {m["mountPath"]: m["name"] for m in mounted["volumeMounts"]}
    volume = next(
        v
        for v in find(stack, "Deployment", "scheduler")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mounts[str(Path(path).parent)]
    )
    assert volume["configMap"]["name"] == jobs_map["metadata"]["name"] and Path(path).name == "jobs.yaml"


def test_minio_setup_runs_the_python_setup_with_valid_credentials(stack):
    from bobench.store.setup import SetupConfig

    c = container(stack, "Job", "minio-setup", "setup")
    assert (
        c["command"] == ["python", "-m", "bobench.store.setup"]
        and "initContainers" not in find(stack, "Job", "minio-setup")["spec"]["template"]["spec"]
    )
    config = SetupConfig.from_env(resolved_env(stack, c))
    config.validate()  # raises for an empty, placeholder or shared credential
    assert config.bucket == "bobench"
    job = find(stack, "Job", "minio-setup")["spec"]
    assert job["ttlSecondsAfterFinished"] > 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    fail_now = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_now[0]["onExitCodes"] == {"containerName": "setup", "operator": "In", "values": [2]}


# -- workloads ---------------------------------------------------------------------------------------------
def test_workload_and_budget_selectors_match_their_pod_templates(stack):
    templates = {
        name_of(d): d["spec"]["template"]["metadata"]["labels"] for d in stack if d["kind"] == "Deployment"
    }
    for doc in stack:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selects(doc["spec"]["selector"], labels), name_of(doc)
            for spread in doc["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
                assert selects(spread["labelSelector"], labels), f"{name_of(doc)}: spread over other pods"
    budgets = {d["metadata"]["name"]: d for d in stack if d["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {"evaluator", "embedder"}
    for name, pdb in budgets.items():
        hits = [w for w, labels in templates.items() if selects(pdb["spec"]["selector"], labels)]
        assert hits == [f"Deployment/{name}"], f"PodDisruptionBudget/{name} selects {hits}"


def test_services_select_a_pod_template_that_has_their_target_ports(stack):
    templates = [(meta.get("labels", {}), spec) for _, meta, spec in pod_specs(stack)]
    for svc in (d for d in stack if d["kind"] == "Service"):
        selected = [
            spec for labels, spec in templates if selects({"matchLabels": svc["spec"]["selector"]}, labels)
        ]
        assert selected, f"{name_of(svc)} selects no pod template"
        ports = [p for spec in selected for c in spec["containers"] for p in c.get("ports", [])]
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            known = (
                {q.get("name") for q in ports}
                if isinstance(target, str)
                else {q["containerPort"] for q in ports}
            )
            assert target in known, f"{name_of(svc)} port {p}"


def test_every_probe_port_names_a_container_port(stack):
    for workload, _, spec in pod_specs(stack):
        for c in containers(spec):
            names = {p.get("name") for p in c.get("ports", [])}
            numbers = {p["containerPort"] for p in c.get("ports", [])}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if probe is None:
                    continue
                handler = next(probe[h] for h in ("httpGet", "tcpSocket", "grpc", "exec") if h in probe)
                if "port" in handler:
                    p = handler["port"]
                    assert p in (names if isinstance(p, str) else numbers), (
                        f"{workload} {c['name']} {kind}: {p}"
                    )


def test_every_container_has_resources_and_an_image_from_the_images_list(stack, target):
    entries = kustomization_images(target)
    allowed = {f"{e.get('newName', e['name'])}:{e['newTag']}" for e in entries}
    assert {"bobench/embedder", "bobench/evaluator", "bobench/scheduler", "bobench/finetune-gpu"} <= {
        e["name"] for e in entries
    }
    for workload, _, spec in pod_specs(stack):
        for c in containers(spec):
            where = f"{workload} container {c['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(part, {})), f"{where}: {part}"
            assert c["image"] in allowed, f"{where}: image {c['image']} is not set by the images: list"


def test_gpus_are_requested_by_triton_on_the_gpu_stack_only(stack, target):
    gpu = "nvidia.com/gpu"
    holders = {
        (w, c["name"])
        for w, _, s in pod_specs(stack)
        for c in containers(s)
        if gpu in c["resources"].get("limits", {})
    }
    tolerating = {w for w, _, s in pod_specs(stack) if s.get("tolerations")}
    if target == "gpu":
        triton = container(stack, "Deployment", "embedder", "tritonserver")["resources"]
        assert triton["limits"][gpu] == "1" and triton["requests"][gpu] == "1"
        assert holders == {("Deployment/embedder", "tritonserver")} and tolerating == {"Deployment/embedder"}
    else:
        assert holders == set() and tolerating == set()
        assert gpu not in json.dumps(stack).replace("no nvidia.com/gpu", "")


def test_pods_meet_the_restricted_pod_security_profile(stack):
    namespace = find(stack, "Namespace", "bobench")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(d["metadata"].get("namespace") == "bobench" for d in stack if d["kind"] != "Namespace")
    problems = [p for workload, _, spec in pod_specs(stack) for p in restricted_pod_problems(workload, spec)]
    assert not problems, "\n".join(problems)


def test_only_the_scheduler_mounts_a_service_account_token(stack):
    account = find(stack, "ServiceAccount", "scheduler")
    assert account["automountServiceAccountToken"] is False
    for workload, _, spec in pod_specs(stack):
        wanted = workload == "Deployment/scheduler"
        assert spec.get("automountServiceAccountToken") is wanted, workload
        assert (spec.get("serviceAccountName") == "scheduler") is wanted, workload


def allows(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and (verb in r.get("verbs", []) or "*" in r.get("verbs", []))
        for r in rules
    )


def test_scheduler_service_account_may_manage_run_jobs_and_nothing_else(stack):
    bindings = [
        b
        for b in stack
        if b["kind"] == "RoleBinding"
        and {"kind": "ServiceAccount", "name": "scheduler", "namespace": "bobench"} in b["subjects"]
    ]
    rules = [r for b in bindings for r in find(stack, "Role", b["roleRef"]["name"])["rules"]]
    for verb in ("create", "get", "list", "watch", "delete"):
        assert allows(rules, "batch", "jobs", verb), verb
    assert all(allows(rules, "", "pods", v) for v in ("get", "list", "watch"))
    assert allows(rules, "", "pods/log", "get")
    assert not allows(rules, "", "secrets", "get"), "the scheduler needs no access to secrets"
    assert not [d for d in stack if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_evaluator_autoscaler_scales_the_deployment_on_cpu(stack):
    hpa = find(stack, "HorizontalPodAutoscaler", "evaluator")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "evaluator"}
    assert [m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"] == ["cpu"]
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert "replicas" not in find(stack, "Deployment", "evaluator")["spec"], "a re-apply would undo the HPA"
    assert "cpu" in container(stack, "Deployment", "evaluator", "evaluator")["resources"]["requests"]
