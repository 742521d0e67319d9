"""Every PromQL expression of the rendered deployment parses and evaluates in a real Prometheus: the
Grafana dashboard's panel queries (served-latency quantiles per backbone included) through
`/api/v1/query`, and the alert rules as Prometheus itself loads them from the rendered ConfigMap
(`/api/v1/rules` health after an evaluation). The Prometheus started here scrapes only itself on
127.0.0.1, so nothing leaves the loopback.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from deploy_render import render_target

from bobench.stack.procs import stop_pid
from bobench.stack.prometheus import prometheus_binary, start_prometheus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        prometheus_binary() is None,
        reason="prometheus binary not installed (apt-get install -y --no-install-recommends prometheus)",
    ),
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    return render_target("gpu", tmp_path_factory.mktemp("promql"))[0]


def config_map(stack: list[dict], prefix: str) -> dict[str, str]:
    return next(
        d["data"]
        for d in stack
        if d["kind"] == "ConfigMap" and re.fullmatch(rf"{prefix}-[a-z0-9]+", d["metadata"]["name"])
    )


@pytest.fixture(scope="module")
def prometheus(rendered, tmp_path_factory):
    """A real Prometheus with the rendered alert rules, evaluated every second."""
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "alerts.yml").write_text(config_map(rendered, "prometheus-config")["alerts.yml"])
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs: []\n"
    )
    service = start_prometheus(folder / "prometheus.yml", folder / "work")
    yield service
    stop_pid(service.pid, 10)


def api(address: str, path: str, **params: str) -> dict:
    """GET a Prometheus API path; an error answer (400 for a bad query) is returned, not raised."""
    url = f"http://{address}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback URL we built
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def query_error(address: str, expr: str) -> str | None:
    """Prometheus' error for an instant query of `expr`, or None when it evaluates."""
    answer = api(address, "/api/v1/query", query=expr)
    return None if answer["status"] == "success" else f"{answer.get('errorType')}: {answer.get('error')}"


def dashboard_queries(stack: list[dict]) -> list[tuple[str, str]]:
    out = []
    for text in config_map(stack, "grafana-dashboards").values():
        for panel in json.loads(text)["panels"]:
            out += [(panel["title"], t["expr"]) for t in panel.get("targets", [])]
    return out


def test_every_dashboard_query_parses_and_evaluates(rendered, prometheus):
    queries = dashboard_queries(rendered)
    assert any("nv_inference_request_summary_us" in e for _, e in queries)
    failures = []
    for title, expr in queries:  # Grafana substitutes $__rate_interval before sending the query
        error = query_error(prometheus.address, expr.replace("$__rate_interval", "1m"))
        if error:
            failures.append(f"{title!r}: {error}")
    assert not failures, "\n".join(failures)


def test_a_malformed_query_is_reported(prometheus):
    error = query_error(prometheus.address, 'max by (model) (nv_inference_request_summary_us{quantile="0.5"}')
    assert error is not None and "parse error" in error


def test_prometheus_loads_and_evaluates_every_alert_rule(rendered, prometheus):
    deadline = time.monotonic() + 30
    rules: list[dict] = []
    while time.monotonic() < deadline:
        rules = [r for g in api(prometheus.address, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        if rules and all(
            r.get("lastEvaluation", "").startswith("2") and not r["lastEvaluation"].startswith("0001")
            for r in rules
        ):
            break
        time.sleep(0.5)
    assert {r["name"] for r in rules} >= {"BobenchEmbedderDown", "BobenchTritonQueueTimeHigh"}
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    firing = {r["name"] for r in rules if r.get("state") in ("pending", "firing")}
    assert "BobenchEmbedderDown" in firing  # no embedder is scraped here: absent(up{job="embedder"})
