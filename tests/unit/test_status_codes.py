"""The one status <-> error table (bobench.status_codes): both directions agree, retries are decided
once, and every side (interceptor, client, gRPC executor, Triton translation) reads the same table."""

from __future__ import annotations

import grpc
import pytest

from bobench import errors
from bobench.status_codes import (
    DECODE_ONLY,
    LIMIT_PREFIX,
    STATUS_TABLE,
    error_class,
    is_retryable,
    status_for,
)

EVERY_ERROR = [
    errors.InvalidArgument,
    errors.NotFound,
    errors.AlreadyExists,
    errors.FailedPrecondition,
    errors.Unavailable,
    errors.DeadlineExceeded,
    errors.Cancelled,
    errors.Unauthenticated,
    errors.PermissionDenied,
    errors.ResourceExhausted,
]


@pytest.mark.parametrize("cls", EVERY_ERROR, ids=lambda c: c.__name__)
def test_every_error_class_round_trips_through_its_status_code(cls):
    code = status_for(cls("x"))
    assert code is not grpc.StatusCode.INTERNAL
    assert error_class(code) is cls


def test_every_table_code_decodes_to_the_class_it_encodes():
    for row in STATUS_TABLE:
        assert status_for(row.error("x")) is row.code
        assert error_class(row.code) is row.error


def test_decode_only_codes_are_never_sent_by_our_servers():
    sent = {row.code for row in STATUS_TABLE}
    assert not sent & {row.code for row in DECODE_ONLY}


def test_unexpected_errors_are_internal_and_unknown_codes_the_base_class():
    assert status_for(RuntimeError("boom")) is grpc.StatusCode.INTERNAL
    assert status_for(errors.BobenchError("plain")) is grpc.StatusCode.INTERNAL
    assert error_class(grpc.StatusCode.INTERNAL) is errors.BobenchError
    assert error_class(grpc.StatusCode.UNKNOWN) is errors.BobenchError


def test_resource_exhausted_is_one_class_both_ways_and_retried_only_without_the_limit_prefix():
    assert status_for(errors.ResourceExhausted("busy")) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_class(grpc.StatusCode.RESOURCE_EXHAUSTED) is errors.ResourceExhausted
    assert is_retryable(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent streams")
    assert not is_retryable(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{LIMIT_PREFIX}runs per battle")


def test_only_transient_codes_are_retryable():
    retryable = {code for code in grpc.StatusCode if is_retryable(code)}
    assert retryable == {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }


def test_the_quota_errors_of_our_limits_carry_the_prefix_the_table_reads():
    from bobench.config import Settings
    from bobench.rpc.limits import limit_error

    error = limit_error("too many runs", "max_runs_per_battle", Settings())
    code = status_for(error)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and not is_retryable(code, str(error))


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("row", STATUS_TABLE + DECODE_ONLY, ids=lambda r: r.code.name)
def test_the_client_raises_the_table_class(row):
    from bobench.client import error_from_rpc

    error = error_from_rpc(_RpcError(row.code, "why"), "h:1", "Submit")
    assert type(error) is row.error and "Submit on h:1" in str(error)


class _TritonError(Exception):
    def __init__(self, status: str, message: str) -> None:
        self._status, self._message = status, message

    def status(self) -> str:
        return self._status

    def message(self) -> str:
        return self._message


@pytest.mark.parametrize("row", STATUS_TABLE + DECODE_ONLY, ids=lambda r: r.code.name)
def test_triton_errors_use_the_table(row):
    from bobench.triton_errors import to_bobench_error

    error = to_bobench_error(_TritonError(f"StatusCode.{row.code.name}", "shape mismatch"), "model 'm'")
    assert type(error) is row.error


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("Cannot invoke RPC on closed channel!"),  # a call on a channel already closed
        _TritonError("StatusCode.CANCELLED", "Channel closed!"),  # closed under an in-flight call
        _TritonError("", "Cannot invoke RPC: Channel closed!"),  # the status-less form (chaos test in CI)
    ],
    ids=["call-on-closed", "cancelled-in-flight", "status-less"],
)
def test_a_closed_channel_is_a_transport_failure_a_fresh_channel_cures(exc):
    from bobench.errors import Cancelled, Unavailable, is_transient_type
    from bobench.triton_errors import to_bobench_error

    error = to_bobench_error(exc, "model 'm'")
    assert type(error) is Unavailable and is_transient_type("Unavailable")
    assert (
        type(to_bobench_error(_TritonError("StatusCode.CANCELLED", "cancelled by the caller"), "m"))
        is Cancelled
    )
