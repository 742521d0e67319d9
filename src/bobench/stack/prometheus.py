"""Prometheus for the local stack and the integration tests: config from TEMPLATE, start, query.

Prometheus cannot listen on port 0 (it needs a concrete --web.listen-address and does not report a
bound port), so the port is chosen by bind-probe and the start is retried if another process takes
it first. Its lifecycle API (`/-/quit`, `/-/reload`) and admin API (TSDB delete/snapshot) stay off:
any local process can reach the port, so neither may stop it or erase what it scraped.
"""

from __future__ import annotations

import json
import logging
import shutil
import string
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bobench.errors import Unavailable
from bobench.stack.procs import Service, probe_free_port, spawn, stop_pid, wait_until

log = logging.getLogger(__name__)

# The one template of the local stack's config: package data, so a wheel install (an image) renders the
# same file as a checkout.
TEMPLATE = Path(__file__).with_name("prometheus.local.yml.tmpl")


def prometheus_binary() -> str | None:
    """Path of the `prometheus` binary (Debian package) or None."""
    return shutil.which("prometheus")


def write_config(path: str | Path, targets: dict[str, list[str]], scrape_interval_s: float = 5.0) -> Path:
    """Write a config scraping `targets` (job name -> ["host:port", ...], /metrics over HTTP)."""
    template = TEMPLATE.read_text()
    jobs = []
    for job, addresses in sorted(targets.items()):
        if addresses:
            jobs.append(
                f"  - job_name: {json.dumps(job)}\n    static_configs:\n"
                f"      - targets: {json.dumps(sorted(addresses))}"
            )
    interval = f"{scrape_interval_s:g}s"
    text = string.Template(template).substitute(
        SCRAPE_INTERVAL=interval, SCRAPE_CONFIGS="\n".join(jobs) or "  []"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def _get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback URL we built
        return json.loads(resp.read())


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:  # noqa: S310
        return resp.status == 200


def start_prometheus(
    config: str | Path,
    work_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    attempts: int = 3,
    timeout_s: float = 60.0,
) -> Service:
    """Start Prometheus with `config`; returns the Service (address = host:port of its HTTP API).

    Raises Unavailable when the binary is absent or it does not become ready (with the log tail).
    """
    binary = prometheus_binary()
    if binary is None:
        raise Unavailable(
            "prometheus binary not found (apt-get install -y --no-install-recommends prometheus)"
        )
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        port = probe_free_port(host)
        log_path = work / f"prometheus-{attempt}.log"
        proc = spawn(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address={host}:{port}",
            ],  # no --web.enable-lifecycle / --web.enable-admin-api: nobody may quit, reload or wipe it
            log_path,
        )
        url = f"http://{host}:{port}"
        try:
            wait_until(lambda u=url: _ready(u), proc, "Prometheus", log_path, timeout_s)
            log.info("Prometheus on %s (pid %d)", url, proc.pid)
            return Service("prometheus", proc.pid, f"{host}:{port}", f"{host}:{port}", str(log_path))
        except Unavailable as exc:
            last = exc
            stop_pid(proc.pid, 5, proc)
    raise Unavailable(f"Prometheus did not start after {attempts} attempts: {last}")


def query(address: str, promql: str) -> list[dict[str, Any]]:
    """Instant query; returns the result vector. Raises Unavailable on an API error."""
    url = f"http://{address}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    doc = _get_json(url)
    if doc.get("status") != "success":
        raise Unavailable(f"Prometheus query {promql!r} failed: {doc}")
    return doc["data"]["result"]


def targets_health(address: str) -> dict[str, str]:
    """Scrape target health by job/instance: {"scheduler/127.0.0.1:1234": "up", ...}."""
    doc = _get_json(f"http://{address}/api/v1/targets")
    return {
        f"{t['labels']['job']}/{t['labels']['instance']}": t["health"] for t in doc["data"]["activeTargets"]
    }
