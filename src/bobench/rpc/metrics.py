"""Prometheus metrics shared by every bobench gRPC service, and the HTTP endpoint that serves them.

Metric objects live in the process-wide default registry, created once at import; services add their
own metrics (e.g. the evaluator's run counters) in their modules.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

# Buckets from 1 ms to 10 min: unary calls take milliseconds, an Evaluate stream lasts a whole run.
_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)

RPC_LATENCY_SECONDS = Histogram(
    "bobench_rpc_latency_seconds",
    "Wall time of a gRPC call on the server, from the request to the final status.",
    ["service", "method", "code"],
    buckets=_LATENCY_BUCKETS_S,
)
RPC_REQUESTS = Counter(
    "bobench_rpc_requests",
    "gRPC calls handled, by final status code.",
    ["service", "method", "code"],
)


def start_metrics_http(port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics over HTTP on `host:port` (0 = pick a free port) in a daemon thread.

    Returns the bound port.
    """
    httpd, _thread = start_http_server(port, addr=host)
    bound = int(httpd.server_port)
    log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return bound
