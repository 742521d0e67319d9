"""Two keys on the real tritonserver (nvidia-pytriton build): the service key unlocks inference,
metadata, model config and statistics, the admin key model control, shared memory, trace and log
settings; health stays open for probes. A client with the service key still cannot load, unload or
register shared memory. Checked over gRPC (tritonclient, the TritonEmbedder) and HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from bobench.errors import PermissionDenied
from bobench.serving.triton_access import ADMIN_HEADER, SERVICE_HEADER, service_client
from bobench.tensors import INPUT_NAME, OUTPUT_NAME
from bobench.triton_errors import to_bobench_error

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-key-for-the-service-key-test"
SERVICE_KEY = "service-key-for-the-service-key-test"


@pytest.fixture(scope="module")
def keyed_triton(tmp_path_factory):
    """tritonserver serving `toy`, started with both keys (one restricted-protocol flag per key)."""
    from bobench.errors import Unavailable
    from bobench.serving.triton import TritonServer, tritonserver_home

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    import torch

    torch.set_num_threads(1)
    from bobench.serving.embedder_service import build_repository_for

    root = tmp_path_factory.mktemp("triton-keys")
    build_repository_for(
        ["toy"],
        root / "repo",
        root / "cache",
        max_batch_size=8,
        preferred_batch_sizes=(4, 8),
        intra_op_threads=1,
    )
    server = TritonServer(root / "repo", log_dir=root / "log", admin_key=ADMIN_KEY, service_key=SERVICE_KEY)
    server.start(timeout_s=120)
    try:
        yield server
    finally:
        server.stop()


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _infer(client) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    images = _images(2)
    inp = grpcclient.InferInput(INPUT_NAME, list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    result = client.infer(
        "toy", [inp], outputs=[grpcclient.InferRequestedOutput(OUTPUT_NAME)], client_timeout=30
    )
    return result.as_numpy(OUTPUT_NAME)


def _refused(call, where: str = "test call") -> PermissionDenied:
    """Run `call`, which Triton must refuse; returns the mapped error (raw status checked)."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as refused:
        call()
    assert "StatusCode.UNAVAILABLE" in str(refused.value.status())  # Triton's answer to a missing key
    error = to_bobench_error(refused.value, where)
    assert isinstance(error, PermissionDenied), error
    return error


def test_inference_and_metadata_need_the_service_key(keyed_triton):
    anonymous = service_client(keyed_triton.grpc_url)
    wrong = service_client(keyed_triton.grpc_url, "not-the-service-key")
    keyed = service_client(keyed_triton.grpc_url, SERVICE_KEY)
    try:
        for client in (anonymous, wrong):
            error = _refused(lambda c=client: _infer(c))
            assert "triton_service_key" in str(error) and "BOBENCH_TRITON_SERVICE_KEY" in str(error)
            _refused(lambda c=client: c.get_model_metadata("toy", client_timeout=10))
            _refused(lambda c=client: c.get_model_config("toy", client_timeout=10))
            _refused(lambda c=client: c.get_inference_statistics("toy", client_timeout=10))
            _refused(lambda c=client: c.get_server_metadata(client_timeout=10))
        assert _infer(keyed).shape == (2, 32)
        assert keyed.get_model_config("toy", client_timeout=10).config.name == "toy"
        assert keyed.get_inference_statistics("toy", client_timeout=10).model_stats
        for client in (anonymous, wrong, keyed):  # health stays open: readiness probes carry no key
            assert client.is_server_live(client_timeout=10) and client.is_server_ready(client_timeout=10)
            assert client.is_model_ready("toy", client_timeout=10)
    finally:
        for client in (anonymous, wrong, keyed):
            client.close()


def test_the_triton_embedder_sends_the_service_key_and_without_it_fails_clearly(keyed_triton):
    from bobench.embed import make_embedder

    with pytest.raises(PermissionDenied, match=r"triton_service_key \(BOBENCH_TRITON_SERVICE_KEY\)"):
        make_embedder("triton", "toy", url=keyed_triton.grpc_url, retries=0, retry_window_s=0)
    embedder = make_embedder(
        "triton", "toy", url=keyed_triton.grpc_url, batch_size=4, service_key=SERVICE_KEY
    )
    try:
        assert embedder.embed(_images(6)).shape == (6, 32)
        assert SERVICE_KEY not in json.dumps(embedder.describe())
    finally:
        embedder.close()


def test_the_service_key_cannot_control_models_or_shared_memory(keyed_triton):
    keyed = service_client(keyed_triton.grpc_url, SERVICE_KEY)
    try:
        error = _refused(lambda: keyed.unload_model("toy", client_timeout=30))
        assert "triton_admin_key" in str(error)
        _refused(lambda: keyed.load_model("toy", client_timeout=30))
        _refused(lambda: keyed.get_model_repository_index(client_timeout=10))
        _refused(
            lambda: keyed.register_system_shared_memory("r", "/bobench_keys_test", 64, client_timeout=10)
        )
        _refused(lambda: keyed.get_trace_settings(client_timeout=10))
        _refused(lambda: keyed.update_log_settings({"log_verbose_level": 1}, client_timeout=10))
        assert keyed.is_model_ready("toy", client_timeout=10)  # nothing was unloaded
        admin = {f"triton-grpc-protocol-{ADMIN_HEADER}": ADMIN_KEY}
        assert keyed.get_model_repository_index(headers=admin, client_timeout=10)  # the admin key works
    finally:
        keyed.close()
    keyed_triton.unload("toy")  # the server's own client sends the admin headers
    keyed_triton.load("toy")
    assert _infer(keyed_triton.client()).shape == (2, 32)


def _http(url: str, body: dict | None = None, headers: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback URL we built
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_http_takes_the_same_keys_as_plain_headers(keyed_triton):
    base = f"http://{keyed_triton.http_url}"
    infer = {"inputs": [{"name": INPUT_NAME, "shape": [1, 3, 32, 32], "datatype": "UINT8",
                         "data": _images(1).ravel().tolist()}]}  # fmt: skip
    assert _http(f"{base}/v2/health/ready") == 200  # probes: no key
    assert _http(f"{base}/v2/models/toy/ready") == 200
    refused = _http(f"{base}/v2/models/toy/infer", infer)
    assert refused == 403
    assert _http(f"{base}/v2/models/toy/infer", infer, {SERVICE_HEADER: "wrong"}) == 403
    assert _http(f"{base}/v2/models/toy/infer", infer, {SERVICE_HEADER: SERVICE_KEY}) == 200
    assert _http(f"{base}/v2/models/toy", headers={SERVICE_HEADER: SERVICE_KEY}) == 200
    index = f"{base}/v2/repository/index"
    assert _http(index, {}, {SERVICE_HEADER: SERVICE_KEY}) == 403
    assert _http(index, {}, {ADMIN_HEADER: ADMIN_KEY}) == 200


def test_neither_key_is_written_to_tritons_log(keyed_triton):
    text = keyed_triton.log_path.read_text(errors="replace")
    assert "Started GRPCInferenceService" in text
    assert ADMIN_KEY not in text and SERVICE_KEY not in text


class _UrlContext:
    """The part of a RunContext serving_latency uses with a config `url`: the spec and settings."""

    def __init__(self, settings) -> None:
        from bobench.backbones import get_spec

        self.spec = get_spec("toy")
        self.settings = settings

    def progress(self, done: int, total: int, message: str = "") -> None:
        pass


def test_serving_latency_by_url_sends_the_service_key_from_settings(keyed_triton):
    from bobench.config import Settings
    from bobench.protocols import get_protocol

    proto = get_protocol("serving_latency")
    config = proto.resolve_config(
        {"url": keyed_triton.grpc_url, "model": "toy", "window_s": 0.2, "min_requests": 3, "max_windows": 10,
         "stability_pct": 50.0, "batch_sizes": [1], "concurrencies": [1], "scenarios": []}
    )  # fmt: skip
    with pytest.raises(PermissionDenied, match="triton_service_key"):
        proto.evaluate(_UrlContext(Settings()), config, 0)
    metrics = proto.evaluate(_UrlContext(Settings(triton_service_key=SERVICE_KEY)), config, 0)
    assert metrics["throughput_ips_b1_c1"] > 0
