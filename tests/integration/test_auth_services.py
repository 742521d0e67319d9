"""Authentication and authorisation on the real gRPC servers (loopback sockets): every method without
or with a wrong token is UNAUTHENTICATED, a missing role is PERMISSION_DENIED, battles belong to
their submitter (shown as `owner` in every answer and by `bob battle list/get`), `rerun` needs admin
or service, JWTs are checked, mTLS refuses untrusted certificates, health stays open, and a server
without auth config admits everyone."""

from __future__ import annotations

import datetime
import ipaddress
import json
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bobench.auth_client import ClientAuth
from bobench.config import Settings
from bobench.rpc.auth import ServerAuth
from bobench.rpc.auth_tokens import new_token
from bobench.rpc.background import BackgroundServer
from bobench.rpc.server import ServiceBinding
from bobench.v1 import evaluator_pb2, evaluator_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.integration
torch.set_num_threads(1)
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
SPEC_YAML = "name: owned\nbackbones: [toy]\ndatasets: [toy]\nprotocols: [knn]\n"
ISSUER, AUDIENCE = "https://issuer.test", "bobench"


def tiny_planner(spec, battle_id):
    from bobench.battle.plan import RunPlan

    return [RunPlan(run_key=f"{battle_id[:8]}-run".ljust(24, "0"), backbone="b", dataset="d",
                    dataset_ref={"name": "d"}, protocol="p", protocol_version="1", task="classification",
                    config={}, seed=0, primary_metric="top1", battle=battle_id)]  # fmt: skip


def bindings(root):
    """An Evaluator and a Scheduler servicer; the scheduler is not started, so battles stay queued."""
    from bobench.battle.executors.local import LocalExecutor
    from bobench.battle.scheduler import Scheduler
    from bobench.rpc.evaluator_service import EvaluatorServicer
    from bobench.rpc.scheduler_service import SchedulerServicer
    from bobench.store import LocalStore

    settings = Settings(cache_dir=str(root / "cache"), batch_size=16, threads=1, embedder="torch")
    evaluator = EvaluatorServicer(settings, root / "results")
    scheduler = Scheduler(
        LocalStore(root / "store", fsync=False), [LocalExecutor(settings)], planner=tiny_planner
    )
    return evaluator, [
        ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, evaluator),
        ServiceBinding.of(scheduler_pb2_grpc.add_SchedulerServicer_to_server, SchedulerServicer(scheduler)),
    ]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "tokens.jsonl"
    made = {
        "alice": new_token(path, "alice", "submit,read"),
        "bob": new_token(path, "bob", "submit,read"),
        "reader": new_token(path, "reader", "read"),
        "submitter": new_token(path, "submitter", "submit"),
        "admin": new_token(path, "root", "admin"),
        "service": new_token(path, "scheduler", "service"),
    }
    return path, made


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokens):
    root = tmp_path_factory.mktemp("auth-server")
    evaluator, services = bindings(root)
    with BackgroundServer(services, auth=ServerAuth(tokens_file=str(tokens[0]))) as running:
        yield running
    evaluator.close()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def md(token: str | None):
    return None if token is None else (("authorization", f"Bearer {token}"),)


def call(channel, method: str, token: str | None):
    """Call one RPC with a small valid-looking request; returns the status code (OK when it answered)."""
    sch, ev = scheduler_pb2_grpc.SchedulerStub(channel), evaluator_pb2_grpc.EvaluatorStub(channel)
    calls = {
        "SubmitBattle": lambda m: sch.SubmitBattle(scheduler_pb2.SubmitBattleRequest(spec_yaml=SPEC_YAML), metadata=m, timeout=20),
        "GetBattle": lambda m: sch.GetBattle(scheduler_pb2.GetBattleRequest(battle_id="none"), metadata=m, timeout=20),
        "ListBattles": lambda m: sch.ListBattles(scheduler_pb2.ListBattlesRequest(), metadata=m, timeout=20),
        "CancelBattle": lambda m: sch.CancelBattle(scheduler_pb2.CancelBattleRequest(battle_id="none"), metadata=m, timeout=20),
        "ListResults": lambda m: list(sch.ListResults(scheduler_pb2.ListResultsRequest(battle_id="none"), metadata=m, timeout=20)),
        "WatchBattle": lambda m: list(sch.WatchBattle(scheduler_pb2.WatchBattleRequest(battle_id="none"), metadata=m, timeout=20)),
        "Evaluate": lambda m: list(ev.Evaluate(evaluator_pb2.EvaluateRequest(), metadata=m, timeout=20)),
        "GetResult": lambda m: ev.GetResult(evaluator_pb2.GetResultRequest(run_key="none"), metadata=m, timeout=20),
    }  # fmt: skip
    try:
        calls[method](md(token))
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


METHODS = ("SubmitBattle", "GetBattle", "ListBattles", "CancelBattle", "ListResults", "WatchBattle",
           "Evaluate", "GetResult")  # fmt: skip
SUBMIT_METHODS = ("SubmitBattle", "CancelBattle", "Evaluate")
READ_METHODS = ("GetBattle", "ListBattles", "ListResults", "WatchBattle", "GetResult")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_without_or_with_a_wrong_token_is_unauthenticated(channel, method):
    assert call(channel, method, None) == UNAUTHENTICATED
    assert call(channel, method, "bob_not-a-token") == UNAUTHENTICATED


@pytest.mark.parametrize("method", METHODS)
def test_every_method_checks_roles_and_admin_may_call_it(channel, tokens, method):
    made = tokens[1]
    if method in SUBMIT_METHODS:
        assert call(channel, method, made["reader"]) == DENIED
    if method in READ_METHODS:
        assert call(channel, method, made["submitter"]) == DENIED
    assert call(channel, method, made["admin"]) not in (UNAUTHENTICATED, DENIED)
    allowed = made["submitter"] if method in SUBMIT_METHODS else made["reader"]
    assert call(channel, method, allowed) not in (UNAUTHENTICATED, DENIED)


def test_health_and_reflection_stay_open_and_the_ready_info_says_auth(server, channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "bobench.v1.Scheduler", "bobench.v1.Evaluator"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert server.ready_info()["auth"] is True and server.ready_info()["tls"] is False
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    assert "bobench.v1.Scheduler" in set(ProtoReflectionDescriptorDatabase(channel).get_services())


@pytest.mark.parametrize("method", METHODS)
def test_without_auth_config_every_method_admits_callers_without_a_token(tmp_path, method):
    evaluator, services = bindings(tmp_path)
    with BackgroundServer(services) as running, grpc.insecure_channel(running.address) as ch:
        assert running.ready_info()["auth"] is False
        assert call(ch, method, None) not in (UNAUTHENTICATED, DENIED)
    evaluator.close()


def test_battles_belong_to_their_submitter_and_only_admin_cancels_others(server, tokens):
    from bobench.client import SchedulerClient
    from bobench.errors import PermissionDenied

    made = tokens[1]

    def client(who):
        return SchedulerClient(server.address, auth=ClientAuth(token=made[who]))

    with client("alice") as alice, client("bob") as bob, client("admin") as admin:
        first = alice.submit(spec_yaml=SPEC_YAML, battle_id="alice-1").battle_id
        second = alice.submit(spec_yaml=SPEC_YAML, battle_id="alice-2").battle_id
        with pytest.raises(PermissionDenied, match="only its owner or an admin"):
            bob.cancel(first)
        assert bob.get(first).state == scheduler_pb2.BATTLE_STATE_QUEUED  # bob may read it
        assert admin.cancel(first).state == scheduler_pb2.BATTLE_STATE_CANCELLED
        assert alice.cancel(second).state == scheduler_pb2.BATTLE_STATE_CANCELLED


def test_battles_show_their_owner_in_every_answer_and_in_bob_battle_list(server, tokens, monkeypatch, capsys):
    from bobench.cli import main
    from bobench.client import SchedulerClient

    made = tokens[1]
    with (
        SchedulerClient(server.address, auth=ClientAuth(token=made["bob"])) as bob,
        SchedulerClient(server.address, auth=ClientAuth(token=made["alice"])) as alice,
    ):
        assert bob.submit(spec_yaml=SPEC_YAML, battle_id="bob-owned").owner == "bob"
        assert alice.submit(spec_yaml=SPEC_YAML, battle_id="alice-owned").owner == "alice"
        assert bob.get("bob-owned").owner == "bob"
        assert bob.get("alice-owned").owner == "alice"  # the submitter's name, not the caller's
        owners = {b.id: b.owner for b in bob.list()}
        assert (owners["bob-owned"], owners["alice-owned"]) == ("bob", "alice")
        again = alice.submit(spec_yaml=SPEC_YAML, battle_id="bob-owned")  # idempotent resubmission
        assert again.owner == "bob"
    monkeypatch.setenv("BOBENCH_AUTH_TOKEN", made["reader"])
    capsys.readouterr()
    assert main(["battle", "list", "--server", server.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "name", "owner", "state"]
    row = next(line.split() for line in lines if line.startswith("bob-owned "))
    assert row[1:3] == ["owned", "bob"]
    assert main(["battle", "get", "bob-owned", "--server", server.address]) == 0
    assert json.loads(capsys.readouterr().out)["owner"] == "bob"


def test_rerun_needs_admin_or_service_and_submitters_evaluate(server, tokens):
    from bobench.client import EvaluatorClient
    from bobench.errors import PermissionDenied

    made = tokens[1]
    with EvaluatorClient(server.address, auth=ClientAuth(token=made["alice"]), timeout_s=120) as alice:
        with pytest.raises(PermissionDenied, match="rerun"):
            alice.evaluate("toy", "toy", "knn", {"ks": [5]}, rerun=True, timeout_s=120)
        with EvaluatorClient(server.address, auth=ClientAuth(token=made["service"])) as service:
            assert service.evaluate(
                "toy", "toy", "knn", {"ks": [5]}, rerun=True, timeout_s=120
            ).record.finished
        outcome = alice.evaluate("toy", "toy", "knn", {"ks": [5]}, timeout_s=120)
        assert outcome.record.finished and outcome.reused


# --- OIDC / JWT ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    root = tmp_path_factory.mktemp("jwt")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256"}
    (root / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    auth = ServerAuth(jwks_file=str(root / "jwks.json"), jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    evaluator, services = bindings(root)

    def sign(**claims):
        body = {
            "sub": "carol",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time()) + 300,
            "roles": ["read"],
        }
        return jwt.encode({**body, **claims}, key, algorithm="RS256", headers={"kid": "k1"})

    with BackgroundServer(services, auth=auth) as running, grpc.insecure_channel(running.address) as ch:
        yield ch, sign
    evaluator.close()


def test_a_valid_jwt_is_admitted_with_its_roles(jwt_server):
    channel, sign = jwt_server
    assert call(channel, "ListBattles", sign()) == grpc.StatusCode.OK
    assert call(channel, "SubmitBattle", sign()) == DENIED  # roles: read only


@pytest.mark.parametrize(
    "claims", [{"exp": int(time.time()) - 30}, {"aud": "another-service"}, {"iss": "https://evil.test"}]
)
def test_an_expired_or_misaddressed_jwt_is_unauthenticated(jwt_server, claims):
    channel, sign = jwt_server
    assert call(channel, "ListBattles", sign(**claims)) == UNAUTHENTICATED


# --- mTLS ----------------------------------------------------------------------------------------------


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer_name: str, key, issuer_key, *, ca: bool = False, san: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pair(root, name: str, cert, key) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    (root / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(root / f"{name}.crt"), str(root / f"{name}.key")


@pytest.fixture(scope="module")
def mtls(tmp_path_factory):
    """A TLS server requiring client certificates of a test CA; client pairs: alice (trusted, role read
    in the tokens file), nobody (trusted, no roles), mallory (signed by another CA)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    root = tmp_path_factory.mktemp("mtls")
    keys = {
        n: ec.generate_private_key(ec.SECP256R1())
        for n in ("ca", "rogue", "server", "alice", "nobody", "mallory")
    }
    ca_cert = _cert("bobench test CA", "bobench test CA", keys["ca"], keys["ca"], ca=True)
    ca_path, _ = _write_pair(root, "ca", ca_cert, keys["ca"])
    server = _write_pair(
        root,
        "server",
        _cert("server", "bobench test CA", keys["server"], keys["ca"], san=True),
        keys["server"],
    )
    clients = {
        name: _write_pair(root, name, _cert(name, "bobench test CA", keys[name], keys["ca"]), keys[name])
        for name in ("alice", "nobody")
    }
    clients["mallory"] = _write_pair(
        root, "mallory", _cert("mallory", "rogue CA", keys["mallory"], keys["rogue"]), keys["mallory"]
    )
    (root / "tokens.jsonl").write_text(json.dumps({"identity": "alice", "roles": ["read"]}) + "\n")
    auth = ServerAuth(
        tokens_file=str(root / "tokens.jsonl"), tls_cert=server[0], tls_key=server[1], tls_ca=ca_path
    )
    evaluator, services = bindings(root)
    with BackgroundServer(services, auth=auth) as running:
        yield running, ca_path, clients
    evaluator.close()  # fmt: skip


def _list_battles(address: str, auth: ClientAuth):
    from bobench.client import SchedulerClient

    with SchedulerClient(address, auth=auth, timeout_s=10) as client:
        return client.list()


def test_mtls_client_certificate_cn_is_the_identity(mtls):
    from bobench.client import SchedulerClient
    from bobench.errors import PermissionDenied

    running, ca, clients = mtls
    assert running.ready_info()["tls"] is True
    alice = ClientAuth(ca=ca, cert=clients["alice"][0], key=clients["alice"][1])
    assert _list_battles(running.address, alice) == []
    with (
        SchedulerClient(running.address, auth=alice) as client,
        pytest.raises(PermissionDenied, match="alice"),
    ):
        client.submit(spec_yaml=SPEC_YAML)
    nobody = ClientAuth(ca=ca, cert=clients["nobody"][0], key=clients["nobody"][1])
    with pytest.raises(PermissionDenied, match="nobody"):
        _list_battles(running.address, nobody)


def test_mtls_refuses_an_untrusted_or_missing_client_certificate(mtls):
    from bobench.errors import Unavailable

    running, ca, clients = mtls
    mallory = ClientAuth(ca=ca, cert=clients["mallory"][0], key=clients["mallory"][1])
    for refused in (mallory, ClientAuth(ca=ca), ClientAuth()):
        with pytest.raises(Unavailable):
            _list_battles(running.address, refused)


# --- a real service process --------------------------------------------------------------------------


def test_an_evaluator_process_from_the_test_services_runs_with_auth_on(tmp_path):
    from bobench.client import EvaluatorClient
    from bobench.errors import NotFound, Unauthenticated
    from bobench.stack.procs import stop_pid
    from services import TEST_TOKEN, spawn_evaluator_process

    proc, ready = spawn_evaluator_process(tmp_path)
    try:
        assert ready["auth"] is True
        with EvaluatorClient(ready["address"], auth=ClientAuth()) as anonymous:
            with pytest.raises(Unauthenticated):
                anonymous.get_result("none")
        with EvaluatorClient(ready["address"]) as client, pytest.raises(NotFound):  # the env's test token
            client.get_result("none")
    finally:
        stop_pid(proc.pid)
    assert TEST_TOKEN not in (tmp_path / "auth-tokens.jsonl").read_text()


# --- the local stack -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_local_stack_runs_with_auth_and_bob_presents_the_stacks_token(tmp_path, monkeypatch, capsys):
    from bobench.cli import main
    from bobench.client import SchedulerClient
    from bobench.errors import Unauthenticated
    from bobench.stack import TOKENS_FILE, down, read_secrets, up

    for name, value in {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1", "BOBENCH_EMBEDDER": "torch"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(
        "BOBENCH_AUTH_TOKEN", raising=False
    )  # the test services' token: bob must find the stack's own
    state_dir = tmp_path / ".bobench"
    state = up(state_dir, evaluators=1, embedder=False, scrape_interval_s=1)
    try:
        address = next(s["address"] for s in state["services"] if s["name"] == "scheduler")
        token = read_secrets(state_dir)["BOBENCH_AUTH_TOKEN"]
        assert token not in (state_dir / TOKENS_FILE).read_text()
        assert token not in (state_dir / "stack.json").read_text()
        with SchedulerClient(address, auth=ClientAuth()) as anonymous, pytest.raises(Unauthenticated):
            anonymous.list()
        monkeypatch.chdir(tmp_path)
        assert main(["battle", "list"]) == 0  # the scheduler and the token from .bobench/
        assert main(["battle", "submit", "--wait", str(_spec_file(tmp_path))]) == 0
        assert "finished" in capsys.readouterr().out
    finally:
        down(state_dir)
    logs = "".join(p.read_text(errors="replace") for p in (state_dir / "logs").glob("*.*") if p.is_file())
    assert token not in logs


def _spec_file(tmp_path):
    path = tmp_path / "battle.yaml"
    path.write_text("name: stack-auth\nbackbones: [toy]\ndatasets: [toy]\nprotocols: [knn]\n")
    return path
