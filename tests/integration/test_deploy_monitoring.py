"""Monitoring of the rendered deployment: the Prometheus config and alert rules (promtool check config /
check rules / test rules on the files as rendered into the ConfigMap), scrape targets for every metrics
port, and the Grafana dashboard's queries against the metric names the services export. That every
dashboard and alert expression parses in a real Prometheus is tests/integration/test_deploy_promql.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_render import DEPLOY, container, find, pod_specs, port, render_target, selects

# Triton's metric families (server 2.51; nv_gpu_* only on GPU nodes; *_summary_us with
# --metrics-config=summary_latencies=true) — Triton is not Python, so these cannot be read from a
# registry like bobench's own metrics.
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
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
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
    "bobench.battle.executors.pool",
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
ALERTS = {
    "BobenchEmbedderDown",
    "BobenchEvaluatorsDown",
    "BobenchSchedulerDown",
    "BobenchRunErrorRate",
    "BobenchTritonQueueTimeHigh",
    "BobenchSchedulerQueueStuck",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> list[dict[str, Any]]:
    return render_target("gpu", tmp_path_factory.mktemp("monitoring"))[0]


def generated(docs: list[dict], kind: str, prefix: str) -> dict[str, Any]:
    """An object made by a kustomize generator (name = prefix + '-' + content hash)."""
    hits = [
        d for d in docs if d["kind"] == kind and re.fullmatch(rf"{prefix}-[a-z0-9]+", d["metadata"]["name"])
    ]
    assert len(hits) == 1, f"expected one generated {kind} {prefix}-<hash>, got {len(hits)}"
    return hits[0]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (apt-get install -y --no-install-recommends prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must check the Prometheus config")
        pytest.skip(reason)
    return path


def rendered_prometheus_dir(stack: list[dict], tmp_path: Path) -> Path:
    """The prometheus-config ConfigMap written out as the pod sees /etc/prometheus."""
    for key, text in generated(stack, "ConfigMap", "prometheus-config")["data"].items():
        (tmp_path / key).write_text(text)
    return tmp_path


def run_promtool(*args: str, cwd: Path) -> None:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


# -- Prometheus ------------------------------------------------------------------------------------
def test_prometheus_loads_its_config_and_the_alert_rules(stack, tmp_path):
    prometheus = container(stack, "Deployment", "prometheus", "prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["args"]
    folder = rendered_prometheus_dir(stack, tmp_path)
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    run_promtool("check", "config", "prometheus.yml", cwd=folder)  # also parses the rule files
    run_promtool("check", "rules", "alerts.yml", cwd=folder)
    rules = yaml.safe_load((folder / "alerts.yml").read_text())
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} == ALERTS


def test_alert_rule_unit_tests_pass_on_the_rendered_rules(stack, tmp_path):
    folder = rendered_prometheus_dir(stack, tmp_path)
    shutil.copy(DEPLOY / "k8s" / "prometheus" / "alerts_test.yml", folder / "alerts_test.yml")
    run_promtool("test", "rules", "alerts_test.yml", cwd=folder)


def test_alert_unit_tests_cover_the_embedder_down_alert():
    tests = yaml.safe_load((DEPLOY / "k8s" / "prometheus" / "alerts_test.yml").read_text())["tests"]
    cases = [
        c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == "BobenchEmbedderDown"
    ]
    assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases)


def test_a_broken_rule_fails_promtool(tmp_path):
    (tmp_path / "bad.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: sum(up\n"
    )
    done = subprocess.run(
        [promtool(), "check", "rules", "bad.yml"], capture_output=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode != 0


def scraped(config: dict[str, Any]) -> tuple[set[str], set[tuple[str, int]]]:
    static = {
        t for job in config["scrape_configs"] for s in job.get("static_configs", []) for t in s["targets"]
    }
    dns = {
        (n, d["port"])
        for job in config["scrape_configs"]
        for d in job.get("dns_sd_configs", [])
        for n in d["names"]
    }
    return static, dns


def test_prometheus_scrapes_every_metrics_port(stack):
    config = yaml.safe_load(generated(stack, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    static, dns = scraped(config)
    services = [d for d in stack if d["kind"] == "Service"]
    for workload, meta, spec in pod_specs(stack):
        wanted = meta.get("annotations", {}).get("prometheus.io/port")
        if wanted is None:
            continue
        assert any(str(p["containerPort"]) == wanted for c in spec["containers"] for p in c.get("ports", []))
        fronting = [s for s in services if selects({"matchLabels": s["spec"]["selector"]}, meta["labels"])]
        addresses = {f"{s['metadata']['name']}:{wanted}" for s in fronting}
        by_dns = {
            (s["metadata"]["name"], int(wanted)) for s in fronting if s["spec"].get("clusterIP") == "None"
        }
        assert addresses & static or by_dns & dns, f"{workload}: metrics port {wanted} is scraped by no job"
    evaluator = container(stack, "Deployment", "evaluator", "evaluator")
    assert ("evaluator-headless", port(evaluator, "metrics")) in dns
    assert "embedder:8002" in static and "scheduler:9102" in static


# -- Grafana ------------------------------------------------------------------------------------------
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


def panel_exprs(stack: list[dict]) -> list[tuple[str, str]]:
    return [
        (p["title"], t["expr"])
        for b in dashboards(stack).values()
        for p in b["panels"]
        for t in p.get("targets", [])
    ]


def test_dashboard_and_alert_queries_use_metrics_the_services_export(stack):
    known = exported_metric_names() | TRITON_METRICS | {"up"}
    rules = yaml.safe_load(generated(stack, "ConfigMap", "prometheus-config")["data"]["alerts.yml"])
    exprs = panel_exprs(stack) + [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
    used = set()
    for title, expr in exprs:
        names = promql_metric_names(expr)
        assert names, f"{title!r}: no metric in {expr!r}"
        assert names <= known, f"{title!r}: unknown {sorted(names - known)}"
        used |= names
    required = {
        "nv_inference_request_summary_us",
        "nv_inference_queue_summary_us",
        "nv_inference_count",
        "nv_inference_request_failure",
        "bobench_rpc_latency_seconds_bucket",
        "bobench_scheduler_runs",
        "bobench_scheduler_queue_depth",
    }
    assert required <= used, sorted(required - used)


def test_dashboard_shows_served_latency_quantiles_per_backbone(stack):
    served = [e for _, e in panel_exprs(stack) if "nv_inference_request_summary_us" in e]
    for quantile in ("0.5", "0.95", "0.99"):
        hits = [e for e in served if f'quantile="{quantile}"' in e]
        assert hits and all(re.search(r"by \(model\)", e) for e in hits), quantile
    assert any('quantile="0.99"' in e for _, e in panel_exprs(stack) if "nv_inference_queue_summary_us" in e)


def test_grafana_provisioning_wires_datasource_dashboards_and_prometheus(stack):
    source = yaml.safe_load(generated(stack, "ConfigMap", "grafana-datasources")["data"]["prometheus.yaml"])
    datasource = source["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    find(stack, "Service", "prometheus")
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
