"""One bootstrap for every bobench gRPC service: grpc.aio server, health, reflection, message-size
limits, the error and metrics interceptors, a Prometheus endpoint, graceful stop on SIGTERM/SIGINT.

    running = await start_server([ServiceBinding.of(add_EvaluatorServicer_to_server, servicer)], port=0)
    server, port = running          # unpacks like a (server, port) pair
    await serve_forever([...])      # what a service's main() calls; prints one JSON "ready" line

Health: the overall service "" is SERVING from start until stop (liveness: a probe on it never
restarts a process because a dependency is down). A binding's own service name follows its
`readiness` check when it has one (readiness: e.g. the evaluator is only ready while its Triton
answers): NOT_SERVING until the first check passes, then re-checked every `readiness_interval_s`; a
check that raises counts as not ready. After `stop()` begins every name is NOT_SERVING for good.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from bobench.errors import InvalidArgument
from bobench.rpc.auth import Authenticator, AuthInterceptor, ServerAuth, server_credentials
from bobench.rpc.interceptors import ErrorMappingInterceptor, MetricsInterceptor
from bobench.rpc.metrics import start_metrics_http

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_MB = 64
DEFAULT_GRACE_S = 10.0


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer, the generated function that adds it to a server, and its full service name."""

    name: str  # e.g. "bobench.v1.Evaluator": health status and reflection use it
    servicer: Any
    add_to_server: Callable[[Any, aio.Server], None]
    readiness: Callable[[], Awaitable[bool]] | None = None  # None: SERVING from start to stop
    readiness_interval_s: float = 5.0

    @classmethod
    def of(
        cls,
        add_to_server: Callable[[Any, aio.Server], None],
        servicer: Any,
        *,
        readiness: Callable[[], Awaitable[bool]] | None = None,
        readiness_interval_s: float = 5.0,
    ) -> ServiceBinding:
        """Derive the full service name from a generated `add_<Name>Servicer_to_server` function.
        `readiness` (optional) decides this service's health status; see the module docstring."""
        fn_name = add_to_server.__name__
        if not (fn_name.startswith("add_") and fn_name.endswith("Servicer_to_server")):
            raise InvalidArgument(f"{fn_name!r} is not a generated add_<Service>Servicer_to_server function")
        short = fn_name[len("add_") : -len("Servicer_to_server")]
        pb2 = importlib.import_module(add_to_server.__module__.removesuffix("_grpc"))
        try:
            full = pb2.DESCRIPTOR.services_by_name[short].full_name
        except KeyError:
            raise InvalidArgument(f"service {short!r} is not defined in {pb2.__name__}") from None
        if readiness_interval_s <= 0:
            raise InvalidArgument(f"readiness_interval_s must be > 0, got {readiness_interval_s}")
        return cls(full, servicer, add_to_server, readiness, readiness_interval_s)


@dataclass
class RunningServer:
    """A started server. Unpacks as `(server, port)`; also carries health, metrics port and names."""

    server: aio.Server
    port: int
    host: str
    services: list[str]
    health: health_aio.HealthServicer
    metrics_port: int | None = None
    grace_s: float = DEFAULT_GRACE_S
    auth: bool = False  # calls need credentials (bobench.rpc.auth)
    tls: bool = False
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _watches: list[asyncio.Task] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.server, self.port))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def ready_info(self) -> dict[str, Any]:
        """What `serve_forever` prints once serving (tests and `make up` parse it)."""
        return {
            "event": "serving",
            "services": self.services,
            "address": self.address,
            "host": self.host,
            "port": self.port,
            "metrics_port": self.metrics_port,
            "auth": self.auth,
            "tls": self.tls,
            "pid": os.getpid(),
        }

    async def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, stop accepting calls, let calls in flight finish for `grace_s`."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for task in self._watches:  # a readiness check must not turn a stopping service SERVING again
            task.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)
        await self.health.enter_graceful_shutdown()
        grace = self.grace_s if grace_s is None else grace_s
        log.info("stopping %s (grace %.1f s)", self.address, grace)
        await self.server.stop(grace)


def _bindings(services: Sequence[ServiceBinding | tuple]) -> list[ServiceBinding]:
    out = []
    for item in services:
        if isinstance(item, ServiceBinding):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and callable(item[0]):
            out.append(ServiceBinding.of(item[0], item[1]))
        else:
            raise InvalidArgument(f"expected a ServiceBinding or (add_to_server, servicer), got {item!r}")
    return out


async def start_server(
    services: Sequence[ServiceBinding | tuple],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_message_mb: int = DEFAULT_MAX_MESSAGE_MB,
    metrics_port: int | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    extra_interceptors: Sequence[aio.ServerInterceptor] = (),
    max_connection_age_s: float | None = None,
    auth: ServerAuth | None = None,
) -> RunningServer:
    """Start a grpc.aio server with `services` plus health and reflection on `host:port`.

    `port=0` binds a free port, returned in the result. `metrics_port` (0 = pick) starts the Prometheus
    HTTP endpoint; None leaves it off. Messages above `max_message_mb` are refused with
    RESOURCE_EXHAUSTED. `max_connection_age_s` (None = never) closes each client connection (GOAWAY)
    after that age, calls in flight continuing to their end: a `dns:///` round-robin client then
    reconnects and re-resolves, so replicas added behind a headless Service get calls. `auth`
    (bobench.rpc.auth) turns on authentication and, with a certificate, TLS (mTLS with a CA); without
    it every caller may do everything, which is logged as a warning. Raises Unavailable when the
    address cannot be bound, InvalidArgument for unusable auth files.
    """
    from bobench.errors import Unavailable

    bindings = _bindings(services)
    limit = int(max_message_mb * 1024 * 1024)
    auth = auth or ServerAuth()
    auth_interceptors = [AuthInterceptor(Authenticator(auth))] if auth.enabled else []
    credentials = server_credentials(auth) if auth.tls or auth.tls_ca else None
    server = aio.server(
        interceptors=[
            MetricsInterceptor(),
            *auth_interceptors,
            ErrorMappingInterceptor(),
            *extra_interceptors,
        ],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
            *(
                [("grpc.max_connection_age_ms", int(max_connection_age_s * 1000))]
                if max_connection_age_s
                else []
            ),
        ],
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for b in bindings:
        b.add_to_server(b.servicer, server)
    names = [b.name for b in bindings]
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    try:
        address = f"{host}:{port}"
        bound = (
            server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        )
    except RuntimeError as exc:
        raise Unavailable(f"cannot bind gRPC server to {host}:{port}: {exc}") from None
    if bound == 0:
        raise Unavailable(f"cannot bind gRPC server to {host}:{port}")
    await server.start()
    for name in ["", *(b.name for b in bindings if b.readiness is None)]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    for b in bindings:
        if b.readiness is not None:
            await health.set(b.name, health_pb2.HealthCheckResponse.NOT_SERVING)
    bound_metrics = start_metrics_http(metrics_port, host) if metrics_port is not None else None
    log.info("serving %s on %s:%d", ", ".join(names), host, bound)
    if not auth.enabled:
        log.warning(
            "%s on %s:%d runs WITHOUT AUTHENTICATION: anyone who can reach the port may submit, cancel "
            "and read everything (set auth_tokens_file, auth_jwks_file or tls_cert/tls_key/tls_ca)",
            ", ".join(names),
            host,
            bound,
        )
    running = RunningServer(
        server, bound, host, names, health, bound_metrics, grace_s, auth.enabled, auth.tls
    )
    running._watches = [asyncio.create_task(_watch_readiness(health, b)) for b in bindings if b.readiness]
    return running


async def _watch_readiness(health: health_aio.HealthServicer, binding: ServiceBinding) -> None:
    """Set `binding.name` SERVING / NOT_SERVING from its readiness check, forever (until cancelled)."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    last: bool | None = None
    while True:
        try:
            ready = bool(await binding.readiness())
        except Exception as exc:  # cancellation (BaseException) still ends the loop
            log.debug("readiness check of %s raised %s: %s", binding.name, type(exc).__name__, exc)
            ready = False
        if ready != last:
            log.log(
                logging.INFO if ready else logging.WARNING,
                "%s %s",
                binding.name,
                "ready" if ready else "NOT ready",
            )
            await health.set(binding.name, serving if ready else not_serving)
            last = ready
        await asyncio.sleep(binding.readiness_interval_s)


async def serve_forever(
    services: Sequence[ServiceBinding | tuple],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_message_mb: int = DEFAULT_MAX_MESSAGE_MB,
    metrics_port: int | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    on_stop: Callable[[], Any] | None = None,
    max_connection_age_s: float | None = None,
    auth: ServerAuth | None = None,
) -> None:
    """Start the server, print ONE JSON line (see `RunningServer.ready_info`) to stdout, and serve
    until SIGTERM or SIGINT; then drain calls in flight for `grace_s` and call (or await) `on_stop`."""
    running = await start_server(
        services,
        host,
        port,
        max_message_mb=max_message_mb,
        metrics_port=metrics_port,
        grace_s=grace_s,
        max_connection_age_s=max_connection_age_s,
        auth=auth,
    )
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    sys.stdout.write(json.dumps(running.ready_info()) + "\n")
    sys.stdout.flush()
    waiter = asyncio.create_task(running.server.wait_for_termination())
    stopper = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stop_requested.is_set():
        log.info("signal received: draining")
        await running.stop()
    await waiter
    stopper.cancel()
    if on_stop is not None:
        result = on_stop()
        if inspect.isawaitable(result):
            await result
    log.info("server on %s stopped", running.address)
