"""Authentication and authorisation of every bobench RPC (server side).

`AuthInterceptor` admits a call only with valid credentials, then only when the caller has a role
the method needs (`METHOD_ROLES`; `admin` may call everything, a method missing from the table is
admin-only). Health and reflection stay open so probes and tools work without credentials.

Credentials, in this order:
- `authorization: Bearer <token>` metadata: a static token whose SHA-256 is in the tokens file
  (`bobench.rpc.auth_tokens`), else, with a JWKS file configured, an OIDC/JWT (`bobench.rpc.auth_jwt`);
- a client certificate (mTLS: `tls_ca` set makes the server require one signed by that CA): its
  subject CN is the identity, its roles are those the tokens file gives that identity.

No credentials or invalid ones -> UNAUTHENTICATED; a role missing -> PERMISSION_DENIED. Servicers
read the admitted caller with `current_caller()` and check per-object rules with
`require_owner_or_admin` and `require_any_role` (raising PermissionDenied). Auth is on when a tokens
file, a JWKS file or a TLS certificate is configured (`ServerAuth.enabled`); without it
`current_caller()` is None and those checks allow everything.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from bobench.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from bobench.rpc.auth_tokens import ADMIN, READ, ROLES, SERVICE, SUBMIT, Identity, TokenStore
from bobench.rpc.interceptors import _rewrap

log = logging.getLogger(__name__)

__all__ = ["ADMIN", "READ", "ROLES", "SERVICE", "SUBMIT", "Identity"]

OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")  # fmt: skip
METHOD_ROLES: dict[str, frozenset[str]] = {
    "/bobench.v1.Evaluator/Evaluate": frozenset({SUBMIT, SERVICE}),
    "/bobench.v1.Evaluator/GetResult": frozenset({READ}),
    "/bobench.v1.Scheduler/SubmitBattle": frozenset({SUBMIT}),
    "/bobench.v1.Scheduler/CancelBattle": frozenset({SUBMIT}),  # own battles; admin any
    "/bobench.v1.Scheduler/GetBattle": frozenset({READ}),
    "/bobench.v1.Scheduler/ListBattles": frozenset({READ}),
    "/bobench.v1.Scheduler/ListResults": frozenset({READ}),
    "/bobench.v1.Scheduler/WatchBattle": frozenset({READ}),
}

_CALLER: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("bobench_caller", default=None)


@dataclass(frozen=True)
class ServerAuth:
    """What a server authenticates with (paths; "" = not used). See the module docstring."""

    tokens_file: str = ""
    jwks_file: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    roles_claim: str = "roles"
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""  # set: clients must present a certificate signed by it

    @classmethod
    def from_settings(cls, settings: Any) -> ServerAuth:
        return cls(
            tokens_file=settings.auth_tokens_file,
            jwks_file=settings.auth_jwks_file,
            jwt_issuer=settings.auth_jwt_issuer,
            jwt_audience=settings.auth_jwt_audience,
            roles_claim=settings.auth_roles_claim,
            tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
            tls_ca=settings.tls_ca,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.tokens_file or self.jwks_file or self.tls_cert or self.tls_ca)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


def server_credentials(auth: ServerAuth) -> grpc.ServerCredentials:
    """TLS credentials from the configured PEM files; with `tls_ca`, client certificates are
    required and verified against it. InvalidArgument names a missing or unreadable file."""
    if not (auth.tls_cert and auth.tls_key):
        raise InvalidArgument("tls_cert and tls_key must be set together (tls_ca needs both)")

    def read(path: str, setting: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"{setting} {path}: cannot be read ({exc.strerror})") from None

    pair = (read(auth.tls_key, "tls_key"), read(auth.tls_cert, "tls_cert"))
    ca = read(auth.tls_ca, "tls_ca") if auth.tls_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


class Authenticator:
    """Turns a call's metadata and TLS peer into an Identity (Unauthenticated when it cannot)."""

    def __init__(self, auth: ServerAuth) -> None:
        if auth.tls_ca and not auth.tls_cert:
            raise InvalidArgument("tls_ca is set without tls_cert and tls_key")
        self.tokens = TokenStore(auth.tokens_file) if auth.tokens_file else None
        self.jwt = None
        if auth.jwks_file:
            from bobench.rpc.auth_jwt import JwtVerifier

            self.jwt = JwtVerifier(auth.jwks_file, auth.jwt_issuer, auth.jwt_audience, auth.roles_claim)

    def authenticate(self, metadata: Iterable[tuple[str, Any]], peer: dict[str, list[bytes]]) -> Identity:
        token = _bearer_token(metadata)
        if token is not None:
            return self._identity_of_token(token)
        common_names = peer.get("x509_common_name") or []
        if common_names:
            name = common_names[0].decode(errors="replace")
            roles = self.tokens.roles_of(name) if self.tokens is not None else frozenset()
            return Identity(name, roles)
        raise Unauthenticated(
            "credentials required: send 'authorization: Bearer <token>' (or a client certificate)"
        )

    def _identity_of_token(self, token: str) -> Identity:
        if self.tokens is not None:
            try:
                return self.tokens.identity_of_token(token)
            except NotFound:
                pass
        if self.jwt is not None:
            from bobench.rpc.auth_jwt import looks_like_jwt

            if looks_like_jwt(token):
                return self.jwt.verify(token)
        raise Unauthenticated("bearer token: not a known token")


def _bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The token of the first `authorization` entry; Unauthenticated for one that is not Bearer."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        return token.strip()
    return None


def is_open(method: str) -> bool:
    return method.lstrip("/").rpartition("/")[0] in OPEN_SERVICES


def roles_for(method: str) -> frozenset[str]:
    """Roles that may call `method` besides admin (empty: admin only)."""
    return METHOD_ROLES.get(method, frozenset())


class AuthInterceptor(aio.ServerInterceptor):
    """Authenticates and authorises every call except health and reflection (module docstring).
    Install it outside the error interceptor: it answers with its own status codes, before the
    request is even looked at."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or is_open(handler_call_details.method):
            return handler
        return _rewrap(handler, handler_call_details.method, self._unary, self._stream)

    async def _admit(self, method: str, context: aio.ServicerContext) -> None:
        try:
            caller = self.authenticator.authenticate(context.invocation_metadata(), context.auth_context())
        except Unauthenticated as exc:
            log.info("%s -> UNAUTHENTICATED: %s", method, exc)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        needed = roles_for(method)
        if not caller.has_any(needed):
            wanted = " or ".join(sorted(needed | {ADMIN}))
            log.info("%s -> PERMISSION_DENIED for %s (roles %s)", method, caller.name, sorted(caller.roles))
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{method}: identity {caller.name!r} needs role {wanted}"
            )
        _CALLER.set(caller)  # each call runs in its own task, so its own context: no reset needed

    def _unary(self, behaviour, method):
        async def wrapped(request, context):
            await self._admit(method, context)
            return await behaviour(request, context)

        return wrapped

    def _stream(self, behaviour, method):
        async def wrapped(request, context):
            await self._admit(method, context)
            async for item in behaviour(request, context):
                yield item

        return wrapped


def current_caller() -> Identity | None:
    """The identity the interceptor admitted for this call; None when the server runs without auth."""
    return _CALLER.get()


def caller_name() -> str:
    """The admitted caller's identity, "" without auth (what battles record as their owner)."""
    caller = _CALLER.get()
    return caller.name if caller is not None else ""


def require_any_role(roles: Iterable[str], action: str) -> None:
    """PermissionDenied unless the caller has one of `roles` (or admin); allowed without auth."""
    caller = _CALLER.get()
    roles = frozenset(roles)
    if caller is not None and not caller.has_any(roles):
        raise PermissionDenied(f"{action}: identity {caller.name!r} needs role {' or '.join(sorted(roles))}")


def require_owner_or_admin(owner: str, what: str) -> None:
    """PermissionDenied unless the caller owns `what` or is admin; allowed without auth."""
    caller = _CALLER.get()
    if caller is None or ADMIN in caller.roles or (owner and caller.name == owner):
        return
    raise PermissionDenied(f"{what} belongs to another identity; only its owner or an admin may change it")
