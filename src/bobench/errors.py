"""Domain errors. One base class; the gRPC layer maps each subclass to a status code."""


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
