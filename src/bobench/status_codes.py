"""The one table between gRPC status codes and `bobench.errors`, and which codes a retry may pass.

Every side uses it: the server's error interceptor (error -> code), the Python clients and the
scheduler's gRPC executor (code -> error, retry or not), the Triton client translation (Triton's
status names). A leaf below every package, so none of them imports another to agree on a code.

RESOURCE_EXHAUSTED is ResourceExhausted both ways. Our servers send it for a quota (runs per battle,
battles in flight, images per dataset: `bobench.rpc.limits`), and those messages start with
`LIMIT_PREFIX`: a retry cannot pass a configured limit, so they are not retryable. Without the
prefix it is an overload (gRPC's own concurrency or flow-control refusals), which a retry may pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from bobench import errors

LIMIT_PREFIX = "limit reached: "  # the start of every quota error's message (`bobench.rpc.limits`)


@dataclass(frozen=True)
class StatusRow:
    """One code <-> error class pairing; `retryable`: a later attempt may succeed (transient)."""

    code: grpc.StatusCode
    error: type[errors.BobenchError]
    retryable: bool


# Error -> code: the first row whose class matches wins (most specific first). Code -> error: every
# row, then DECODE_ONLY for codes our servers never send but gRPC or other servers may.
STATUS_TABLE: tuple[StatusRow, ...] = (
    StatusRow(grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument, False),
    StatusRow(grpc.StatusCode.NOT_FOUND, errors.NotFound, False),
    StatusRow(grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists, False),
    StatusRow(grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition, False),
    StatusRow(grpc.StatusCode.UNAVAILABLE, errors.Unavailable, True),
    StatusRow(grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded, True),
    StatusRow(grpc.StatusCode.CANCELLED, errors.Cancelled, False),
    StatusRow(grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated, False),
    StatusRow(grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied, False),
    StatusRow(grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted, True),  # unless a limit
)
DECODE_ONLY: tuple[StatusRow, ...] = (
    StatusRow(grpc.StatusCode.OUT_OF_RANGE, errors.InvalidArgument, False),
    StatusRow(grpc.StatusCode.UNIMPLEMENTED, errors.FailedPrecondition, False),
    StatusRow(grpc.StatusCode.ABORTED, errors.Unavailable, True),
)
_ROW_OF_CODE = {row.code: row for row in (*DECODE_ONLY, *STATUS_TABLE)}


def is_limit_message(details: str) -> bool:
    """True for the message of a quota error (not a transient overload)."""
    return details.startswith(LIMIT_PREFIX)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code a domain error maps to (INTERNAL for anything unexpected)."""
    for row in STATUS_TABLE:
        if isinstance(exc, row.error):
            return row.code
    return grpc.StatusCode.INTERNAL


def error_class(code: grpc.StatusCode) -> type[errors.BobenchError]:
    """The bobench error class of a status code (BobenchError itself for INTERNAL, UNKNOWN, ...)."""
    row = _ROW_OF_CODE.get(code)
    return row.error if row is not None else errors.BobenchError


def code_named(name: str) -> grpc.StatusCode | None:
    """The status code called `name` ("UNAVAILABLE"), or None for a name gRPC does not have."""
    try:
        return grpc.StatusCode[name]
    except KeyError:
        return None


def is_retryable(code: grpc.StatusCode, details: str = "") -> bool:
    """True when a call that failed with `code` (and message `details`) may pass on a later attempt."""
    row = _ROW_OF_CODE.get(code)
    if row is None or not row.retryable:
        return False
    return not (code is grpc.StatusCode.RESOURCE_EXHAUSTED and is_limit_message(details))
