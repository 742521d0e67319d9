"""The real tritonserver (nvidia-pytriton build) serving generated repositories: the TritonEmbedder
against in-process ONNX Runtime, dynamic batching, error handling, metrics, model control, and the
embedder service process (port 0, one JSON line, SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from bobench.backbones.spec import BackboneSpec
from bobench.embed import make_embedder
from bobench.embed.triton_embedder import TritonEmbedder
from bobench.errors import InvalidArgument, NotFound, Unavailable

pytestmark = pytest.mark.integration


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def _ort_reference(onnx_path, images: np.ndarray) -> np.ndarray:
    from bobench.embed.onnx_embedder import OrtEmbedder

    ort = OrtEmbedder("toy", batch_size=16, threads=1, onnx_path=onnx_path)
    try:
        return ort.embed(images)
    finally:
        ort.close()


@pytest.fixture
def embedder(triton_toy):
    emb = make_embedder("triton", "toy", url=triton_toy["server"].grpc_url, batch_size=8, concurrency=3)
    yield emb
    emb.close()


def test_triton_embeddings_equal_in_process_onnxruntime(triton_toy, embedder):
    images = _images(37)
    got = embedder.embed(images)
    ref = _ort_reference(triton_toy["onnx_path"], images)
    assert got.shape == (37, 32) and got.dtype == np.float32
    assert float(np.abs(got - ref).max()) <= 1e-5
    assert embedder.forward_passes == 5 and embedder.images_embedded == 37  # ceil(37 / 8) batches
    assert embedder.spec == BackboneSpec.from_dict(triton_toy["spec_dict"])  # read from the server's config
    assert embedder.describe()["server_backend"] == "python"


def test_shared_memory_and_float32_transports_give_the_same_features(triton_toy):
    images = _images(20, seed=1)
    ref = _ort_reference(triton_toy["onnx_path"], images)
    url = triton_toy["server"].grpc_url
    shm = TritonEmbedder("toy", url=url, batch_size=8, concurrency=2, shared_memory=True)
    f32 = TritonEmbedder("toy", url=url, model_name="toy_f32", batch_size=8, input_dtype="float32")
    try:
        assert float(np.abs(shm.embed(images) - ref).max()) <= 1e-5
        assert float(np.abs(f32.embed(images.astype(np.float32)) - ref).max()) <= 1e-5
        regions = [name for name, _ in shm._regions]
        assert regions, "shared-memory path was not taken"
    finally:
        shm.close()
        f32.close()
    import tritonclient.grpc as grpcclient

    fresh = grpcclient.InferenceServerClient(url)
    registered = fresh.get_system_shared_memory_status(as_json=True).get("regions", {})
    fresh.close()
    assert not set(regions) & set(registered)  # close() unregistered them
    assert not [r for r in regions if os.path.exists(f"/dev/shm/{r}")]  # and destroyed them


def test_dynamic_batching_merges_16_concurrent_batch1_clients(triton_toy):
    from bobench.protocols.serving_latency import server_stats

    server = triton_toy["server"]
    client = server.client()
    before = server_stats(client, "toy")
    emb = TritonEmbedder("toy", url=server.grpc_url, batch_size=1, concurrency=1)
    image = _images(1)
    errors: list[Exception] = []

    def hammer() -> None:
        try:
            for _ in range(12):
                emb.infer_batch(image)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emb.close()
    after = server_stats(client, "toy")
    requests = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert not errors, errors[0]
    assert requests == 16 * 12
    assert executions < requests, (executions, requests)


def test_unknown_model_is_not_found_and_server_keeps_serving(triton_toy, embedder):
    url = triton_toy["server"].grpc_url
    with pytest.raises(NotFound) as err:
        TritonEmbedder("no_such_model", url=url)
    assert "no_such_model" in str(err.value) and url in str(err.value)
    assert embedder.embed(_images(2)).shape == (2, 32)


def test_wrong_shape_and_dtype_are_invalid_argument_and_server_keeps_serving(triton_toy, embedder):
    with pytest.raises(InvalidArgument, match="shape"):
        embedder.infer_batch(_images(2, size=16))  # sent as-is: the server rejects it
    with pytest.raises(InvalidArgument, match="data-type"):
        embedder.infer_batch(_images(2).astype(np.float32))
    with pytest.raises(InvalidArgument, match=r"\[N, 3, 32, 32\]"):
        embedder.embed(_images(2, size=16))  # caught locally before sending
    with pytest.raises(InvalidArgument, match="integer pixel values"):
        embedder.embed(_images(2).astype(np.float32) + 0.5)
    good = embedder.embed(_images(3, seed=5))
    assert np.allclose(good, _ort_reference(triton_toy["onnx_path"], _images(3, seed=5)), atol=1e-5)


def test_mismatched_spec_or_dtype_is_rejected_at_construction(triton_toy):
    url = triton_toy["server"].grpc_url
    spec = BackboneSpec.from_dict(triton_toy["spec_dict"])
    with pytest.raises(InvalidArgument, match="input dims"):
        TritonEmbedder(spec.replace(input_size=64), url=url, model_name="toy")
    with pytest.raises(InvalidArgument, match="TYPE_UINT8"):
        TritonEmbedder(spec, url=url, model_name="toy", input_dtype="float32")
    with pytest.raises(InvalidArgument, match="max_batch_size"):
        TritonEmbedder(spec, url=url, model_name="toy", batch_size=64)


def test_server_down_is_unavailable_after_retries():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match=f"127.0.0.1:{port}"):
        TritonEmbedder("toy", url=f"127.0.0.1:{port}", retries=2, backoff_s=0.2, timeout_s=5)
    assert time.monotonic() - t0 >= 0.2 + 0.4  # two backoffs: 0.2 s then 0.4 s


def test_metrics_endpoint_exposes_inference_families(triton_toy, embedder):
    embedder.embed(_images(4))
    with urllib.request.urlopen(triton_toy["server"].metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    for family in (
        "nv_inference_request_success",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    ):
        assert f"# TYPE {family}" in text
    success = [
        line
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{") and 'model="toy"' in line
    ]
    assert success and float(success[0].rsplit(" ", 1)[1]) >= 1


def test_model_unload_and_load_through_model_control(triton_toy):
    server = triton_toy["server"]
    emb = TritonEmbedder("toy", url=server.grpc_url, model_name="toy_f32", input_dtype="float32", retries=0)
    try:
        server.unload("toy_f32")
        assert not server.client().is_model_ready("toy_f32")
        with pytest.raises(NotFound, match="toy_f32"):
            emb.infer_batch(_images(1).astype(np.float32))
        assert server.client().is_model_ready("toy")  # the other model is untouched
        server.load("toy_f32")
        assert emb.embed(_images(2).astype(np.float32)).shape == (2, 32)
        with pytest.raises(NotFound):
            server.load("not_in_repo")
    finally:
        if not server.client().is_model_ready("toy_f32"):
            server.load("toy_f32")
        emb.close()


def test_fixed_port_in_use_fails_clearly(triton_toy):
    from bobench.serving.triton import TritonServer

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = TritonServer(triton_toy["repo"], grpc_port=port, models=[])  # no model: fails fast
        with pytest.raises(Unavailable, match="already in use"):
            server.start(timeout_s=60)
        assert server.pid is None  # nothing left running
        server.stop()  # removes its temporary work directory


def test_embedder_service_prints_ports_once_and_stops_on_sigterm(triton_toy, pid_reaper, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bobench.serving.embedder_service",
            "--repo",
            str(triton_toy["repo"]),
            "--models",
            "toy",
            "--log-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    pid_reaper(proc.pid)
    line = proc.stdout.readline()
    info = json.loads(line)
    assert set(info) == {"grpc", "http", "metrics", "host", "pid"} and info["host"] == "127.0.0.1"
    assert len({info["grpc"], info["http"], info["metrics"]}) == 3 and 0 not in info.values()
    pid_reaper(info["pid"])
    emb = TritonEmbedder("toy", url=f"127.0.0.1:{info['grpc']}")
    assert emb.embed(_images(2)).shape == (2, 32)
    emb.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{info['http']}/v2/health/ready", timeout=5) as resp:
        assert resp.status == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert proc.stdout.read() == ""  # exactly one line was printed
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)  # tritonserver went down with the service


def test_port_race_on_a_probed_port_is_retried_with_fresh_ports(triton_toy, monkeypatch):
    from bobench.serving import triton as triton_mod

    real_probe = triton_mod.probe_free_ports
    calls = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]

        def probe_losing_first_race(host, count):
            calls.append(count)
            ports = real_probe(host, count)
            return [taken, *ports[1:]] if len(calls) == 1 else ports  # another process "won" grpc

        monkeypatch.setattr(triton_mod, "probe_free_ports", probe_losing_first_race)
        server = triton_mod.TritonServer(triton_toy["repo"], models=[])
        try:
            server.start(timeout_s=60)
            assert len(calls) == 2 and server.ports["grpc"] != taken
            assert server.client().is_server_ready()
        finally:
            server.stop()
