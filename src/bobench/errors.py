"""Domain errors. One base class; `bobench.status_codes` maps each subclass to a gRPC status code, and
a run record names the kind of its error (`error_type`) by one of these classes."""


class BobenchError(Exception):
    """Base class of every error bobench raises on purpose."""


class InvalidArgument(BobenchError, ValueError):
    """Bad input: a malformed spec, a wrong backbone or dataset name, a corrupt image."""


class NotFound(BobenchError, KeyError):
    """A named thing (run, battle, model, file) does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class AlreadyExists(BobenchError):
    """A name that must be unique is taken (a duplicate registry entry)."""


class FailedPrecondition(BobenchError):
    """The system is not in a state that allows the operation (e.g. no GPU for TensorRT)."""


class Unavailable(BobenchError):
    """A dependency (server, store, optional package) cannot be reached or is missing."""


class DeadlineExceeded(BobenchError):
    """The operation ran past its deadline."""


class Cancelled(BobenchError):
    """The operation was cancelled by the caller."""


class Unauthenticated(BobenchError):
    """The caller presented no credentials, or credentials that are not valid (expired, unknown)."""


class PermissionDenied(BobenchError):
    """The caller is known but may not do this (a role it lacks, someone else's battle, a path outside
    the configured data roots)."""


class ResourceExhausted(BobenchError):
    """A configured limit was reached (message size, runs per battle, battles per identity, ...); the
    message names the limit and the setting that raises it."""


# The errors a retry may pass: the scheduler retries a run that raised or recorded one of them.
TRANSIENT_ERRORS: tuple[type[BobenchError], ...] = (Unavailable, DeadlineExceeded)
# The kinds a run record's `error_type` names (most specific first); anything else is INTERNAL_ERROR.
ERROR_TYPES: tuple[type[BobenchError], ...] = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    DeadlineExceeded,
    Cancelled,
    Unauthenticated,
    PermissionDenied,
    ResourceExhausted,
    BobenchError,  # a domain error of no finer kind
)
INTERNAL_ERROR = "internal"  # the error_type of an unexpected exception (a bug, not a domain error)


def error_type(exc: BaseException) -> str:
    """The kind of `exc` a run record stores: the name of its class in ERROR_TYPES (a subclass counts
    as its base), else INTERNAL_ERROR."""
    for cls in ERROR_TYPES:
        if isinstance(exc, cls):
            return cls.__name__
    return INTERNAL_ERROR


def is_transient_type(kind: str | None) -> bool:
    """True when a record's `error_type` names one of TRANSIENT_ERRORS."""
    return kind in {cls.__name__ for cls in TRANSIENT_ERRORS}
