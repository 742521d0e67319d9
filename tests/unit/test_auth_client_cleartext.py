"""A bearer token on a plaintext channel to another host is logged once (per process and address)
as travelling in cleartext, with the settings that turn TLS on; loopback, TLS and token-less channels
stay silent. Channels connect lazily, so no server is needed."""

from __future__ import annotations

import logging

import pytest

from bobench.auth_client import ClientAuth, is_loopback

TOKEN = "bob_secret-token-value-123"


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "cleartext" in r.getMessage()
    ]


def _open(auth: ClientAuth, address: str) -> None:
    auth.channel(address).close()


def test_a_token_to_a_remote_host_over_plaintext_warns_once_naming_tls(caplog):
    caplog.set_level(logging.WARNING, logger="bobench.auth_client")
    for _ in range(3):  # three channels (as reconnecting clients make) to one address
        _open(ClientAuth(token=TOKEN), "10.20.30.41:50051")
    (message,) = _warnings(caplog)
    assert "10.20.30.41:50051" in message and "tls_ca" in message and "BOBENCH_TLS_CA" in message
    assert TOKEN not in caplog.text
    _open(ClientAuth(token=TOKEN), "scheduler.bobench.svc:50052")  # another address: its own warning
    assert len(_warnings(caplog)) == 2


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:50051",
        "127.3.2.1:1",
        "[::1]:50051",
        "localhost:50051",
        "unix:/tmp/s.sock",
        "dns:///localhost:50051",
        "ipv4:127.0.0.1:9",
    ],  # fmt: skip
)
def test_loopback_targets_are_silent(caplog, address):
    caplog.set_level(logging.WARNING, logger="bobench.auth_client")
    assert is_loopback(address)
    _open(ClientAuth(token=TOKEN), address)
    assert _warnings(caplog) == []


@pytest.mark.parametrize("address", ["10.0.0.1:1", "[2001:db8::1]:443", "evaluator-0.evaluators:50051",
                                     "dns:///scheduler:50052", "localhost.evil.example:1"])  # fmt: skip
def test_other_hosts_are_not_loopback(address):
    assert not is_loopback(address)


def test_no_token_or_tls_is_silent(caplog, tmp_path):
    caplog.set_level(logging.WARNING, logger="bobench.auth_client")
    _open(ClientAuth(), "10.20.30.42:50051")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot checked before a connection\n-----END CERTIFICATE-----\n"
    )
    _open(ClientAuth(token=TOKEN, ca=str(ca)), "10.20.30.43:50051")
    assert _warnings(caplog) == []
