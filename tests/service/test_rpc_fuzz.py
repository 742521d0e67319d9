"""Property tests (hypothesis) of every RPC of the Evaluator and the Scheduler, in process
(grpc_testing, `tests/service/conftest.py`), and of battle-spec, dataset-ref and YAML parsing.

Generated messages fill any field of the request (strings mixing names, JSON and YAML fragments,
int64 extremes, NaN/Infinity, nested Structs); whatever they hold, the answer is a status other
than INTERNAL or UNKNOWN, and afterwards the service still answers a good request. The parsers raise
nothing but InvalidArgument. Example counts stay small so the module runs in well under a minute.
"""

from __future__ import annotations

import grpc
import pytest
import torch
from google.protobuf import descriptor, message_factory, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bobench.battle.scheduler import Scheduler
from bobench.battle.spec import parse_spec
from bobench.errors import InvalidArgument
from bobench.results.convert import run_request
from bobench.rpc import convert
from bobench.rpc.evaluator_service import EvaluatorServicer
from bobench.rpc.scheduler_service import SchedulerServicer
from bobench.safe_parse import load_yaml
from bobench.store import LocalStore
from bobench.v1 import common_pb2, evaluator_pb2, scheduler_pb2

torch.set_num_threads(1)
EVALUATOR = evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"]
SCHEDULER = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"]
BAD_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

FRAGMENTS = [
    "", "toy", "knn", "linear_probe", "retrieval", "resnet-50", "onnx", "trt-fp16", "../..", "a/b", "\u00b2",
    "{", "[[[[", "null", "NaN", "Infinity", '{"type": "imagefolder", "path": "/nonexistent/x"}',
    '{"name": "toy", "split_seed": 1e999}', '{"ks": [0]}', '{"temperature": 0}', '{"max_iter": -1}',
    "a: &a [x, x]\nb: [*a, *a]", "- [" * 50, "name: !!python/object/apply:os.system ['true']",
    "backbones: [toy]\ndatasets: [toy]\nprotocols: [knn]\nseeds: [9223372036854775808]",
]  # fmt: skip
TEXT = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=40))
INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 2**31 - 1, -(2**63), 2**63 - 1]), st.integers(-(2**63), 2**63 - 1)
)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-(2**53), 2**53), TEXT)
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=12,
)

_LIMITS = {
    descriptor.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    descriptor.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def _struct_value(value) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int | float):
        out.number_value = float(value)
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, list):
        out.list_value.values.extend(_struct_value(v) for v in value)
    else:
        for k, v in value.items():
            out.struct_value.fields[k].CopyFrom(_struct_value(v))
    return out


@st.composite
def structs(draw) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    for key, value in draw(st.dictionaries(TEXT, JSON, max_size=4)).items():
        s.fields[key].CopyFrom(_struct_value(value))
    return s


def _scalar(field: descriptor.FieldDescriptor) -> st.SearchStrategy:
    kind = field.type
    if kind == descriptor.FieldDescriptor.TYPE_STRING:
        return TEXT
    if kind == descriptor.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=20)
    if kind == descriptor.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == descriptor.FieldDescriptor.TYPE_FLOAT else 64)
    if kind == descriptor.FieldDescriptor.TYPE_ENUM:
        return st.integers(-1, len(field.enum_type.values) + 1)
    if kind in _LIMITS:
        return st.integers(*_LIMITS[kind])
    return INT64


@st.composite
def messages(draw, message_class, depth: int = 0):
    """A message of `message_class` with a random subset of its fields set (nested up to depth 3)."""
    msg = message_class()
    for field in message_class.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Struct":
                sub = st.builds(lambda s: s, structs())
            elif field.message_type.full_name.startswith("google.protobuf.") or depth >= 3:
                continue
            else:
                sub = messages(message_factory.GetMessageClass(field.message_type), depth + 1)
            if field.label == descriptor.FieldDescriptor.LABEL_REPEATED:
                getattr(msg, field.name).extend(draw(st.lists(sub, max_size=2)))
            else:
                getattr(msg, field.name).CopyFrom(draw(sub))
        elif field.label == descriptor.FieldDescriptor.LABEL_REPEATED:
            getattr(msg, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(msg, field.name, draw(_scalar(field)))
    return msg


def _terminate(rpc):
    while True:
        try:
            rpc.take_response()
        except ValueError:  # grpc_testing: no more responses
            break
    return rpc.termination()


def _call(server, method: descriptor.MethodDescriptor, request) -> tuple[grpc.StatusCode, str]:
    if method.server_streaming:
        _metadata, code, details = _terminate(server.invoke_unary_stream(method, (), request, 30))
    else:
        _response, _metadata, code, details = server.invoke_unary_unary(method, (), request, 30).termination()
    return code, details


# ---- Evaluator ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    from bobench.config import Settings

    root = tmp_path_factory.mktemp("fuzz-evaluator")
    servicer = EvaluatorServicer(
        Settings(cache_dir=str(root / "cache"), batch_size=16, threads=1), root / "res"
    )
    yield servicer
    servicer.close()


@pytest.fixture
def evaluator_server(evaluator, testing_server):
    return testing_server(EVALUATOR, evaluator)


def _cheap_run(run: common_pb2.RunRequest) -> common_pb2.RunRequest:
    """Keep generated runs cheap: a run that happens to be valid is at most a toy kNN or probe."""
    if run.protocol.name not in ("knn", "linear_probe", "retrieval"):
        run.protocol.name = run.protocol.name + "-x" if run.protocol.name else ""
    return run


def _good_evaluate(server) -> None:
    run = run_request("toy", "toy", "knn", {"ks": [5]}, 0)
    code, details = _call(
        server, EVALUATOR.methods_by_name["Evaluate"], evaluator_pb2.EvaluateRequest(run=run)
    )
    assert code is grpc.StatusCode.OK, details


@FUZZ
@given(request=messages(evaluator_pb2.EvaluateRequest))
def test_evaluate_with_generated_requests_never_answers_internal(evaluator_server, request):
    _cheap_run(request.run)
    code, details = _call(evaluator_server, EVALUATOR.methods_by_name["Evaluate"], request)
    assert code not in BAD_CODES, details
    _good_evaluate(evaluator_server)


@FUZZ
@given(request=messages(evaluator_pb2.GetResultRequest))
def test_get_result_with_generated_requests_never_answers_internal(evaluator_server, request):
    code, details = _call(evaluator_server, EVALUATOR.methods_by_name["GetResult"], request)
    assert code not in BAD_CODES, details


# ---- Scheduler ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A scheduler that is never started: submissions are planned and stored, nothing is dispatched."""
    from bobench.battle.executors.local import LocalExecutor
    from bobench.config import Settings

    root = tmp_path_factory.mktemp("fuzz-scheduler")
    settings_ = Settings(cache_dir=str(root / "cache"), batch_size=16, threads=1)
    sched = Scheduler(LocalStore(root / "store", fsync=False), [LocalExecutor(settings_)])
    yield SchedulerServicer(sched, base_dir=root, settings=settings_)
    sched.close()


@pytest.fixture
def scheduler_server(scheduler, testing_server):
    return testing_server(SCHEDULER, scheduler)


GOOD_SPEC = "name: fuzz-good\nbackbones: [toy]\ndatasets: [toy]\nprotocols: [knn]\n"


def _good_submit(server) -> None:
    request = scheduler_pb2.SubmitBattleRequest(spec_yaml=GOOD_SPEC, battle_id="fuzz-good")
    code, details = _call(server, SCHEDULER.methods_by_name["SubmitBattle"], request)
    assert code is grpc.StatusCode.OK, details


REQUESTS = {name: getattr(scheduler_pb2, f"{name}Request") for name in SCHEDULER.methods_by_name}


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_every_scheduler_rpc_with_generated_requests_never_answers_internal(scheduler_server, method):
    @FUZZ
    @given(request=messages(REQUESTS[method]))
    def check(request):
        if method == "WatchBattle" and request.battle_id == "fuzz-good":
            request.battle_id += "-x"  # a stream on a live battle would follow it until it ends
        code, details = _call(scheduler_server, SCHEDULER.methods_by_name[method], request)
        assert code not in BAD_CODES, details
        _good_submit(scheduler_server)

    check()


def test_the_fuzzed_rpcs_are_every_rpc_of_both_services():
    assert sorted(REQUESTS) == sorted(m.name for m in SCHEDULER.methods)
    assert {m.name for m in EVALUATOR.methods} == {"Evaluate", "GetResult"}


# ---- specs, dataset refs, YAML -----------------------------------------------------------------------

SPEC_KEYS = ["name", "description", "backbones", "datasets", "protocols", "seeds", "embedder", "embedder_variant",
             "settings", "report", "recommend", "bogus"]  # fmt: skip
PLAUSIBLE = st.one_of(
    JSON,
    st.lists(st.sampled_from(["toy", "knn", "linear_probe", "fewshot"]), max_size=3),
    st.lists(
        st.fixed_dictionaries(
            {"name": TEXT},
            optional={
                "config": JSON,
                "datasets": JSON,
                "ref": JSON,
                "type": TEXT,
                "source": TEXT,
                "model_id": TEXT,
            },
        ),
        max_size=2,
    ),  # fmt: skip
    st.lists(INT64 | st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["batch_size", "threads", "device", "max_params"]), JSON, max_size=2),
)
SPECS = st.dictionaries(st.sampled_from(SPEC_KEYS), PLAUSIBLE, max_size=8)


@FUZZ
@given(data=st.one_of(SPECS, JSON))
def test_parse_spec_raises_nothing_but_invalid_argument(data):
    try:
        parse_spec(data)
    except InvalidArgument:
        pass


@FUZZ
@given(ref=messages(common_pb2.DatasetRef))
def test_dataset_refs_raise_nothing_but_invalid_argument(ref):
    try:
        convert.dataset_ref_from_proto(ref, "run.dataset")
    except InvalidArgument:
        pass


@FUZZ
@given(spec=messages(common_pb2.BattleSpec))
def test_battle_spec_messages_raise_nothing_but_invalid_argument(spec):
    try:
        convert.battle_spec_from_proto(spec)
    except InvalidArgument:
        pass


@FUZZ
@given(text=st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=200)))
def test_yaml_text_raises_nothing_but_invalid_argument(text):
    try:
        load_yaml(text, "spec_yaml")
    except InvalidArgument:
        pass
