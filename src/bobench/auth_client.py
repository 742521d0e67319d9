"""Client credentials: the bearer token and TLS material a client presents, and the channel built
from them (every bobench client and the scheduler's gRPC executor open their channels here).

    auth = ClientAuth.from_settings(settings)      # auth_token / auth_token_file, tls_ca, tls_client_*
    channel = auth.channel("127.0.0.1:50051", options)

TLS is used when a CA or a client certificate is configured (the CA verifies the server; the client
certificate and key are presented for mTLS). The token travels as `authorization: Bearer <token>`
metadata on every call, added by a channel interceptor (so it also works on a plaintext channel to a
server on loopback). A token on a plaintext channel to any other host travels in cleartext: that is
logged once per process and address as a warning naming the settings that turn TLS on.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)

_ENV = {  # ClientAuth field -> the setting (env BOBENCH_<NAME>) it comes from
    "token": "auth_token",
    "token_file": "auth_token_file",
    "ca": "tls_ca",
    "cert": "tls_client_cert",
    "key": "tls_client_key",
    "server_name": "tls_server_name",
}


@dataclass(frozen=True)
class ClientAuth:
    """A client's credentials; the default presents none (plaintext, no token)."""

    token: str = ""
    token_file: str = ""  # used when `token` is empty
    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""  # name to check in the server certificate instead of the address's host

    def __repr__(self) -> str:  # never print the token
        return f"ClientAuth(token={'***' if self.token else ''!r}, ca={self.ca!r}, cert={self.cert!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> ClientAuth:
        return cls(**{name: getattr(settings, setting) for name, setting in _ENV.items()})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientAuth:
        """From BOBENCH_AUTH_TOKEN, BOBENCH_AUTH_TOKEN_FILE, BOBENCH_TLS_CA, BOBENCH_TLS_CLIENT_CERT,
        BOBENCH_TLS_CLIENT_KEY, BOBENCH_TLS_SERVER_NAME (what a client built without explicit
        credentials uses; `environ` defaults to the process environment)."""
        env = os.environ if environ is None else environ
        return cls(**{name: env.get(f"BOBENCH_{setting.upper()}", "") for name, setting in _ENV.items()})

    def bearer_token(self) -> str:
        """The token, read from `token_file` when not given inline ("" = none)."""
        if self.token:
            return self.token.strip()
        if not self.token_file:
            return ""
        try:
            return Path(self.token_file).read_text().strip()
        except OSError as exc:
            raise InvalidArgument(
                f"auth_token_file {self.token_file}: cannot be read ({exc.strerror})"
            ) from None

    @property
    def tls(self) -> bool:
        return bool(self.ca or self.cert)

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A channel to `address` with these credentials (TLS when configured, token on every call)."""
        options = list(options)
        if self.tls:
            if bool(self.cert) != bool(self.key):
                raise InvalidArgument("tls_client_cert and tls_client_key must be set together")

            def read(path: str, setting: str) -> bytes | None:
                if not path:
                    return None
                try:
                    return Path(path).read_bytes()
                except OSError as exc:
                    raise InvalidArgument(f"{setting} {path}: cannot be read ({exc.strerror})") from None

            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(self.ca, "tls_ca"),
                private_key=read(self.key, "tls_client_key"),
                certificate_chain=read(self.cert, "tls_client_cert"),
            )
            if self.server_name:
                options.append(("grpc.ssl_target_name_override", self.server_name))
            channel = grpc.secure_channel(address, credentials, options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        token = self.bearer_token()
        if token and not self.tls:
            warn_cleartext_token(address)
        return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_cleartext_token(address: str) -> bool:
    """Log once per process and address that a bearer token goes to `address` unencrypted, unless
    it is a loopback address (or a unix socket). Returns True when it warned now."""
    if is_loopback(address):
        return False
    with _warned_lock:
        if address in _warned:
            return False
        _warned.add(address)
    log.warning(
        "the bearer token to %s travels in cleartext (plaintext gRPC to a non-loopback host): anyone on "
        "the network path can read and replay it; turn TLS on: the server with tls_cert/tls_key, this "
        "client with tls_ca (BOBENCH_TLS_CA, the CA of the server's certificate), for mTLS also "
        "tls_client_cert/tls_client_key",
        address,
    )
    return True


def is_loopback(address: str) -> bool:
    """True for a gRPC target on this host: 127.0.0.0/8, ::1, localhost, unix sockets. Host names
    are not resolved (a name is not loopback unless it is `localhost`)."""
    target = address.strip()
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    if target.startswith("["):
        host = target[1:].split("]", 1)[0]
    elif target.count(":") == 1:
        host = target.rsplit(":", 1)[0]
    else:
        host = target  # no port, or a bare IPv6 address
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, d: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [m for m in (d.metadata or ()) if m[0].lower() != "authorization"]
        return _CallDetails(
            d.method,
            d.timeout,
            [*metadata, self._header],
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)
