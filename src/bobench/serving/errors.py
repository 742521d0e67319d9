"""Translate tritonclient exceptions into bobench domain errors (one place, used by every client)."""

from __future__ import annotations

from bobench.errors import (
    BobenchError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

_BY_STATUS: dict[str, type[BobenchError]] = {
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "NOT_FOUND": NotFound,
    "INVALID_ARGUMENT": InvalidArgument,
    "CANCELLED": Cancelled,
    "FAILED_PRECONDITION": FailedPrecondition,
    "UNIMPLEMENTED": FailedPrecondition,
}


def triton_status(exc: Exception) -> str:
    """The gRPC status name of a tritonclient error ("UNAVAILABLE", ...), or "" when it has none."""
    status = getattr(exc, "status", None)
    raw = status() if callable(status) else status
    return str(raw or "").rsplit(".", 1)[-1].upper()


def to_bobench_error(exc: Exception, where: str) -> BobenchError:
    """A bobench error for a failed Triton call; `where` names the model and server for the message.

    Triton reports an unknown model as INVALID_ARGUMENT ("unknown model"/"is not found"); that
    becomes NotFound so callers can tell a typo in the model name from a malformed request.
    """
    if isinstance(exc, BobenchError):
        return exc
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    status = triton_status(exc)
    cls = _BY_STATUS.get(status, BobenchError)
    lowered = (text or "").lower()
    if "protocol is restricted" in lowered:  # Triton answers a missing admin header UNAVAILABLE
        cls = FailedPrecondition
    elif "unknown model" in lowered or ("is not found" in lowered and "model" in lowered):
        cls = NotFound
    elif status == "" and "deadline exceeded" in lowered:
        cls = DeadlineExceeded
    return cls(f"{where}: {status or 'error'}: {text}")
