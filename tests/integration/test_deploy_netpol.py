"""The rendered NetworkPolicies (deploy/k8s/networkpolicies.yaml) open exactly the flows the design
needs: a reachability matrix is computed from the policies the way the NetworkPolicy API defines it
(a flow needs an egress allowance of its source and an ingress allowance of its destination, where
either side is selected by any policy of that type; no policy selecting a pod means open) and compared
with the expected flows, both ways: a missing flow and an extra open flow fail.

Endpoints: every pod template of the render, plus pods the deployment does not contain: a run Job pod
as the scheduler creates it (bobench.battle.executors.k8s_jobs.run_labels), a publish Job pod
(bobench.battle.k8s_publish.build_publish_job), a stray pod of the namespace, a
client pod of another namespace, the cluster DNS pods and the Kubernetes API server (an address outside
the cluster network). `ipBlock` peers are taken to match every address, pods included (what common CNIs
do with 0.0.0.0/0), so the check errs towards "open".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from deploy_render import name_of, pod_specs, render_target, selects

NAMESPACE = "bobench"


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: an address outside the cluster's pod network
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, number, protocol)


def endpoints(stack: list[dict]) -> list[Endpoint]:
    out = []
    for _, meta, spec in pod_specs(stack):
        labels = meta["labels"]
        ports = tuple(
            (p.get("name", ""), p["containerPort"], p.get("protocol", "TCP"))
            for c in spec["containers"]
            for p in c.get("ports", [])
        )
        out.append(Endpoint(labels["app.kubernetes.io/name"], NAMESPACE, labels, ports))
    from bobench.battle.executors.k8s_jobs import LABEL_BATTLE, LABEL_PART_OF, LABEL_RUN_KEY, JobConfig
    from bobench.battle.k8s_publish import build_publish_job

    run_job = {LABEL_PART_OF: "bobench", LABEL_RUN_KEY: "0123abcd", LABEL_BATTLE: "b1"}
    publish = build_publish_job("toy", "onnx", digest="d" * 64, config=JobConfig(), store_url="s3://b/m",
                                triton_url="embedder:8001", target="cluster-gpu")  # fmt: skip
    publish_job = publish["spec"]["template"]["metadata"]["labels"]
    out += [
        Endpoint("run-job", NAMESPACE, run_job, (("", 8080, "TCP"),)),
        Endpoint("publish-job", NAMESPACE, publish_job, (("", 8080, "TCP"),)),
        Endpoint("stray", NAMESPACE, {"app.kubernetes.io/name": "stray", LABEL_PART_OF: "bobench"}, ()),
        Endpoint("client", "clients", {"app": "client"}, ()),
        Endpoint(
            "kube-dns", "kube-system", {"k8s-app": "kube-dns"}, (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))
        ),
        Endpoint("api-server", None, {}, (("https", 443, "TCP"), ("https-alt", 6443, "TCP"))),
    ]
    return out


def peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        return True
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": other.namespace}
        if not selects(peer["namespaceSelector"], ns_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return selects(peer.get("podSelector", {}), other.labels)


def port_matches(rule_ports: list[dict] | None, dst: Endpoint, number: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    names = {n: (num, proto) for n, num, proto in dst.ports}
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            if names.get(want) == (number, protocol):
                return True
        elif want <= number <= p.get("endPort", want):
            return True
    return False


def side_allows(
    policies: list[dict],
    direction: str,
    me: Endpoint,
    other: Endpoint,
    dst: Endpoint,
    number: int,
    protocol: str,
) -> bool:
    """Whether `me`'s policies of `direction` ("Ingress"/"Egress") let the flow through."""
    if me.namespace != NAMESPACE:
        return True  # only the bobench namespace has policies here
    mine = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], me.labels)
    ]
    if not mine:
        return True
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in mine:
        for rule in policy["spec"].get(key, []):
            peer_ok = not rule.get(peers) or any(peer_matches(q, NAMESPACE, other) for q in rule[peers])
            if peer_ok and port_matches(rule.get("ports"), dst, number, protocol):
                return True
    return False


def reachable(stack: list[dict]) -> set[tuple[str, str, int, str]]:
    """Every (source, destination, port, protocol) the policies let through, between distinct
    endpoints, where at least one side is in the bobench namespace."""
    policies = [d for d in stack if d["kind"] == "NetworkPolicy"]
    points = endpoints(stack)
    out = set()
    for src in points:
        for dst in points:
            if src == dst or NAMESPACE not in (src.namespace, dst.namespace):
                continue
            for _, number, protocol in dst.ports:
                if side_allows(policies, "Egress", src, dst, dst, number, protocol) and side_allows(
                    policies, "Ingress", dst, src, dst, number, protocol
                ):
                    out.add((src.name, dst.name, number, protocol))
    return out


def expected_flows(stack: list[dict]) -> set[tuple[str, str, int, str]]:
    in_namespace = [e.name for e in endpoints(stack) if e.namespace == NAMESPACE]
    flows = {(src, "kube-dns", 53, proto) for src in in_namespace for proto in ("UDP", "TCP")}
    tcp = [
        ("scheduler", "evaluator", 50051),
        ("scheduler", "minio", 9000),
        ("scheduler", "api-server", 443),
        ("scheduler", "api-server", 6443),
        ("evaluator", "embedder", 8001),
        ("evaluator", "minio", 9000),
        ("embedder", "minio", 9000),
        ("run-job", "minio", 9000),
        ("publish-job", "minio", 9000),
        ("publish-job", "embedder", 8001),  # publish Jobs load the models they write
        ("minio-setup", "minio", 9000),
        ("prometheus", "evaluator", 9102),
        ("prometheus", "scheduler", 9102),
        ("prometheus", "embedder", 8002),
        ("prometheus", "minio", 9000),
        ("grafana", "prometheus", 9090),
    ]
    # Clients: any pod of another namespace (the client and, as it happens, the DNS pods).
    others = [e.name for e in endpoints(stack) if e.namespace not in (NAMESPACE, None)]
    tcp += [(o, d, p) for o in others for d, p in (("scheduler", 50052), ("evaluator", 50051))]
    return flows | {(s, d, p, "TCP") for s, d, p in tcp}


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def stack(request, tmp_path_factory) -> list[dict]:
    return render_target(request.param, tmp_path_factory.mktemp(f"netpol-{request.param}"))[0]


def test_every_pod_is_under_default_deny_in_both_directions(stack):
    deny = [
        d
        for d in stack
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"] == {}
        and set(d["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ]
    assert [name_of(d) for d in deny] == ["NetworkPolicy/default-deny"]
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]


def test_the_policies_open_exactly_the_flows_the_design_needs(stack):
    got, want = reachable(stack), expected_flows(stack)
    assert not want - got, f"needed but blocked: {sorted(want - got)}"
    assert not got - want, f"open but not needed: {sorted(got - want)}"


def test_spot_checks_of_the_matrix(stack):
    flows = reachable(stack)
    assert ("scheduler", "evaluator", 50051, "TCP") in flows
    assert ("evaluator", "minio", 9000, "TCP") in flows
    for src in ("stray", "client", "grafana", "prometheus", "minio", "scheduler", "run-job"):
        assert (src, "embedder", 8001, "TCP") not in flows, src  # Triton's gRPC (and model control)
    assert ("client", "minio", 9000, "TCP") not in flows
    assert ("evaluator", "api-server", 443, "TCP") not in flows


def test_the_matrix_sees_an_extra_rule_and_a_missing_one(stack):
    """The checker itself: widening or dropping a rule changes the computed flows."""
    widened = json.loads(json.dumps(stack))
    embedder_in = next(
        d for d in widened if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "embedder-ingress"
    )
    embedder_in["spec"]["ingress"][0]["from"].append({"podSelector": {}})
    assert ("stray", "embedder", 8001, "TCP") not in reachable(widened)  # the stray pod's egress still denies
    stray_out = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    assert ("stray", "embedder", 8001, "TCP") in reachable(widened + [stray_out])
    narrowed = [d for d in stack if d["metadata"]["name"] != "evaluator-egress"]
    assert ("evaluator", "minio", 9000, "TCP") not in reachable(narrowed)
