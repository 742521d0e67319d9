"""Run gRPC services in a background thread with their own event loop (tests, benchmarks, notebooks).

    with BackgroundServer([binding], metrics_port=0) as running:
        client = EvaluatorClient(running.address)

The server is real (grpc.aio on a socket, with the same bootstrap as the services); only its event
loop lives in a thread of the calling process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from bobench.errors import Unavailable
from bobench.rpc.server import RunningServer, ServiceBinding, start_server


class BackgroundServer:
    """Context manager: starts `start_server(services, **options)` in a daemon thread, stops it on exit."""

    def __init__(
        self, services: Sequence[ServiceBinding | tuple], *, start_timeout_s: float = 30.0, **options: Any
    ) -> None:
        self._services = services
        self._options = options
        self._start_timeout_s = start_timeout_s
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="grpc-server-loop", daemon=True)
        self.running: RunningServer | None = None

    def start(self) -> RunningServer:
        """Start the loop thread and the server; returns the RunningServer (its port is bound)."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_server(self._services, **self._options), self.loop)
        try:
            self.running = future.result(timeout=self._start_timeout_s)
        except TimeoutError:
            raise Unavailable(f"server did not start within {self._start_timeout_s} s") from None
        return self.running

    def run(self, coroutine, timeout_s: float | None = 30.0) -> Any:
        """Run a coroutine on the server's loop and return its result (e.g. health updates)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=timeout_s)

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop the server (draining for `grace_s`) and the loop thread."""
        if self.running is not None:
            self.run(self.running.stop(grace_s), timeout_s=grace_s + 30)
            self.running = None
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
