"""The Scheduler servicer under grpc_testing (in process, no sockets): each RPC's happy path and the
status codes of bad input; with auth on, the interceptor's UNAUTHENTICATED / PERMISSION_DENIED and
the servicer's owner check.

The scheduler is the real one over a LocalStore, with an executor that finishes every run at once and
a planner that plans backbones x datasets x protocols x seeds without any registry (no torch, no data).
The process-level tests (real Scheduler and Evaluator processes) are tests/integration/test_scheduler_processes.py.
"""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest

from bobench.battle.executors.base import Executor
from bobench.battle.plan import RunPlan
from bobench.battle.scheduler import Scheduler
from bobench.battle.spec import load_spec_yaml
from bobench.config import Settings
from bobench.errors import PermissionDenied
from bobench.results import RunStatus
from bobench.rpc import auth
from bobench.rpc.auth_tokens import Identity, new_token
from bobench.rpc.scheduler_service import SchedulerServicer
from bobench.store import LocalStore
from bobench.v1 import common_pb2, scheduler_pb2

SERVICE = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"]
METHOD = SERVICE.methods_by_name
SPEC_YAML = "name: grid\nbackbones: [b0, b1]\ndatasets: [d0]\nprotocols: [knn]\nseeds: [0, 1]\n"


def grid_planner(spec, battle_id):
    return [
        RunPlan(
            run_key=hashlib.sha256(f"{b}|{d.name}|{p.name}|{seed}".encode()).hexdigest()[:24],
            backbone=b,
            dataset=d.name,
            dataset_ref=d.ref,
            protocol=p.name,
            protocol_version="1",
            task="classification",
            config={},
            seed=seed,
            primary_metric="top1",
            battle=battle_id,
        )
        for b in spec.backbones
        for d in spec.datasets
        for p in spec.protocols
        for seed in spec.seeds
    ]


def planned(battle_id):
    return grid_planner(load_spec_yaml(SPEC_YAML, "spec"), battle_id)


class InstantExecutor(Executor):
    def execute(self, plan, progress=None):
        record = plan.new_record()
        record.status, record.metrics = RunStatus.FINISHED, {"top1": 0.5 + plan.seed / 10}
        return record


@pytest.fixture
def scheduler(tmp_path):
    sched = Scheduler(
        LocalStore(tmp_path / "store", fsync=False), [InstantExecutor()], planner=grid_planner, backoff_s=0.01
    ).start()
    yield sched
    sched.close()


@pytest.fixture
def servicer(scheduler, tmp_path):
    return SchedulerServicer(scheduler, base_dir=tmp_path, settings=Settings(max_runs_per_battle=100))


@pytest.fixture
def server(servicer, testing_server):
    return testing_server(SERVICE, servicer)


def unary(server, name, request):
    """(response, code, details) of a unary call."""
    response, _metadata, code, details = server.invoke_unary_unary(
        METHOD[name], (), request, 30
    ).termination()
    return response, code, details


def stream(server, name, request):
    """(responses, code, details) of a server-streaming call."""
    rpc = server.invoke_unary_stream(METHOD[name], (), request, 30)
    responses = []
    while True:
        try:
            responses.append(rpc.take_response())
        except ValueError:  # grpc_testing: no more responses
            break
    _metadata, code, details = rpc.termination()
    return responses, code, details


def submit(server, **fields):
    fields.setdefault("spec_yaml", SPEC_YAML)
    return unary(server, "SubmitBattle", scheduler_pb2.SubmitBattleRequest(**fields))


def test_submit_then_get_list_and_results_of_a_finished_battle(server, scheduler):
    response, code, _ = submit(server, battle_id="grid-1")
    assert code is grpc.StatusCode.OK
    assert response.battle_id == "grid-1" and response.total_runs == 4 and response.reused_runs == 0
    assert scheduler.wait("grid-1", timeout_s=10).state == "finished"

    battle, code, _ = unary(server, "GetBattle", scheduler_pb2.GetBattleRequest(battle_id="grid-1"))
    assert code is grpc.StatusCode.OK
    assert battle.id == "grid-1" and battle.name == "grid"
    assert battle.state == scheduler_pb2.BATTLE_STATE_FINISHED
    assert (battle.counts.total, battle.counts.finished) == (4, 4)
    assert list(battle.spec.backbones) == ["b0", "b1"]

    listed, code, _ = unary(server, "ListBattles", scheduler_pb2.ListBattlesRequest())
    assert code is grpc.StatusCode.OK and [b.id for b in listed.battles] == ["grid-1"]
    assert listed.next_page_token == ""

    results, code, _ = stream(server, "ListResults", scheduler_pb2.ListResultsRequest(battle_id="grid-1"))
    assert code is grpc.StatusCode.OK
    assert [r.run_key for r in results] == [p.run_key for p in planned("grid-1")]
    assert {r.status for r in results} == {common_pb2.RUN_STATUS_FINISHED}
    assert sorted(dict(r.metrics)["top1"] for r in results) == pytest.approx([0.5, 0.5, 0.6, 0.6])


def test_a_resubmitted_battle_reuses_every_finished_run(server, scheduler):
    submit(server, battle_id="first")
    scheduler.wait("first", timeout_s=10)
    response, code, _ = submit(server, battle_id="second")
    assert code is grpc.StatusCode.OK and response.reused_runs == response.total_runs == 4


def test_list_battles_pages_with_the_token_it_issued(server, scheduler):
    for i in range(3):
        submit(server, battle_id=f"b{i}")
    first, code, _ = unary(server, "ListBattles", scheduler_pb2.ListBattlesRequest(page_size=2))
    assert code is grpc.StatusCode.OK and len(first.battles) == 2 and first.next_page_token
    rest, _, _ = unary(
        server, "ListBattles", scheduler_pb2.ListBattlesRequest(page_size=2, page_token=first.next_page_token)
    )
    assert len(rest.battles) == 1 and rest.next_page_token == ""
    assert {b.id for b in [*first.battles, *rest.battles]} == {"b0", "b1", "b2"}


def test_cancel_of_a_finished_battle_answers_the_battle(server, scheduler):
    submit(server, battle_id="done")
    scheduler.wait("done", timeout_s=10)
    battle, code, _ = unary(server, "CancelBattle", scheduler_pb2.CancelBattleRequest(battle_id="done"))
    assert code is grpc.StatusCode.OK and battle.id == "done"
    assert battle.state in (scheduler_pb2.BATTLE_STATE_FINISHED, scheduler_pb2.BATTLE_STATE_CANCELLED)


def test_watch_battle_streams_events_until_the_battle_ends(server, scheduler):
    submit(server, battle_id="watched")
    events, code, _ = stream(server, "WatchBattle", scheduler_pb2.WatchBattleRequest(battle_id="watched"))
    assert code is grpc.StatusCode.OK and events
    assert events[-1].battle_state == scheduler_pb2.BATTLE_STATE_FINISHED
    # The watcher may subscribe after some runs ended (the executor is instant): those are counted in
    # the snapshot, and every run that ends after it arrives as its own event, none lost or repeated.
    snapshot, changes = events[0], events[1:]
    assert snapshot.run_key == "" and events[-1].run_key == "" and events[-1].counts.finished == 4
    finished = [e.run_key for e in changes if e.run_key and e.state == common_pb2.RUN_STATUS_FINISHED]
    assert len(finished) == len(set(finished)) == 4 - snapshot.counts.finished
    assert set(finished) <= {p.run_key for p in planned("watched")}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"spec_yaml": None}, "spec or spec_yaml"),  # neither given
        ({"spec_yaml": "name: x\nbackbones: [b0]\n"}, "datasets"),
        ({"spec_yaml": "name: [unclosed\n"}, "spec_yaml"),
        ({"battle_id": "../escape"}, "battle_id"),
    ],
)
def test_submit_rejects_bad_input_naming_the_field(server, fields, named):
    request = {"spec_yaml": SPEC_YAML, **fields}
    request = {k: v for k, v in request.items() if v is not None}
    _, code, details = unary(server, "SubmitBattle", scheduler_pb2.SubmitBattleRequest(**request))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert named in details


def test_a_battle_over_the_run_limit_is_resource_exhausted(scheduler, testing_server, tmp_path):
    servicer = SchedulerServicer(scheduler, base_dir=tmp_path, settings=Settings(max_runs_per_battle=1))
    _, code, details = submit(testing_server(SERVICE, servicer))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "max_runs_per_battle" in details


@pytest.mark.parametrize(
    ("name", "request_type"),
    [
        ("GetBattle", scheduler_pb2.GetBattleRequest),
        ("CancelBattle", scheduler_pb2.CancelBattleRequest),
    ],
)
def test_unary_calls_need_a_battle_id_and_name_an_unknown_one(server, name, request_type):
    _, code, details = unary(server, name, request_type())
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "battle_id" in details
    _, code, details = unary(server, name, request_type(battle_id="no-such-battle"))
    assert code is grpc.StatusCode.NOT_FOUND and "no-such-battle" in details


@pytest.mark.parametrize(
    ("name", "request_type"),
    [
        ("ListResults", scheduler_pb2.ListResultsRequest),
        ("WatchBattle", scheduler_pb2.WatchBattleRequest),
    ],
)
def test_streams_need_a_battle_id_and_name_an_unknown_one(server, name, request_type):
    responses, code, details = stream(server, name, request_type())
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "battle_id" in details and not responses
    responses, code, details = stream(server, name, request_type(battle_id="no-such-battle"))
    assert code is grpc.StatusCode.NOT_FOUND and "no-such-battle" in details and not responses


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (scheduler_pb2.ListBattlesRequest(page_size=-1), "page_size"),
        (scheduler_pb2.ListBattlesRequest(page_token="not-a-token"), "page_token"),
    ],
)
def test_list_battles_rejects_bad_paging_naming_the_field(server, request_, named):
    _, code, details = unary(server, "ListBattles", request_)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and named in details


# --- auth on: the interceptor admits callers, the servicer checks ownership ---


class AbortContext:
    """The two things AuthInterceptor reads from an aio context; abort raises like grpc.aio's."""

    def __init__(self, metadata=()) -> None:
        self.metadata = tuple(metadata)
        self.code = self.details = None

    def invocation_metadata(self):
        return self.metadata

    def auth_context(self):
        return {}

    async def abort(self, code, details):
        self.code, self.details = code, details
        raise grpc.RpcError(details)


@pytest.fixture
def interceptor(tmp_path):
    tokens = tmp_path / "tokens.jsonl"
    issued = {
        "alice": new_token(tokens, "alice", "submit,read"),
        "reader": new_token(tokens, "reader", "read"),
    }
    return auth.AuthInterceptor(auth.Authenticator(auth.ServerAuth(tokens_file=str(tokens)))), issued


def admit(interceptor, method, metadata):
    context = AbortContext(metadata)
    try:
        asyncio.run(interceptor._admit(f"/bobench.v1.Scheduler/{method}", context))
    except grpc.RpcError:
        pass
    return context.code, context.details


@pytest.mark.parametrize("method", sorted(METHOD))
def test_every_scheduler_method_needs_credentials_when_auth_is_on(interceptor, method):
    interceptor, _ = interceptor
    code, details = admit(interceptor, method, ())
    assert code is grpc.StatusCode.UNAUTHENTICATED and "Bearer" in details
    code, _ = admit(interceptor, method, [("authorization", "Bearer not-a-known-token")])
    assert code is grpc.StatusCode.UNAUTHENTICATED


def test_a_read_only_identity_may_read_but_not_submit_or_cancel(interceptor):
    interceptor, issued = interceptor
    reader = [("authorization", f"Bearer {issued['reader']}")]
    for method in ("GetBattle", "ListBattles", "ListResults", "WatchBattle"):
        assert admit(interceptor, method, reader) == (None, None)
    for method in ("SubmitBattle", "CancelBattle"):
        code, details = admit(interceptor, method, reader)
        assert code is grpc.StatusCode.PERMISSION_DENIED and "'reader'" in details and "submit" in details
    alice = [("authorization", f"Bearer {issued['alice']}")]
    assert admit(interceptor, "SubmitBattle", alice) == (None, None)


def as_caller(aio_loop, identity, coroutine_fn):
    """Run `coroutine_fn()` on the servicers' loop as the interceptor would after admitting `identity`."""

    async def call():
        auth._CALLER.set(identity)  # the task's own context, as for each admitted call
        return await coroutine_fn()

    return asyncio.run_coroutine_threadsafe(call(), aio_loop).result(timeout=30)


def test_battles_record_their_owner_and_only_the_owner_or_an_admin_may_cancel(servicer, scheduler, aio_loop):
    alice, mallory = (
        Identity("alice", frozenset({"submit", "read"})),
        Identity("mallory", frozenset({"submit"})),
    )
    submitted = as_caller(
        aio_loop,
        alice,
        lambda: servicer.SubmitBattle(
            scheduler_pb2.SubmitBattleRequest(spec_yaml=SPEC_YAML, battle_id="a1"), None
        ),
    )
    assert submitted.owner == "alice"
    cancel = scheduler_pb2.CancelBattleRequest(battle_id="a1")
    with pytest.raises(PermissionDenied, match="only its owner or an admin"):
        as_caller(aio_loop, mallory, lambda: servicer.CancelBattle(cancel, None))
    admin = Identity("root", frozenset({"admin"}))
    assert as_caller(aio_loop, admin, lambda: servicer.CancelBattle(cancel, None)).owner == "alice"
    assert as_caller(aio_loop, alice, lambda: servicer.CancelBattle(cancel, None)).id == "a1"
