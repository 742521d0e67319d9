"""Service-tier fixtures: run async (grpc.aio) servicers under grpc_testing, in process, no sockets.

grpc_testing drives synchronous servicers; `AioServicerAdapter` runs each async method on one event
loop in a background thread and maps bobench errors to status codes exactly as the server's error
interceptor does, so these tests see the codes a real client would.
"""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest
from doubles import register_sleepy_protocol

from bobench.rpc.interceptors import INTERNAL_MESSAGE
from bobench.status_codes import status_for


class AioServicerAdapter:
    """Exposes an async servicer's methods as the synchronous callables grpc_testing expects."""

    def __init__(self, servicer, loop: asyncio.AbstractEventLoop) -> None:
        self._servicer = servicer
        self._loop = loop

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def _abort(self, context, exc: Exception):
        code = status_for(exc)
        context.abort(code, INTERNAL_MESSAGE if code.name == "INTERNAL" else str(exc))

    def __getattr__(self, name):
        method = getattr(self._servicer, name)
        if inspect.isasyncgenfunction(method):
            return self._stream(method)
        if inspect.iscoroutinefunction(method):
            return self._unary(method)
        return method

    def _unary(self, method):
        def call(request, context):
            try:
                return self._run(method(request, context))
            except Exception as exc:
                self._abort(context, exc)

        return call

    def _stream(self, method):
        def call(request, context):
            agen = method(request, context)
            try:
                while True:
                    if not context.is_active():  # the client cancelled: close the generator as grpc.aio would
                        self._run(agen.aclose())
                        return
                    try:
                        item = self._run(agen.__anext__())
                    except StopAsyncIteration:
                        return
                    yield item
            except Exception as exc:
                self._abort(context, exc)

        return call


@pytest.fixture(scope="session")
def aio_loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def sleepy_protocol():
    """A protocol that reports progress every `step_s` for `steps` steps (cancellation tests)."""
    return register_sleepy_protocol()


@pytest.fixture
def testing_server(aio_loop):
    """`make(service_descriptor, async_servicer)` -> a grpc_testing server for that service."""
    import grpc_testing

    def make(service_descriptor, servicer):
        return grpc_testing.server_from_dictionary(
            {service_descriptor: AioServicerAdapter(servicer, aio_loop)}, grpc_testing.strict_real_time()
        )

    return make
