"""Auth building blocks without servers: the hashed tokens file and `bob auth token`, JWT checks
against a JWKS file, bearer metadata, the role table, client credentials, battle owners."""

from __future__ import annotations

import json
import time

import pytest

from bobench.errors import InvalidArgument, NotFound, Unauthenticated
from bobench.rpc.auth import METHOD_ROLES, Authenticator, ServerAuth, is_open, roles_for
from bobench.rpc.auth_tokens import Identity, TokenStore, new_token, parse_tokens_file, token_digest

ISSUER, AUDIENCE = "https://issuer.test", "bobench"


def test_new_token_appends_only_its_hash_to_a_0600_file(tmp_path):
    path = tmp_path / "tokens.jsonl"
    alice = new_token(path, "alice", "submit,read")
    bob = new_token(path, "bob", ["read"])
    text = path.read_text()
    assert alice not in text and bob not in text
    assert path.stat().st_mode & 0o777 == 0o600
    docs = [json.loads(line) for line in text.splitlines()]
    assert [d["identity"] for d in docs] == ["alice", "bob"]
    assert docs[0] == {"identity": "alice", "roles": ["read", "submit"], "sha256": token_digest(alice)}
    store = TokenStore(path)
    assert store.identity_of_token(alice) == Identity("alice", frozenset({"read", "submit"}))
    assert store.identity_of_token(bob).name == "bob"
    with pytest.raises(NotFound):
        store.identity_of_token(alice + "x")


def test_a_token_appended_later_is_known_without_a_new_store(tmp_path):
    path = tmp_path / "tokens.jsonl"
    new_token(path, "alice", "read")
    store = TokenStore(path)
    later = new_token(path, "carol", "admin")
    assert store.identity_of_token(later).name == "carol"


def test_a_broken_change_keeps_the_last_good_tokens(tmp_path):
    path = tmp_path / "tokens.jsonl"
    alice = new_token(path, "alice", "read")
    store = TokenStore(path)
    path.write_text(path.read_text() + "{not json\n")
    assert store.identity_of_token(alice).name == "alice"


def test_cli_auth_token_prints_the_token_once_and_stores_its_hash(tmp_path, capsys):
    from bobench.cli import main

    path = tmp_path / "tokens.jsonl"
    assert (
        main(["auth", "token", "--identity", "alice", "--roles", "submit,read", "--tokens-file", str(path)])
        == 0
    )
    token = capsys.readouterr().out.strip()
    assert token.startswith("bob_") and token not in path.read_text()
    assert TokenStore(path).identity_of_token(token).roles == frozenset({"submit", "read"})


def test_cli_auth_token_refuses_an_unknown_role(tmp_path, capsys):
    from bobench.cli import main

    path = tmp_path / "tokens.jsonl"
    assert main(["auth", "token", "--identity", "a", "--roles", "root", "--tokens-file", str(path)]) == 2
    assert "unknown role" in capsys.readouterr().err and not path.exists()


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "line 2: not a JSON object"),
        ('{"identity": "x", "roles": ["read"], "token": "secret-value"}', "plain token"),
        ('{"identity": "x", "roles": ["read"], "sha256": "abc"}', "64-digit"),
        ('{"identity": "x", "roles": ["wizard"], "sha256": "' + "0" * 64 + '"}', "unknown role"),
        ('{"identity": "a b", "roles": ["read"]}', "whitespace"),
    ],
)
def test_bad_tokens_file_lines_are_named_without_their_content(tmp_path, line, message):
    path = tmp_path / "tokens.jsonl"
    path.write_text("# comment\n" + line + "\n")
    with pytest.raises(InvalidArgument, match=message) as info:
        parse_tokens_file(path)
    assert "secret-value" not in str(info.value)


def test_every_rpc_of_the_bobench_services_has_roles():
    from bobench.v1 import evaluator_pb2, scheduler_pb2

    methods = {
        f"/{service.full_name}/{m.name}"
        for pb2 in (evaluator_pb2, scheduler_pb2)
        for service in pb2.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    }
    assert methods == set(METHOD_ROLES)
    assert all(roles_for(m) for m in methods)
    assert roles_for("/bobench.v1.Scheduler/SomethingNew") == frozenset()  # admin only
    assert is_open("/grpc.health.v1.Health/Check") and not is_open("/bobench.v1.Evaluator/Evaluate")


def _authenticator(tmp_path, **jwt) -> tuple[Authenticator, str]:
    path = tmp_path / "tokens.jsonl"
    token = new_token(path, "alice", "read")
    return Authenticator(ServerAuth(tokens_file=str(path), **jwt)), token


@pytest.mark.parametrize(
    "metadata, message",
    [
        ((), "credentials required"),
        ((("authorization", "Basic YWxpY2U6cHc="),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer "),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer bob_wrong"),), "not a known token"),
    ],
)
def test_missing_malformed_or_unknown_credentials_are_unauthenticated(tmp_path, metadata, message):
    authenticator, _ = _authenticator(tmp_path)
    with pytest.raises(Unauthenticated, match=message):
        authenticator.authenticate(metadata, {})


def test_a_known_token_or_a_certificate_cn_gives_an_identity(tmp_path):
    authenticator, token = _authenticator(tmp_path)
    assert authenticator.authenticate([("authorization", f"Bearer {token}")], {}).name == "alice"
    by_cert = authenticator.authenticate([], {"x509_common_name": [b"alice"]})
    assert by_cert == Identity("alice", frozenset({"read"}))
    assert authenticator.authenticate([], {"x509_common_name": [b"nobody"]}).roles == frozenset()


# --- JWT ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048), rsa.generate_private_key(
        public_exponent=65537, key_size=2048
    )


def jwks_file(tmp_path, private_key, kid="k1"):
    from jwt.algorithms import RSAAlgorithm

    jwk = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": kid, "alg": "RS256", "use": "sig"}]}))
    return path


def make_jwt(private_key, kid="k1", **claims):
    import jwt

    body = {"sub": "carol", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "roles": ["read"]}
    body.update(claims)
    return jwt.encode(body, private_key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwt_authenticator(tmp_path, rsa_keys):
    authenticator, _ = _authenticator(
        tmp_path, jwks_file=str(jwks_file(tmp_path, rsa_keys[0])), jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    return authenticator


def _bearer(token: str):
    return [("authorization", f"Bearer {token}")]


def test_a_valid_jwt_gives_its_subject_and_roles(jwt_authenticator, rsa_keys):
    identity = jwt_authenticator.authenticate(_bearer(make_jwt(rsa_keys[0], roles="read submit wizard")), {})
    assert identity == Identity("carol", frozenset({"read", "submit"}))


@pytest.mark.parametrize(
    "claims, message",
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.test"}, "issuer"),
    ],
)
def test_expired_or_misaddressed_jwts_are_unauthenticated(jwt_authenticator, rsa_keys, claims, message):
    with pytest.raises(Unauthenticated, match=message):
        jwt_authenticator.authenticate(_bearer(make_jwt(rsa_keys[0], **claims)), {})


def test_a_jwt_signed_by_another_key_or_with_hmac_is_unauthenticated(jwt_authenticator, rsa_keys):
    import jwt

    with pytest.raises(Unauthenticated, match="signature"):
        jwt_authenticator.authenticate(_bearer(make_jwt(rsa_keys[1])), {})
    forged = jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, "k" * 32,
                        algorithm="HS256", headers={"kid": "k1"})  # fmt: skip
    with pytest.raises(Unauthenticated, match="algorithm 'HS256'"):
        jwt_authenticator.authenticate(_bearer(forged), {})


def test_jwks_without_issuer_and_audience_is_refused_at_start(tmp_path, rsa_keys):
    with pytest.raises(InvalidArgument, match="auth_jwt_issuer"):
        Authenticator(ServerAuth(jwks_file=str(jwks_file(tmp_path, rsa_keys[0]))))


# --- client side and owners ----------------------------------------------------------------------------


def test_client_auth_reads_its_settings_and_never_shows_the_token(tmp_path, monkeypatch):
    from bobench.auth_client import ClientAuth
    from bobench.config import load_settings

    (tmp_path / "token").write_text("bob_from_file\n")
    monkeypatch.setenv("BOBENCH_AUTH_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.delenv("BOBENCH_AUTH_TOKEN", raising=False)
    assert ClientAuth.from_env().bearer_token() == "bob_from_file"
    assert ClientAuth.from_settings(load_settings()).bearer_token() == "bob_from_file"
    monkeypatch.setenv("BOBENCH_AUTH_TOKEN", "bob_inline_secret")
    settings = load_settings()
    assert ClientAuth.from_settings(settings).bearer_token() == "bob_inline_secret"
    assert "bob_inline_secret" not in repr(ClientAuth.from_settings(settings))
    assert "auth_token" not in settings.to_dict() and "bob_inline_secret" not in json.dumps(
        settings.to_dict()
    )


def test_battle_owner_is_persisted_and_read_back_on_recovery(tmp_path):
    from bobench.battle.executors.base import Executor
    from bobench.battle.plan import RunPlan
    from bobench.battle.scheduler import Scheduler
    from bobench.battle.spec import parse_spec
    from bobench.store import LocalStore

    def planner(spec, battle_id):
        return [RunPlan(run_key="k" * 24, backbone="b", dataset="d", dataset_ref={"name": "d"}, protocol="p",
                        protocol_version="1", task="classification", config={}, seed=0,
                        primary_metric="top1", battle=battle_id)]  # fmt: skip

    class Finishes(Executor):
        def execute(self, plan, progress=None):
            record = plan.new_record()
            record.status, record.metrics = "finished", {"top1": 1.0}
            return record

    store = LocalStore(tmp_path / "store", fsync=False)
    spec = parse_spec({"name": "owned", "backbones": ["b"], "datasets": ["d"], "protocols": ["p"]})
    first = Scheduler(store, [Finishes()], planner=planner)  # not started: the battle stays queued
    bid = first.submit(spec, owner="alice")
    assert first.get(bid).owner == "alice"
    assert store.get_json(f"battles/{bid}/battle.json")["owner"] == "alice"
    second = Scheduler(store, [Finishes()], planner=planner).start()
    try:
        assert second.get(bid).owner == "alice"
    finally:
        second.close()
