"""Hostile and malformed requests against a real Evaluator and a real Scheduler process on loopback
(issue 10): deep JSON and YAML, alias bombs, NaN/Infinity, seeds beyond int64, huge names, battle ids
with '/', bad page tokens, out-of-range protocol knobs, quotas. Each gets its expected status code
and a message naming the problem (and, for a bound, its setting); after each the service is SERVING
and answers a good request. `test_bad_requests.py` covers the plainer malformed requests."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bobench.results.convert import run_request
from bobench.rpc import convert
from bobench.stack.procs import start_bobench_service, stop_pid
from bobench.v1 import common_pb2, evaluator_pb2, evaluator_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ENV = {
    "OMP_NUM_THREADS": "1",
    "BOBENCH_THREADS": "1",
    "BOBENCH_EMBEDDER": "torch",
    "BOBENCH_BATCH_SIZE": "16",
}
MAX_RUNS = 3
HUGE = "n" * (10 << 20)  # 10 MB: below the 64 MB message limit, far above max_name_length
DEEP = 60_000


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-evaluator")
    svc = start_bobench_service(
        "evaluator", "bobench.rpc.evaluator_service",
        ["--port", "0", "--results-dir", str(root / "results"), "--cache-dir", str(root / "cache")],
        root / "logs", env=ENV,
    )  # fmt: skip
    yield svc
    stop_pid(svc.pid)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory, evaluator):
    root = tmp_path_factory.mktemp("hostile-scheduler")
    svc = start_bobench_service(
        "scheduler", "bobench.rpc.scheduler_service",
        ["--port", "0", "--store", str(root / "store"), "--evaluators", evaluator.address, "--concurrency", "1"],
        root / "logs", env={**ENV, "BOBENCH_MAX_RUNS_PER_BATTLE": str(MAX_RUNS)},
    )  # fmt: skip
    yield svc
    stop_pid(svc.pid)


def _channel(address: str) -> grpc.Channel:
    limit = 64 << 20
    return grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    )


def _serving(channel: grpc.Channel, service: str) -> bool:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10
    )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


# ---- Evaluator ---------------------------------------------------------------------------------------


def _run(protocol: str = "knn", config: dict | None = None, **fields) -> common_pb2.RunRequest:
    run = run_request("toy", "toy", protocol, {"ks": [5]} if config is None else config, 0)
    for path, value in fields.items():
        target = run
        *parents, leaf = path.split("__")
        for p in parents:
            target = getattr(target, p)
        if isinstance(value, struct_pb2.Struct):
            getattr(target, leaf).CopyFrom(value)
        else:
            setattr(target, leaf, value)
    return run


def _struct_with(key: str, value: float) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.fields[key].number_value = value
    return s


EVALUATOR_CASES = [
    (
        "config_json nested 60k lists",
        _run(protocol__config_json="[" * DEEP + "]" * DEEP),
        INVALID,
        "max_json_depth",
    ),
    (
        "ref_json nested 100k objects",
        _run(dataset__ref_json='{"a":' * 100_000 + "1" + "}" * 100_000),
        INVALID,
        "max_json_depth",
    ),
    (
        "spec_json nested 60k lists",
        _run(backbone__spec_json="[" * DEEP + "]" * DEEP),
        INVALID,
        "max_json_depth",
    ),
    (
        "config_json over max_json_bytes",
        _run(protocol__config_json=json.dumps({"ks": [5], "pad": "x" * (2 << 20)})),
        INVALID,
        "max_json_bytes",
    ),
    ("config_json NaN", _run(protocol__config_json='{"temperature": NaN}'), INVALID, "finite numbers only"),
    (
        "config_json Infinity",
        _run(protocol__config_json='{"temperature": -Infinity}'),
        INVALID,
        "finite numbers",
    ),
    ("config_json 1e999", _run(protocol__config_json='{"temperature": 1e999}'), INVALID, "finite numbers"),
    (
        "config_json 5000-digit integer",
        _run(protocol__config_json='{"temperature": ' + "9" * 5000 + "}"),
        INVALID,
        "run.protocol.config_json",
    ),
    (
        "Struct config NaN",
        _run(protocol__config=_struct_with("temperature", float("nan"))),
        INVALID,
        "finite",
    ),
    (
        "Struct dataset ref Infinity",
        _run(dataset__structured=_struct_with("split_seed", float("inf"))),
        INVALID,
        "finite",
    ),
    ("kNN temperature 0", _run(config={"temperature": 0.0}), INVALID, "'temperature' must be > 0"),
    ("kNN temperature -1", _run(config={"temperature": -1.0}), INVALID, "'temperature'"),
    ("kNN k 0", _run(config={"ks": [0]}), INVALID, "'ks'"),
    ("kNN k one million", _run(config={"ks": [10**6]}), INVALID, "<= 10000"),
    ("linear probe max_iter -1", _run("linear_probe", {"max_iter": -1}), INVALID, "'max_iter'"),
    ("linear probe max_iter 10^9", _run("linear_probe", {"max_iter": 10**9}), INVALID, "'max_iter'"),
    ("linear probe tol 0", _run("linear_probe", {"tol": 0}), INVALID, "'tol'"),
    ("few-shot a million draws", _run("fewshot", {"seeds": 10**6}), INVALID, "'seeds'"),
    ("ood severity 9", _run("ood", {"severities": [9]}), INVALID, "severity 9"),
    ("retrieval k 0", _run("retrieval", {"ks": [0]}), INVALID, "'ks'"),
    (
        "efficiency timed_steps 10^9",
        _run("efficiency", {"timed_steps": 10**9, "max_timed_steps": 10**9}),
        INVALID,
        "'timed_steps'",
    ),
    ("efficiency batch 2^31-1", _run("efficiency", {"batch_sizes": [2**31 - 1]}), INVALID, "max_batch_size"),
    ("finetune ten million epochs", _run("finetune", {"epochs": 10**7}), INVALID, "'epochs'"),
    ("batch_size 2^31-1", _run(batch_size=2**31 - 1), INVALID, "max_batch_size"),
    ("10 MB backbone name", _run(backbone__name=HUGE), INVALID, "max_name_length"),
    ("10 MB dataset label", _run(dataset__name=HUGE), INVALID, "max_name_length"),
    ("10 MB protocol name", _run(protocol__name=HUGE), INVALID, "max_name_length"),
    ("10 MB battle id", _run(battle_id=HUGE), INVALID, "max_name_length"),
    (
        "100k-character config key",
        _run(protocol__config_json=json.dumps({"k" * 100_000: 1})),
        INVALID,
        "unknown config key",
    ),
    ("wrong backbone name", _run(backbone__name="resnet-50"), INVALID, "unknown backbone"),
    ("unknown protocol", _run(protocol__name="knn; rm -rf /"), INVALID, "unknown protocol"),
    ("unknown embedder variant", _run(embedder_variant="trt-int4"), INVALID, "run.embedder_variant"),
]


@pytest.fixture(scope="module")
def evaluator_channel(evaluator):
    with _channel(evaluator.address) as channel:
        yield channel


def _good_evaluate(stub) -> common_pb2.RunResult:
    events = list(stub.Evaluate(evaluator_pb2.EvaluateRequest(run=_run()), timeout=120))
    return events[-1].result


@pytest.mark.parametrize(("run", "code", "message"), [c[1:] for c in EVALUATOR_CASES],
                         ids=[c[0] for c in EVALUATOR_CASES])  # fmt: skip
def test_hostile_evaluate_gets_its_code_and_the_evaluator_keeps_serving(
    evaluator_channel, run, code, message
):
    stub = evaluator_pb2_grpc.EvaluatorStub(evaluator_channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Evaluate(evaluator_pb2.EvaluateRequest(run=run), timeout=60))
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()
    assert len(info.value.details()) < 2100  # never echoes a 10 MB value back
    assert _serving(evaluator_channel, "bobench.v1.Evaluator")
    assert _good_evaluate(stub).status == common_pb2.RUN_STATUS_FINISHED


def test_the_evaluator_matrix_has_at_least_25_cases():
    assert len(EVALUATOR_CASES) >= 25


# ---- Scheduler ---------------------------------------------------------------------------------------

GOOD_SPEC = {"name": "hostile-good", "backbones": ["toy"], "datasets": ["toy"],
             "protocols": [{"name": "knn", "config": {"ks": [5]}}]}  # fmt: skip


def _spec_yaml(**changes) -> str:
    return json.dumps({**GOOD_SPEC, **changes})  # JSON is YAML


def _submit_yaml(text: str, battle_id: str = "") -> tuple[str, scheduler_pb2.SubmitBattleRequest]:
    return "SubmitBattle", scheduler_pb2.SubmitBattleRequest(spec_yaml=text, battle_id=battle_id)


def _submit_spec(**changes) -> tuple[str, scheduler_pb2.SubmitBattleRequest]:
    from bobench.battle.spec import parse_spec

    msg = convert.battle_spec_to_proto(parse_spec(GOOD_SPEC))
    for key, value in changes.items():
        if isinstance(value, struct_pb2.Struct):
            getattr(msg, key).CopyFrom(value)
        else:
            setattr(msg, key, value)
    return "SubmitBattle", scheduler_pb2.SubmitBattleRequest(spec=msg)


def _protocol_struct(config: struct_pb2.Struct) -> tuple[str, scheduler_pb2.SubmitBattleRequest]:
    name, request = _submit_spec()
    request.spec.protocols[0].config.CopyFrom(config)
    return name, request


ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
) + "name: *i\n"  # fmt: skip
DEEP_YAML = "name: x\nbackbones: " + "[" * 10_000 + "]" * 10_000 + "\n"

SCHEDULER_CASES = [
    ("YAML alias bomb", *_submit_yaml(ALIAS_BOMB), INVALID, "max_yaml_alias_expansions"),
    ("YAML 10k nested flow lists", *_submit_yaml(DEEP_YAML), INVALID, "max_json_depth"),
    (
        "YAML over max_spec_bytes",
        *_submit_yaml(_spec_yaml(description="d" * (2 << 20))),
        INVALID,
        "max_spec_bytes",
    ),
    (
        "YAML .nan in a config",
        *_submit_yaml(_spec_yaml().replace('"ks": [5]', '"temperature": .nan')),
        INVALID,
        "finite numbers only",
    ),
    (
        "YAML .inf in recommend",
        *_submit_yaml(json.dumps(GOOD_SPEC)[:-1] + ', "recommend": {"max_params": .inf}}'),
        INVALID,
        "finite",
    ),
    (
        "YAML python object tag",
        *_submit_yaml("name: !!python/object/apply:os.system ['true']\n"),
        INVALID,
        "not valid YAML",
    ),
    ("YAML integer key", *_submit_yaml("1: x\nname: y\n"), INVALID, "keys must be strings"),
    ("YAML not a mapping", *_submit_yaml("- a\n- b\n"), INVALID, "must be a mapping"),
    ("seed 2^63", *_submit_yaml(_spec_yaml(seeds=[2**63])), INVALID, "2**63"),
    ("seed -1", *_submit_yaml(_spec_yaml(seeds=[-1])), INVALID, "seeds"),
    (
        "512 KB battle name (YAML)",
        *_submit_yaml('{"name": "' + "n" * (512 << 10) + '"}'),
        INVALID,
        "max_name_length",
    ),
    ("10 MB battle name (message)", *_submit_spec(name=HUGE), INVALID, "max_name_length"),
    ("10 MB description (message)", *_submit_spec(description=HUGE), INVALID, "description"),
    (
        "NaN in settings Struct",
        *_submit_spec(settings=_struct_with("batch_size", float("nan"))),
        INVALID,
        "finite",
    ),
    (
        "Infinity in a protocol Struct",
        *_protocol_struct(_struct_with("temperature", float("inf"))),
        INVALID,
        "finite",
    ),
    (
        "kNN temperature 0",
        *_submit_yaml(_spec_yaml(protocols=[{"name": "knn", "config": {"temperature": 0}}])),
        INVALID,
        "'temperature' must be > 0",
    ),
    (
        "linear probe max_iter -1",
        *_submit_yaml(_spec_yaml(protocols=[{"name": "linear_probe", "config": {"max_iter": -1}}])),
        INVALID,
        "max_iter",
    ),
    (
        "settings batch_size 2^31-1",
        *_submit_yaml(_spec_yaml(settings={"batch_size": 2**31 - 1})),
        INVALID,
        "max_batch_size",
    ),
    ("settings threads -1", *_submit_yaml(_spec_yaml(settings={"threads": -1})), INVALID, "settings.threads"),
    ("unknown protocol", *_submit_yaml(_spec_yaml(protocols=["knnn"])), INVALID, "unknown protocol"),
    ("wrong backbone name", *_submit_yaml(_spec_yaml(backbones=["resnet-50"])), INVALID, "unknown backbone"),
    ("battle id with '/'", *_submit_yaml(_spec_yaml(), battle_id="a/../../b"), INVALID, "no '/'"),
    ("battle id '..'", *_submit_yaml(_spec_yaml(), battle_id=".."), INVALID, "battle_id"),
    ("battle id of 200 characters", *_submit_yaml(_spec_yaml(), battle_id="b" * 200), INVALID, "battle_id"),
    (
        "more runs than max_runs_per_battle",
        *_submit_yaml(
            _spec_yaml(
                datasets=[
                    {"name": f"toy-s{s}", "ref": {"name": "toy", "split_seed": s}}
                    for s in range(MAX_RUNS + 1)
                ]
            )
        ),
        EXHAUSTED,
        "max_runs_per_battle",
    ),  # fmt: skip
    (
        "page token '²'",
        "ListBattles",
        scheduler_pb2.ListBattlesRequest(page_token="²"),
        INVALID,
        "page_token",
    ),
    (
        "page token '-1'",
        "ListBattles",
        scheduler_pb2.ListBattlesRequest(page_token="-1"),
        INVALID,
        "page_token",
    ),
    (
        "page token of 30 digits",
        "ListBattles",
        scheduler_pb2.ListBattlesRequest(page_token="9" * 30),
        INVALID,
        "page_token",
    ),
    ("page size -1", "ListBattles", scheduler_pb2.ListBattlesRequest(page_size=-1), INVALID, "page_size"),
    (
        "GetBattle of a path",
        "GetBattle",
        scheduler_pb2.GetBattleRequest(battle_id="../../etc/passwd"),
        NOT_FOUND,
        "battle",
    ),
    (
        "CancelBattle unknown",
        "CancelBattle",
        scheduler_pb2.CancelBattleRequest(battle_id="nope-1"),
        NOT_FOUND,
        "",
    ),
    (
        "ListResults of a 10 MB id",
        "ListResults",
        scheduler_pb2.ListResultsRequest(battle_id=HUGE),
        NOT_FOUND,
        "",
    ),
    ("WatchBattle without an id", "WatchBattle", scheduler_pb2.WatchBattleRequest(), INVALID, "battle_id"),
]


@pytest.fixture(scope="module")
def scheduler_channel(scheduler):
    with _channel(scheduler.address) as channel:
        yield channel


def _call(stub, method: str, request):
    reply = getattr(stub, method)(request, timeout=60)
    return list(reply) if method in ("ListResults", "WatchBattle") else reply


@pytest.mark.parametrize(("method", "request_", "code", "message"), [c[1:] for c in SCHEDULER_CASES],
                         ids=[c[0] for c in SCHEDULER_CASES])  # fmt: skip
def test_hostile_scheduler_request_gets_its_code_and_the_scheduler_keeps_serving(
    scheduler_channel, method, request_, code, message
):
    stub = scheduler_pb2_grpc.SchedulerStub(scheduler_channel)
    with pytest.raises(grpc.RpcError) as info:
        _call(stub, method, request_)
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()
    assert len(info.value.details()) < 2100
    assert _serving(scheduler_channel, "bobench.v1.Scheduler")
    good = stub.SubmitBattle(
        scheduler_pb2.SubmitBattleRequest(spec_yaml=_spec_yaml(), battle_id="good-1"), timeout=60
    )
    assert good.battle_id == "good-1" and good.total_runs == 1
    assert (
        stub.GetBattle(scheduler_pb2.GetBattleRequest(battle_id="good-1"), timeout=30).name == "hostile-good"
    )


def test_the_scheduler_matrix_has_at_least_25_cases():
    assert len(SCHEDULER_CASES) >= 25


# ---- quotas that need battles to stay in flight ------------------------------------------------------


@pytest.fixture
def stalled_scheduler(tmp_path):
    """A scheduler whose only evaluator address refuses connections: its battles stay queued/running."""
    svc = _start_stalled(tmp_path)
    yield svc
    stop_pid(svc.pid)


def _start_stalled(tmp_path, name: str = "stalled-scheduler"):
    return start_bobench_service(
        name, "bobench.rpc.scheduler_service",
        ["--port", "0", "--store", str(tmp_path / "store"), "--evaluators", "127.0.0.1:9", "--backoff-s", "30"],
        tmp_path / "logs",
        env={**ENV, "BOBENCH_MAX_BATTLES_IN_FLIGHT": "2", "BOBENCH_MAX_LIST_PAGE_BYTES": "400"},
    )  # fmt: skip


def test_battles_resumed_after_a_restart_still_count_against_the_limit(stalled_scheduler, tmp_path):
    with _channel(stalled_scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        for i in range(2):
            stub.SubmitBattle(
                scheduler_pb2.SubmitBattleRequest(spec_yaml=_spec_yaml(), battle_id=f"r{i}"), timeout=60
            )
    stop_pid(stalled_scheduler.pid)
    restarted = _start_stalled(tmp_path, "stalled-scheduler-restarted")  # same store: both battles resume
    try:
        with _channel(restarted.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.SubmitBattle(
                    scheduler_pb2.SubmitBattleRequest(spec_yaml=_spec_yaml(), battle_id="r2"), timeout=60
                )
            assert info.value.code() == EXHAUSTED and "max_battles_in_flight=2" in info.value.details()
            stub.CancelBattle(scheduler_pb2.CancelBattleRequest(battle_id="r0"), timeout=30)
            stub.SubmitBattle(
                scheduler_pb2.SubmitBattleRequest(spec_yaml=_spec_yaml(), battle_id="r2"), timeout=60
            )
    finally:
        stop_pid(restarted.pid)


def test_battles_in_flight_are_limited_per_identity_and_a_cancel_frees_a_slot(stalled_scheduler):
    with _channel(stalled_scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        for i in range(2):
            stub.SubmitBattle(
                scheduler_pb2.SubmitBattleRequest(spec_yaml=_spec_yaml(), battle_id=f"f{i}"), timeout=60
            )
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitBattle(
                scheduler_pb2.SubmitBattleRequest(spec_yaml=_spec_yaml(), battle_id="f2"), timeout=60
            )
        assert info.value.code() == EXHAUSTED
        assert "max_battles_in_flight=2" in info.value.details()
        assert "BOBENCH_MAX_BATTLES_IN_FLIGHT" in info.value.details()
        stub.CancelBattle(scheduler_pb2.CancelBattleRequest(battle_id="f0"), timeout=30)
        stub.SubmitBattle(
            scheduler_pb2.SubmitBattleRequest(spec_yaml=_spec_yaml(), battle_id="f2"), timeout=60
        )
        assert _serving(channel, "bobench.v1.Scheduler")


def test_list_battles_pages_are_bounded_by_bytes_and_still_reach_every_battle(stalled_scheduler):
    long_name = "L" * 256  # the longest name max_name_length allows: each ~300 bytes, two do not fit in 400
    with _channel(stalled_scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        for i in range(2):
            stub.SubmitBattle(
                scheduler_pb2.SubmitBattleRequest(
                    spec_yaml=_spec_yaml(name=f"{long_name[:-1]}{i}"), battle_id=f"p{i}"
                ),
                timeout=60,
            )
        seen, token, pages = [], "", 0
        while True:
            page = stub.ListBattles(
                scheduler_pb2.ListBattlesRequest(page_size=50, page_token=token), timeout=30
            )
            assert len(page.battles) == 1  # a second one would pass 400 bytes
            seen += [b.id for b in page.battles]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert sorted(seen) == ["p0", "p1"] and pages == 2


# ---- the scheduler's executor tells a limit from an overload -----------------------------------------


class _RefusingEvaluator(evaluator_pb2_grpc.EvaluatorServicer):
    def __init__(self, message: str) -> None:
        self.message = message
        self.calls = 0

    async def Evaluate(self, request, context):
        from bobench.errors import ResourceExhausted

        self.calls += 1
        raise ResourceExhausted(self.message)
        yield  # an async generator, like the real Evaluate


@pytest.mark.parametrize("is_limit", [True, False])
def test_grpc_executor_fails_a_run_on_a_limit_but_retries_an_overload(is_limit):
    from bobench.battle.executors.grpc import GrpcExecutor
    from bobench.battle.single_run import plan_single_run
    from bobench.errors import Unavailable
    from bobench.results import RunStatus
    from bobench.rpc.background import BackgroundServer
    from bobench.rpc.limits import LIMIT_PREFIX
    from bobench.rpc.server import ServiceBinding

    message = (LIMIT_PREFIX if is_limit else "") + "too many images; the limit is max_images_per_dataset=5"
    servicer = _RefusingEvaluator(message)
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    plan = plan_single_run("toy", "toy", "knn", {"ks": [5]}, 0)
    with BackgroundServer([binding]) as running:
        executor = GrpcExecutor(running.address, timeout_s=30)
        try:
            if is_limit:
                record = executor.execute(plan)
                assert record.status == RunStatus.FAILED
                assert (
                    record.error.startswith("ResourceExhausted") and "max_images_per_dataset" in record.error
                )
            else:
                with pytest.raises(Unavailable, match="RESOURCE_EXHAUSTED"):
                    executor.execute(plan)
        finally:
            executor.close()
    assert servicer.calls == 1


# ---- max images per dataset: the evaluator's limit reaches the battle as a failed run ----------------


@pytest.fixture
def small_evaluator_and_scheduler(tmp_path):
    evaluator = start_bobench_service(
        "small-evaluator", "bobench.rpc.evaluator_service",
        ["--port", "0", "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")],
        tmp_path / "logs", env={**ENV, "BOBENCH_MAX_IMAGES_PER_DATASET": "10"},
    )  # fmt: skip
    try:
        scheduler = start_bobench_service(
            "small-scheduler", "bobench.rpc.scheduler_service",
            ["--port", "0", "--store", str(tmp_path / "store"), "--evaluators", evaluator.address,
             "--max-retries", "3", "--backoff-s", "5"],
            tmp_path / "logs", env=ENV,
        )  # fmt: skip
    except Exception:
        stop_pid(evaluator.pid)
        raise
    yield evaluator, scheduler
    stop_pid(scheduler.pid)
    stop_pid(evaluator.pid)


def test_a_dataset_over_max_images_is_resource_exhausted_and_fails_the_battles_run_without_retries(
    small_evaluator_and_scheduler,
):
    import time

    from bobench.rpc.limits import LIMIT_PREFIX

    evaluator, scheduler = small_evaluator_and_scheduler
    with _channel(evaluator.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            list(
                evaluator_pb2_grpc.EvaluatorStub(channel).Evaluate(
                    evaluator_pb2.EvaluateRequest(run=_run()), timeout=60
                )
            )
    assert info.value.code() == EXHAUSTED
    assert info.value.details().startswith(LIMIT_PREFIX)
    assert "80 images" in info.value.details() and "max_images_per_dataset=10" in info.value.details()
    with _channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        stub.SubmitBattle(
            scheduler_pb2.SubmitBattleRequest(spec_yaml=_spec_yaml(), battle_id="big"), timeout=60
        )
        for _ in range(600):  # a limit fails the run at once; a retried one would wait 5 s, 10 s, 20 s first
            battle = stub.GetBattle(scheduler_pb2.GetBattleRequest(battle_id="big"), timeout=30)
            if battle.state == scheduler_pb2.BATTLE_STATE_FAILED:
                break
            time.sleep(0.1)
        (result,) = list(stub.ListResults(scheduler_pb2.ListResultsRequest(battle_id="big"), timeout=30))
    assert battle.state == scheduler_pb2.BATTLE_STATE_FAILED
    assert result.status == common_pb2.RUN_STATUS_FAILED
    assert result.error.startswith("ResourceExhausted") and "max_images_per_dataset=10" in result.error
