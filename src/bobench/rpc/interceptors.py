"""Server interceptors: one maps bobench errors to gRPC status codes, one records Prometheus metrics.

Servicers raise domain errors (`bobench.errors`); the error interceptor turns them into status codes
(the one table, `bobench.status_codes`) with the error's own message (KServe's interceptor idea).
Anything else is a bug: the caller gets INTERNAL with a generic message, the log gets the traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from bobench.rpc.metrics import RPC_LATENCY_SECONDS, RPC_REQUESTS
from bobench.status_codes import status_for

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server log has the details"
MAX_DETAILS_CHARS = 2000


def split_method(full_method: str) -> tuple[str, str]:
    """'/bobench.v1.Evaluator/Evaluate' -> ('bobench.v1.Evaluator', 'Evaluate')."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.rpartition("/")
    return service or "unknown", method or full_method


# A wrapper turns (behaviour, full method name) into a behaviour with the same calling convention.
UnaryWrapper = Callable[[Callable[..., Awaitable[Any]], str], Callable[..., Awaitable[Any]]]
StreamWrapper = Callable[[Callable[..., AsyncIterator[Any]], str], Callable[..., AsyncIterator[Any]]]


class Undecodable:
    """Stands in for a request whose bytes did not parse, so the error interceptor can answer
    INVALID_ARGUMENT (grpc.aio itself would answer UNKNOWN)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _safe(deserializer):
    if deserializer is None:
        return None

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:
            return Undecodable(exc)

    return deserialize


def _rewrap(
    handler: grpc.RpcMethodHandler,
    method: str,
    unary: UnaryWrapper,
    stream: StreamWrapper,
    safe_decode: bool = False,
):
    """A copy of `handler` whose behaviour is wrapped; response-streaming methods get `stream`.
    With `safe_decode`, a unary request that fails to parse arrives as an `Undecodable`."""
    if handler is None:
        return None
    decode = _safe(handler.request_deserializer) if safe_decode else handler.request_deserializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary(handler.unary_unary, method), decode, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            stream(handler.unary_stream, method), decode, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary(handler.stream_unary, method), handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        stream(handler.stream_stream, method), handler.request_deserializer, handler.response_serializer
    )


async def _abort_for(exc: Exception, context: aio.ServicerContext, method: str) -> None:
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("unexpected error in %s", method)
        await context.abort(code, INTERNAL_MESSAGE)
    message = str(exc) or type(exc).__name__
    if len(message) > MAX_DETAILS_CHARS:  # status details travel as a header: keep them small
        message = message[:MAX_DETAILS_CHARS] + " ... (message truncated)"
    log.info("%s -> %s: %s", method, code.name, message)
    await context.abort(code, message)


async def _reject_undecodable(request: Any, context: aio.ServicerContext, method: str) -> None:
    if isinstance(request, Undecodable):
        log.info("%s -> INVALID_ARGUMENT: undecodable request: %s", method, request.error)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"request of {method} is not a valid message: {request.error}"
        )


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """Maps exceptions raised by servicers to status codes (`bobench.status_codes.STATUS_TABLE`); a request whose bytes
    do not parse is INVALID_ARGUMENT."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        return _rewrap(handler, handler_call_details.method, self._unary, self._stream, safe_decode=True)

    @staticmethod
    def _unary(behaviour, method):
        async def wrapped(request, context):
            await _reject_undecodable(request, context, method)
            try:
                return await behaviour(request, context)
            except aio.AbortError:
                raise
            except Exception as exc:
                await _abort_for(exc, context, method)

        return wrapped

    @staticmethod
    def _stream(behaviour, method):
        async def wrapped(request, context):
            await _reject_undecodable(request, context, method)
            try:
                async for item in behaviour(request, context):
                    yield item
            except aio.AbortError:
                raise
            except Exception as exc:
                await _abort_for(exc, context, method)

        return wrapped


def _final_code(context: aio.ServicerContext, failed: BaseException | None) -> str:
    if isinstance(failed, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    code = context.code()
    if code is None:  # never set explicitly: OK unless an exception escaped
        return grpc.StatusCode.UNKNOWN.name if failed is not None else grpc.StatusCode.OK.name
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class MetricsInterceptor(aio.ServerInterceptor):
    """Records `bobench_rpc_latency_seconds` and `bobench_rpc_requests_total` by service, method, code.

    Install it before (outside) the error interceptor so it sees the mapped status code.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        return _rewrap(handler, handler_call_details.method, self._unary, self._stream)

    @staticmethod
    def _record(method: str, context: aio.ServicerContext, t0: float, failed: BaseException | None) -> None:
        service, name = split_method(method)
        code = _final_code(context, failed)
        RPC_LATENCY_SECONDS.labels(service, name, code).observe(time.perf_counter() - t0)
        RPC_REQUESTS.labels(service, name, code).inc()

    @classmethod
    def _unary(cls, behaviour, method):
        async def wrapped(request, context):
            t0, failed = time.perf_counter(), None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                failed = exc
                raise
            finally:
                cls._record(method, context, t0, failed)

        return wrapped

    @classmethod
    def _stream(cls, behaviour, method):
        async def wrapped(request, context):
            t0, failed = time.perf_counter(), None
            try:
                async for item in behaviour(request, context):
                    yield item
            except BaseException as exc:
                failed = exc
                raise
            finally:
                cls._record(method, context, t0, failed)

        return wrapped
