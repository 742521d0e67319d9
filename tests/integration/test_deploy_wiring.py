"""The rendered deployment wired against the code: BOBENCH_* names the library reads, flags the entry
points accept, gRPC health probes per service, Triton's flags (S3 repository, restricted admin APIs,
ports), the in-cluster endpoints, the scheduler's publish step and evaluator target, and authentication
(tokens file, the scheduler's service token, the result signing key, open health). Renders come
from tests/deploy_render.py (a copy of deploy/ with generated secrets); schema and semantics of the
objects themselves are test_k8s_manifests.py.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from deploy_render import (
    ROOT,
    container,
    containers,
    expand,
    find,
    mounted_file,
    pod_specs,
    port,
    render_target,
    resolved_env,
    selects,
)


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def target(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def stack(target, tmp_path_factory) -> list[dict[str, Any]]:
    return render_target(target, tmp_path_factory.mktemp(f"wiring-{target}"))[0]


# -- the services' wiring against the code -------------------------------------------------------------
def bobench_env_names() -> set[str]:
    """BOBENCH_* names the library reads: the settings classes' fields plus the names the entry points look up."""
    from bobench.config import env_names

    names = env_names()
    for path in (ROOT / "src" / "bobench").rglob("*.py"):
        names |= set(re.findall(r"[\"'](BOBENCH_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def test_bobench_env_vars_are_ones_the_code_reads(stack):
    known = bobench_env_names()
    for workload, _, spec in pod_specs(stack):
        for c in containers(spec):
            unknown = {n for n in resolved_env(stack, c) if n.startswith("BOBENCH_")} - known
            assert not unknown, f"{workload} container {c['name']}: {sorted(unknown)} are read by no code"


def test_container_args_are_flags_the_entry_points_accept(stack):
    from bobench.rpc.evaluator_service import build_parser as evaluator_parser
    from bobench.rpc.scheduler_service import build_parser as scheduler_parser

    evaluator = evaluator_parser().parse_args(
        container(stack, "Deployment", "evaluator", "evaluator")["args"]
    )
    assert evaluator.grace_s == 30
    scheduler = scheduler_parser().parse_args(
        container(stack, "Deployment", "scheduler", "scheduler")["args"]
    )
    assert scheduler.grace_s == 30
    env = resolved_env(stack, container(stack, "Deployment", "scheduler", "scheduler"))
    assert env["BOBENCH_STORE"] == "s3://bobench/artifacts"


def test_grpc_services_probe_their_own_port_and_service_name(stack):
    from bobench.v1 import evaluator_pb2, scheduler_pb2

    cases = [
        ("evaluator", "BOBENCH_EVALUATOR_PORT", evaluator_pb2, "Evaluator"),
        ("scheduler", "BOBENCH_SCHEDULER_PORT", scheduler_pb2, "Scheduler"),
    ]
    for name, port_env, pb2, service in cases:
        c = container(stack, "Deployment", name, name)
        env = resolved_env(stack, c)
        grpc_port = port(c, "grpc")
        assert int(env[port_env]) == grpc_port, name
        assert c["readinessProbe"]["grpc"] == {
            "port": grpc_port,
            "service": pb2.DESCRIPTOR.services_by_name[service].full_name,
        }
        assert c["livenessProbe"]["grpc"]["port"] == grpc_port, name
        assert env["BOBENCH_METRICS_PORT"] == str(port(c, "metrics"))
        annotations = find(stack, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port(c, "metrics")), name


def flag_values(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)


def test_triton_serves_the_minio_repository_with_restricted_admin_apis(stack):
    from bobench.serving.triton_access import ADMIN_HEADER, restricted_flags

    spec = find(stack, "Deployment", "embedder")["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    c = container(stack, "Deployment", "embedder", "tritonserver")
    env = resolved_env(stack, c)
    assert c["args"][0] == "tritonserver" and "command" not in c  # NVIDIA's entrypoint stays
    flags = flag_values([expand(a, env) for a in c["args"]])
    for name in ("http", "grpc", "metrics"):
        assert flags[f"{name}-port"] == str(port(c, name)), name
    repository = flags["model-repository"]
    assert repository == "s3://" + env_of(stack, "BOBENCH_S3_ENDPOINT") + "/bobench/triton-models"
    assert flags["model-control-mode"] == "explicit" and flags["exit-on-error"] == "false"
    assert flags["strict-readiness"] == "false" and flags["metrics-config"] == "summary_latencies=true"
    # the same restrictions the local stack starts Triton with: model control etc. for the admin key,
    # inference/metadata for the evaluators' service key (repeated flags, so compare the lists)
    restricted = [
        expand(a, env) for a in c["args"] if a.startswith(("--grpc-restricted", "--http-restricted"))
    ]
    assert restricted == restricted_flags(env["TRITON_ADMIN_KEY"], env["TRITON_SERVICE_KEY"])
    assert env["TRITON_ADMIN_KEY"] != env["TRITON_SERVICE_KEY"] and ADMIN_HEADER in restricted[0]
    evaluator = resolved_env(stack, container(stack, "Deployment", "evaluator", "evaluator"))
    assert evaluator["BOBENCH_TRITON_SERVICE_KEY"] == env["TRITON_SERVICE_KEY"]
    assert "BOBENCH_TRITON_ADMIN_KEY" not in evaluator
    secret = find(stack, "Secret", "bobench-credentials")["data"]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret.items()}
    assert env["AWS_ACCESS_KEY_ID"] == decoded["TRITON_S3_ACCESS_KEY"]  # the read-only identity
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}


def env_of(stack: list[dict], key: str) -> str:
    return find(stack, "ConfigMap", "bobench-endpoints")["data"][key]


def service_port(stack: list[dict], address: str) -> tuple[dict, dict]:
    """(Service, the pod spec behind it) for 'service[.ns.svc.cluster.local]:port'."""
    host, _, number = address.rpartition(":")
    name, _, domain = host.partition(".")
    assert domain in ("", "bobench.svc.cluster.local"), f"{address}: not a Service of namespace bobench"
    svc = find(stack, "Service", name)
    assert any(p["port"] == int(number) for p in svc["spec"]["ports"]), f"Service {name} has no port {number}"
    for _, meta, spec in pod_specs(stack):
        if selects({"matchLabels": svc["spec"]["selector"]}, meta.get("labels", {})):
            return svc, spec
    raise AssertionError(f"Service {name} selects no pods")


def test_endpoints_point_at_the_services_that_serve_them(stack):
    _, triton = service_port(stack, env_of(stack, "BOBENCH_TRITON_URL"))
    assert port(triton["containers"][0], "grpc") == int(
        env_of(stack, "BOBENCH_TRITON_URL").rpartition(":")[2]
    )
    _, minio = service_port(stack, env_of(stack, "BOBENCH_S3_ENDPOINT").removeprefix("http://"))
    assert minio["containers"][0]["name"] == "minio"
    for name in ("evaluator", "scheduler"):
        env = resolved_env(stack, container(stack, "Deployment", name, name))
        assert env["BOBENCH_S3_ENDPOINT"] == env_of(stack, "BOBENCH_S3_ENDPOINT"), name


def test_scheduler_reaches_every_evaluator_through_one_dns_target(stack):
    target = resolved_env(stack, container(stack, "Deployment", "scheduler", "scheduler"))[
        "BOBENCH_EVALUATORS"
    ]
    assert target.startswith("dns:///"), target
    svc, spec = service_port(stack, target.removeprefix("dns:///"))
    assert svc["spec"]["clusterIP"] == "None" and not svc["spec"].get("publishNotReadyAddresses")
    assert spec["containers"][0]["name"] == "evaluator"
    assert port(spec["containers"][0], "grpc") == int(target.rpartition(":")[2])


def test_the_scheduler_may_keep_every_evaluator_the_hpa_can_add_busy(stack):
    """With one dns:/// target, runs_per_evaluator bounds the runs in flight on all evaluators together:
    it must cover HPA maxReplicas x each evaluator's concurrent runs, or scaling out gains nothing."""
    scheduler = resolved_env(stack, container(stack, "Deployment", "scheduler", "scheduler"))
    evaluator = resolved_env(stack, container(stack, "Deployment", "evaluator", "evaluator"))
    hpa = find(stack, "HorizontalPodAutoscaler", "evaluator")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "evaluator"
    capacity = hpa["maxReplicas"] * int(evaluator["BOBENCH_MAX_CONCURRENT_RUNS"])
    assert int(scheduler["BOBENCH_RUNS_PER_EVALUATOR"]) >= capacity
    assert int(scheduler["BOBENCH_SCHEDULER_CONCURRENCY"]) >= capacity


def test_the_scheduler_publishes_where_triton_reads_for_the_right_server(stack, target):
    from bobench.serving.publish import TARGETS

    scheduler = resolved_env(stack, container(stack, "Deployment", "scheduler", "scheduler"))
    triton = resolved_env(stack, container(stack, "Deployment", "embedder", "tritonserver"))
    bucket_prefix = scheduler["BOBENCH_PUBLISH_TO"].removeprefix("s3://")
    endpoint = scheduler["BOBENCH_S3_ENDPOINT"]
    assert triton["TRITON_MODEL_REPOSITORY"] == f"s3://{endpoint}/{bucket_prefix}"
    assert scheduler["BOBENCH_PUBLISH_TARGET"] in TARGETS
    assert scheduler["BOBENCH_PUBLISH_TARGET"] == {"gpu": "cluster-gpu", "cpu": "cluster-cpu"}[target]
    assert "BOBENCH_TRITON_ADMIN_KEY" not in scheduler  # only its publish Jobs load models
    assert "BOBENCH_TRITON_SERVICE_KEY" not in scheduler  # it never infers
    assert scheduler["BOBENCH_TRITON_URL"] == "embedder:8001"


# -- authentication ----------------------------------------------------------------------------------
def settings_of(stack: list[dict], name: str, monkeypatch):
    """The Settings a service's container loads from its rendered env (bobench.config.load_settings,
    with this process's BOBENCH_* variables replaced by the container's)."""
    import os

    from bobench.config import load_settings

    env = resolved_env(stack, container(stack, "Deployment", name, name))
    for key in [k for k in os.environ if k.startswith("BOBENCH_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("BOBENCH_"):
            monkeypatch.setenv(key, value)
    return env, load_settings()


@pytest.mark.parametrize("name", ["evaluator", "scheduler"])
def test_the_service_runs_with_auth_on_from_the_mounted_tokens_file(stack, name, tmp_path, monkeypatch):
    """The tokens file the container names is the one the mounted Secret provides, the server turns auth
    on with it, and the tokens in it are the scheduler's (role service) and the people's admin token."""
    from bobench.rpc.auth import ServerAuth
    from bobench.rpc.auth_tokens import SERVICE, TokenStore

    _, settings = settings_of(stack, name, monkeypatch)
    assert ServerAuth.from_settings(settings).enabled
    spec = find(stack, "Deployment", name)["spec"]["template"]["spec"]
    text, _, volume = mounted_file(stack, spec, container(stack, "Deployment", name, name),
                                   settings.auth_tokens_file)  # fmt: skip
    assert volume["secret"]["secretName"] == "bobench-auth-tokens"
    local = tmp_path / "auth-tokens.jsonl"  # the file as the kubelet writes it
    local.write_text(text)
    store = TokenStore(local)
    credentials = data_of_secret(stack)
    scheduler = store.identity_of_token(credentials["SCHEDULER_TOKEN"])
    assert (scheduler.name, scheduler.roles) == ("scheduler", frozenset({SERVICE}))
    assert store.identity_of_token(credentials["ADMIN_TOKEN"]).roles == frozenset({"admin"})


def data_of_secret(stack: list[dict]) -> dict[str, str]:
    secret = find(stack, "Secret", "bobench-credentials")["data"]
    return {k: base64.b64decode(v).decode() for k, v in secret.items()}


def test_only_the_scheduler_presents_a_token_and_signs_results(stack, monkeypatch):
    """The scheduler calls the evaluators as `scheduler` (role service; Evaluate admits it) and signs the
    results it keeps; as in the local stack (bobench.stack), no other pod holds a token or the key."""
    from bobench.rpc.auth import SERVICE, roles_for

    credentials = data_of_secret(stack)
    _, settings = settings_of(stack, "scheduler", monkeypatch)
    assert settings.auth_token == credentials["SCHEDULER_TOKEN"]
    assert settings.result_signing_key == credentials["RESULT_SIGNING_KEY"]
    assert SERVICE in roles_for("/bobench.v1.Evaluator/Evaluate")
    for workload, _, spec in pod_specs(stack):
        if workload == "Deployment/scheduler":
            continue
        for c in containers(spec):
            env = resolved_env(stack, c)
            assert not {"BOBENCH_AUTH_TOKEN", "BOBENCH_RESULT_SIGNING_KEY"} & set(env), workload
            held = set(env.values()) & {credentials[k] for k in ("SCHEDULER_TOKEN", "ADMIN_TOKEN",
                                                                  "RESULT_SIGNING_KEY")}  # fmt: skip
            assert not held, f"{workload} container {c['name']} holds an auth credential"


@pytest.mark.parametrize("name", ["evaluator", "scheduler"])
def test_the_probes_need_no_credentials_because_health_stays_open(stack, name):
    """The kubelet's gRPC probes send no metadata: they work with auth on only because the servers leave
    the health service open (bobench.rpc.auth.OPEN_SERVICES)."""
    from bobench.rpc.auth import is_open

    c = container(stack, "Deployment", name, name)
    for probe in ("readinessProbe", "livenessProbe"):
        assert set(c[probe]) - {"initialDelaySeconds", "periodSeconds", "failureThreshold",
                                "timeoutSeconds", "successThreshold"} == {"grpc"}, (name, probe)  # fmt: skip
    assert is_open("/grpc.health.v1.Health/Check") and is_open("/grpc.health.v1.Health/Watch")
    assert not is_open("/bobench.v1.Evaluator/Evaluate") and not is_open("/bobench.v1.Scheduler/ListBattles")
