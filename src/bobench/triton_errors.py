"""Translate tritonclient exceptions into bobench domain errors (one place, used by every client).

A leaf beside the status table (`bobench.status_codes`), so embedders, protocols, export and serving
all translate Triton's errors the same way without importing one another. It reads the exception's
`status()` and `message()` only, so it never imports tritonclient. It also owns the names of the
restricted-protocol headers, which its messages explain (`bobench.serving.triton_access` uses them).
"""

from __future__ import annotations

from bobench.errors import BobenchError, DeadlineExceeded, NotFound, PermissionDenied, Unavailable
from bobench.status_codes import code_named, error_class

ADMIN_HEADER = "bobench-admin-key"
SERVICE_HEADER = "bobench-service-key"
GRPC_RESTRICTED_PREFIX = "triton-grpc-protocol-"
# grpc's words for a call on a channel that was closed ("Cannot invoke RPC on closed channel!", a
# ValueError) or closed under it ("Channel closed!": CANCELLED, or a status-less "Cannot invoke RPC:
# Channel closed!"): the client's own channel went away (another thread replaced it after the server
# died), a transport failure a fresh channel cures, never the caller's cancellation
CLOSED_CHANNEL = ("closed channel", "channel closed")
KEY_SETTINGS = {  # header -> the setting (and its environment variable) that holds its key
    ADMIN_HEADER: "triton_admin_key (BOBENCH_TRITON_ADMIN_KEY)",
    SERVICE_HEADER: "triton_service_key (BOBENCH_TRITON_SERVICE_KEY)",
}


def triton_status(exc: Exception) -> str:
    """The gRPC status name of a tritonclient error ("UNAVAILABLE", ...), or "" when it has none."""
    status = getattr(exc, "status", None)
    raw = status() if callable(status) else status
    return str(raw or "").rsplit(".", 1)[-1].upper()


def to_bobench_error(exc: Exception, where: str) -> BobenchError:
    """A bobench error for a failed Triton call; `where` names the model and server for the message.

    Triton reports an unknown model as INVALID_ARGUMENT ("unknown model"/"is not found"); that
    becomes NotFound so callers can tell a typo in the model name from a malformed request. A call
    without the key of a restricted protocol (Triton: UNAVAILABLE "... is restricted, expecting
    header 'H'") becomes PermissionDenied naming the setting that holds the key: it is not transient,
    so nobody retries it. A call on or over a closed channel (CLOSED_CHANNEL) is Unavailable.
    """
    if isinstance(exc, BobenchError):
        return exc
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    status = triton_status(exc)
    code = code_named(status) if status else None
    cls = error_class(code) if code is not None else BobenchError
    lowered = (text or "").lower()
    if "is restricted, expecting header" in lowered:
        return PermissionDenied(f"{where}: refused by Triton ({status or 'error'}): {_missing_key(text)}")
    if "unknown model" in lowered or ("is not found" in lowered and "model" in lowered):
        cls = NotFound
    elif status == "" and "deadline exceeded" in lowered:
        cls = DeadlineExceeded
    elif status in ("", "CANCELLED") and any(words in lowered for words in CLOSED_CHANNEL):
        cls = Unavailable
    return cls(f"{where}: {status or 'error'}: {text}")


def _missing_key(text: str) -> str:
    """What a refused call lacked, from Triton's "expecting header 'H'" (gRPC headers carry a prefix)."""
    header = text.split("expecting header", 1)[-1].strip(" '\"")
    header = header.split("'", 1)[0].removeprefix(GRPC_RESTRICTED_PREFIX)
    setting = KEY_SETTINGS.get(header)
    if setting is None:
        return f"the call needs the header {header!r} ({text})"
    return (
        f"missing or wrong key for header {header!r}: set {setting} to the key Triton was started with "
        f"(Triton: {text})"
    )
