"""Triton model-repository generation, TensorRT preconditions, launcher helpers, client error mapping
and the serving-latency arithmetic. No server is started here (see tests/integration/test_triton*.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sysconfig

import numpy as np
import pytest

from bobench.backbones.spec import BackboneSpec
from bobench.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from bobench.export import triton_repo
from bobench.export.triton_repo import read_model_config, read_model_metadata, write_model_repository
from bobench.tensors import INPUT_NAME, OUTPUT_NAME

SIZE, DIM = 16, 8


def tiny_onnx(path, size=SIZE, dim=DIM, input_dtype="uint8"):
    """A contract-following ONNX graph built with onnx.helper (no torch): images -> pooled -> features."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(12, dim)).astype(np.float32)
    elem = TensorProto.UINT8 if input_dtype == "uint8" else TensorProto.FLOAT
    half = size // 2
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "scale"], ["xs"]),
        helper.make_node("AveragePool", ["xs"], ["p"], kernel_shape=[half, half], strides=[half, half]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "W"], [OUTPUT_NAME]),
    ]
    inits = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(weights, "W"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, elem, ["N", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tiny_spec(**changes) -> BackboneSpec:
    spec = BackboneSpec(
        name="tiny/net",
        source="toy",
        model_id="tiny",
        family="cnn",
        pretraining_method="random",
        pretraining_data="none",
        input_size=SIZE,
        embed_dim=DIM,
    )
    return spec.replace(**changes)


@pytest.fixture
def onnx_u8(tmp_path):
    return tiny_onnx(tmp_path / "tiny_u8.onnx")


def test_local_config_parses_and_matches_spec(tmp_path, onnx_u8):
    from tritonclient.grpc import model_config_pb2 as mc

    spec = tiny_spec()
    model_dir = write_model_repository(
        spec,
        onnx_u8,
        tmp_path / "repo",
        max_batch_size=16,
        preferred_batch_sizes=(4, 8),
        max_queue_delay_us=500,
        instances=2,
        intra_op_threads=1,
    )
    assert model_dir.name == "tiny_net"  # '/' is not allowed in Triton model names
    cfg = read_model_config(model_dir)
    assert isinstance(cfg, mc.ModelConfig)
    assert cfg.name == "tiny_net" and cfg.backend == "python" and cfg.platform == ""
    assert cfg.max_batch_size == 16
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == (INPUT_NAME, mc.TYPE_UINT8, [3, SIZE, SIZE])
    assert (out.name, out.data_type, list(out.dims)) == (OUTPUT_NAME, mc.TYPE_FP32, [DIM])
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["intra_op_threads"] == "1" and params["onnx_file"] == "model.onnx"
    assert BackboneSpec.from_dict(json.loads(params["bobench_spec"])) == spec
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_u8.read_bytes()


def test_local_variant_ships_the_versioned_template_verbatim(tmp_path, onnx_u8):
    model_dir = write_model_repository(tiny_spec(), onnx_u8, tmp_path / "repo")
    shipped = (model_dir / "1" / "model.py").read_text()
    assert shipped == triton_repo.TEMPLATE_PATH.read_text()
    (version,) = re.findall(r'^TEMPLATE_VERSION = "(\w+)"', shipped, flags=re.M)
    assert version == triton_repo.TEMPLATE_VERSION
    assert read_model_config(model_dir).parameters["template_version"].string_value == version


def test_metadata_records_spec_digest_and_export(tmp_path, onnx_u8):
    report = {"opset": 17, "exporter": "test"}
    model_dir = write_model_repository(tiny_spec(), onnx_u8, tmp_path / "repo", export_report=report)
    meta = read_model_metadata(model_dir)
    assert meta["onnx_sha256"] == hashlib.sha256(onnx_u8.read_bytes()).hexdigest()
    assert meta["spec"] == tiny_spec().to_dict() and meta["export"] == report
    assert meta["variant"] == "local" and meta["model_file"] == "1/model.onnx"
    assert triton_repo.list_models(tmp_path / "repo") == ["tiny_net"]


def test_cluster_variant_float32_uses_onnxruntime_platform_on_gpu(tmp_path):
    from tritonclient.grpc import model_config_pb2 as mc

    onnx_f32 = tiny_onnx(tmp_path / "f32.onnx", input_dtype="float32")
    model_dir = write_model_repository(
        tiny_spec(),
        onnx_f32,
        tmp_path / "repo",
        variant="cluster",
        input_dtype="float32",
        model_name="tiny_f32",
    )
    cfg = read_model_config(model_dir / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and cfg.backend == ""
    assert cfg.input[0].data_type == mc.TYPE_FP32
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx"]


def test_rewriting_an_entry_replaces_it(tmp_path, onnx_u8):
    repo = tmp_path / "repo"
    write_model_repository(tiny_spec(), onnx_u8, repo, max_batch_size=8, preferred_batch_sizes=(8,))
    write_model_repository(tiny_spec(), onnx_u8, repo, max_batch_size=32)
    assert read_model_config(repo / "tiny_net").max_batch_size == 32
    assert [p.name for p in repo.iterdir()] == ["tiny_net"]  # no staging leftovers


@pytest.mark.parametrize(
    ("spec_changes", "options", "needle"),
    [
        ({}, {"input_dtype": "float32"}, "input_dtype='float32'"),  # graph takes uint8
        ({"input_size": 24}, {}, "needs [N, 3, 24, 24]"),
        ({"embed_dim": 9}, {}, "needs [N, 9]"),
        ({"embed_dim": None}, {}, "embed_dim"),
        ({}, {"platform": "tensorrt_plan"}, "local variant"),
        ({}, {"variant": "edge"}, "variant"),
        ({}, {"max_batch_size": 4}, "preferred_batch_sizes"),
        ({}, {"instances": 0}, "instances"),
        ({}, {"model_name": "bad name"}, "model_name"),
    ],
)
def test_inconsistent_requests_are_invalid_argument(tmp_path, onnx_u8, spec_changes, options, needle):
    with pytest.raises(InvalidArgument) as err:
        write_model_repository(tiny_spec(**spec_changes), onnx_u8, tmp_path / "repo", **options)
    assert needle in str(err.value)
    assert not (tmp_path / "repo" / "tiny_net").exists()


def test_missing_files_are_not_found(tmp_path, onnx_u8):
    with pytest.raises(NotFound, match="does not exist"):
        write_model_repository(tiny_spec(), tmp_path / "nope.onnx", tmp_path / "repo")
    with pytest.raises(NotFound, match="config.pbtxt"):
        read_model_config(tmp_path)
    with pytest.raises(NotFound, match="TensorRT plan"):
        write_model_repository(
            tiny_spec(),
            onnx_u8,
            tmp_path / "repo",
            variant="cluster",
            platform="tensorrt_plan",
            plan_path=tmp_path / "missing.plan",
        )


def test_corrupt_config_names_file_and_position(tmp_path):
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "x"\nmax_batch_size: "many"\n')
    with pytest.raises(InvalidArgument, match=r"config\.pbtxt.*2:"):
        read_model_config(bad)


def test_not_an_onnx_file_is_invalid_argument(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx at all\xff" * 10)
    with pytest.raises(InvalidArgument, match="junk.onnx"):
        write_model_repository(tiny_spec(), junk, tmp_path / "repo")


# -- TensorRT ------------------------------------------------------------------------------------------
def test_tensorrt_reports_why_it_is_unavailable(tmp_path, onnx_u8):
    from bobench.export import tensorrt

    ok, reason = tensorrt.tensorrt_available()
    if ok:
        pytest.skip(f"TensorRT is available here: {reason}")
    assert reason
    with pytest.raises(FailedPrecondition, match="TensorRT unavailable"):
        tensorrt.build_engine(onnx_u8, tmp_path / "m.plan")
    with pytest.raises(FailedPrecondition, match="TensorRT unavailable"):
        write_model_repository(
            tiny_spec(), onnx_u8, tmp_path / "repo", variant="cluster", platform="tensorrt_plan"
        )
    assert not list((tmp_path / "repo").iterdir())  # the failed entry left no staging directory behind


def test_tensorrt_rejects_bad_batch_bounds_before_touching_the_gpu(onnx_u8, tmp_path):
    from bobench.export.tensorrt import build_engine

    with pytest.raises(InvalidArgument, match="min_batch"):
        build_engine(onnx_u8, tmp_path / "m.plan", min_batch=8, opt_batch=4, max_batch=16)
    with pytest.raises(InvalidArgument, match="precision"):
        build_engine(onnx_u8, tmp_path / "m.plan", precision="int4")


@pytest.mark.gpu
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    from bobench.export import tensorrt

    ok, reason = tensorrt.tensorrt_available()
    if not ok:
        pytest.skip(reason)
    onnx_path = tiny_onnx(tmp_path / "t.onnx", input_dtype="float32")
    plan = tensorrt.build_engine(onnx_path, tmp_path / "t.plan", precision="fp32", opt_batch=4, max_batch=8)
    images = np.random.default_rng(0).integers(0, 256, (5, 3, SIZE, SIZE)).astype(np.float32)
    check = tensorrt.verify_engine(plan, onnx_path, images, atol=1e-3)
    assert check["ok"], check


# -- launcher helpers and error mapping ----------------------------------------------------------------
def test_backend_dir_links_resolve_to_the_wheel(tmp_path):
    from bobench.serving.triton import prepare_backend_dir, tritonserver_home

    try:
        home = tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    backend = prepare_backend_dir(tmp_path / "backends") / "python"
    names = sorted(p.name for p in backend.iterdir())
    assert names == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    for p in backend.iterdir():
        assert p.is_symlink() and p.resolve().is_file() and str(p.resolve()).startswith(str(home.resolve()))


def test_server_environment_puts_venv_first():
    from bobench.serving.triton import server_environment

    env = server_environment()
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == sysconfig.get_config_var("LIBDIR")
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(os.sys.executable)


def test_probed_ports_are_distinct_and_bindable():
    import socket

    from bobench.serving.triton import probe_free_ports

    ports = probe_free_ports("127.0.0.1", 3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect", Unavailable),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", DeadlineExceeded),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'x' is not found", NotFound),
        ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'images'", InvalidArgument),
        ("StatusCode.INVALID_ARGUMENT", "Request for unknown model: 'x' is not found", NotFound),
    ],
)
def test_triton_errors_map_to_bobench_errors(status, message, expected):
    from tritonclient.utils import InferenceServerException

    from bobench.triton_errors import to_bobench_error

    err = to_bobench_error(InferenceServerException(msg=message, status=status), "model 'm' at h:1")
    assert type(err) is expected
    assert "model 'm' at h:1" in str(err) and message in str(err)


# -- serving-latency arithmetic ------------------------------------------------------------------------
def _window(start, end, latencies_ms, batch, stats_end):
    from bobench.protocols.serving_latency import Window

    return Window(
        start_s=start,
        end_s=end,
        latencies_s=[x / 1e3 for x in latencies_ms],
        images=len(latencies_ms) * batch,
        stats_end=stats_end,
    )


def _stats(n_requests, n_exec, queue_ns):
    out = {
        "inference_count": n_requests,
        "execution_count": n_exec,
        "success_count": n_requests,
        "success_ns": n_requests * 3e6,
    }
    for phase, ns in (
        ("queue", queue_ns),
        ("compute_input", 1e5),
        ("compute_infer", 2e6),
        ("compute_output", 1e5),
    ):
        out[f"{phase}_count"], out[f"{phase}_ns"] = n_requests, n_requests * ns
    return out


def test_summary_uses_last_windows_and_stat_deltas():
    from bobench.protocols.serving_latency import SettingResult, _converged, summarize

    rng = np.random.default_rng(0)
    lat = [list(rng.uniform(4.8, 5.2, 20)) for _ in range(4)]  # p50s within 10 % of each other
    windows = [
        _window(i, i + 1.0, lat[i], 2, _stats(20 * (i + 1), 5 * (i + 1), 1e6 * (i + 1))) for i in range(4)
    ]
    result = SettingResult(
        batch_size=2, concurrency=4, windows=windows, stats_start=_stats(0, 0, 0), stable=True
    )
    out = summarize(result, stable_windows=3)
    last = np.concatenate(lat[1:])
    assert out["throughput_ips_b2_c4"] == pytest.approx(60 * 2 / 3.0)
    for q in (50, 90, 95, 99):
        assert out[f"latency_ms_p{q}_b2_c4"] == pytest.approx(np.percentile(last, q))
    # cumulative queue ns: 20*1e6*1 after window 0, 80*4e6 after window 3 -> delta over 60 requests
    assert out["server_queue_ms_b2_c4"] == pytest.approx((80 * 4e6 - 20 * 1e6) / 60 / 1e6)
    assert out["server_compute_infer_ms_b2_c4"] == pytest.approx(2.0)
    assert out["server_batch_avg_b2_c4"] == pytest.approx(60 / 15)
    assert _converged(windows[1:], 10.0)
    assert not _converged([windows[1], windows[2], _window(3, 4, [50.0] * 20, 2, {})], 10.0)


def test_serving_latency_is_registered_with_directions():
    from bobench.protocols import get_protocol

    proto = get_protocol("serving_latency")
    assert proto.task == "serving" and proto.primary_metric == "latency_ms_p50_b1_c1"
    assert proto.higher_is_better["throughput_ips_b8_c4"] is True
    assert proto.higher_is_better["latency_ms_p99_b1_c1"] is False
    assert proto.higher_is_better["server_queue_ms_b1_c1"] is False
    with pytest.raises(InvalidArgument, match="windows_s"):
        proto.resolve_config({"windows_s": 1})


def test_serving_latency_without_triton_is_failed_precondition():
    from bobench.protocols.serving_latency import evaluate

    class Ctx:  # only what the protocol touches; an in-process embedder means "no Triton"
        spec = tiny_spec()

        def embedder(self):
            class Ort:
                runtime = "onnxruntime"

            return Ort()

    from bobench.protocols import get_protocol

    config = get_protocol("serving_latency").resolve_config({})
    with pytest.raises(FailedPrecondition, match="needs a running Triton"):
        evaluate(Ctx(), config, 0)
    with pytest.raises(InvalidArgument, match="stable_windows"):
        evaluate(Ctx(), {**config, "stable_windows": 5, "max_windows": 3}, 0)
