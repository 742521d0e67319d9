"""`bob publish` end to end on real services: SeaweedFS S3 holds the model repository, the real
`tritonserver` reads it straight from S3, and the scheduler publishes a battle's backbones before
dispatching its runs to a real evaluator process that embeds through that Triton."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from s3_fixtures import S3_ADMIN

from bobench.backbones import get_spec
from bobench.config import Settings
from bobench.errors import FailedPrecondition
from bobench.serving.publish import load_on_triton, publish
from bobench.stack.procs import stop_pid
from services import start_evaluator, start_scheduler

pytestmark = pytest.mark.integration

ADMIN_KEY = "publish-test-admin-key"
PREFIX = "triton-models"


@pytest.fixture(scope="module")
def s3_triton(seaweedfs, tmp_path_factory):
    """(settings, model store, running TritonServer on s3://bobench/triton-models with an admin key)."""
    from bobench.errors import Unavailable
    from bobench.serving.triton import TritonServer, tritonserver_home
    from bobench.store.s3 import S3Store

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("publish")
    settings = Settings(
        cache_dir=str(root / "cache"),
        threads=1,
        batch_size=8,
        s3_endpoint=f"http://{seaweedfs.address}",
        s3_access_key=S3_ADMIN.access_key,
        s3_secret_key=S3_ADMIN.secret_key,
        triton_admin_key=ADMIN_KEY,
    )
    store = S3Store(settings.s3_endpoint, "bobench", PREFIX, S3_ADMIN.access_key, S3_ADMIN.secret_key,
                    create_bucket=True)  # fmt: skip
    server = TritonServer(
        f"s3://bobench/{PREFIX}", settings=settings, admin_key=ADMIN_KEY, log_dir=root / "log"
    )
    server.start(timeout_s=120)
    try:
        yield settings, store, server
    finally:
        server.stop()


def _publish(spec, settings, store, server, **kw):
    return publish(spec, store, cache_dir=settings.cache_dir, triton_url=server.grpc_url, admin_key=ADMIN_KEY,
                   intra_op_threads=1, **kw)  # fmt: skip


def _images(spec, n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3, spec.input_size, spec.input_size), dtype=np.uint8)


def _ort_features(spec, settings, images):
    from bobench.embed import make_embedder

    return make_embedder("onnxruntime", spec, cache_dir=settings.cache_dir).embed(images)


def _triton_features(spec, server, images):
    from bobench.embed.triton_embedder import TritonEmbedder

    embedder = TritonEmbedder(spec, url=server.grpc_url, batch_size=4)
    try:
        return embedder.embed(images), embedder.describe()
    finally:
        embedder.close()


def test_published_model_is_served_from_s3_and_equals_onnxruntime_then_republish_is_a_no_op(s3_triton):
    settings, store, server = s3_triton
    toy = get_spec("toy")
    first = _publish(toy, settings, store, server)
    assert first.uploaded and first.loaded and first.model_name == "toy"
    keys = store.list("toy/")
    assert keys[-1] == "toy/config.pbtxt" or "toy/config.pbtxt" in keys
    assert f"toy/{first.version}/model.onnx" in keys
    etags = {k: store.stat(k).etag for k in keys}
    images = _images(toy)
    served, described = _triton_features(toy, server, images)
    assert np.abs(served - _ort_features(toy, settings, images)).max() <= 1e-5
    assert described["model_version"] == str(first.version)

    again = _publish(toy, settings, store, server)
    assert not again.uploaded and again.version == first.version
    assert {k: store.stat(k).etag for k in store.list("toy/")} == etags  # nothing was rewritten


def test_new_weights_get_a_new_version_and_triton_serves_it(s3_triton):
    settings, store, server = s3_triton
    old_spec = dataclasses.replace(get_spec("toy"), name="toy_reweighted", seed=0)
    new_spec = dataclasses.replace(old_spec, seed=1)
    old = _publish(old_spec, settings, store, server)
    new = _publish(new_spec, settings, store, server)
    assert new.model_name == old.model_name and new.version != old.version and new.uploaded
    client = server.client()
    assert client.is_model_ready(new.model_name, str(new.version))
    assert not client.is_model_ready(old.model_name, str(old.version))  # the pinned policy: only the new
    images = _images(new_spec, seed=1)
    served, _ = _triton_features(new_spec, server, images)
    assert np.abs(served - _ort_features(new_spec, settings, images)).max() <= 1e-5
    assert np.abs(served - _ort_features(old_spec, settings, images)).max() > 1e-3


def test_a_model_that_fails_to_load_takes_nothing_down_and_restart_brings_published_models_back(s3_triton):
    settings, store, server = s3_triton
    toy = get_spec("toy")
    toy_model = _publish(toy, settings, store, server)
    store.put_bytes("broken/1/model.py", b"raise RuntimeError('this model cannot load')\n")
    store.put_bytes("broken/config.pbtxt", b'name: "broken"\nbackend: "python"\nmax_batch_size: 4\n'
                    b'input [{name: "x" data_type: TYPE_FP32 dims: [1]}]\n'
                    b'output [{name: "y" data_type: TYPE_FP32 dims: [1]}]\n')  # fmt: skip
    with pytest.raises(FailedPrecondition, match=r"'broken'.*this model cannot load"):
        load_on_triton(server.grpc_url, "broken", 1, admin_key=ADMIN_KEY, timeout_s=60)
    assert server.alive()
    images = _images(toy)
    before, _ = _triton_features(toy, server, images)

    server.stop()  # explicit mode forgets loaded models; --load-model=* loads the store's again
    server.start(timeout_s=120)
    assert server.client().is_model_ready("toy", str(toy_model.version))
    assert not server.client().is_model_ready("broken")
    assert server.client().is_server_ready()  # --strict-readiness=false: one bad model keeps the server ready
    after, _ = _triton_features(toy, server, images)
    np.testing.assert_allclose(after, before, atol=1e-6)
    store.delete("broken/1/model.py")
    store.delete("broken/config.pbtxt")


def test_model_control_needs_the_admin_key_inference_does_not(s3_triton):
    settings, store, server = s3_triton
    toy_model = _publish(get_spec("toy"), settings, store, server)
    server.client().unload_model("toy", headers=server.admin_headers)
    with pytest.raises(FailedPrecondition, match="restricted"):
        load_on_triton(server.grpc_url, "toy", toy_model.version, admin_key="", timeout_s=30)
    load_on_triton(server.grpc_url, "toy", toy_model.version, admin_key=ADMIN_KEY, timeout_s=60)
    served, _ = _triton_features(get_spec("toy"), server, _images(get_spec("toy")))  # no key needed
    assert served.shape == (5, 32)
    import urllib.error
    import urllib.request

    from bobench.serving.triton_access import ADMIN_HEADER

    index = f"http://{server.http_url}/v2/repository/index"
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(urllib.request.Request(index, data=b"{}", method="POST"))
    with urllib.request.urlopen(
        urllib.request.Request(index, data=b"{}", method="POST", headers={ADMIN_HEADER: ADMIN_KEY})
    ) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/toy/stats") as resp:
        assert resp.status == 200  # statistics stay open to evaluators


FRESH = {"name": "toy_fresh", "source": "toy", "model_id": "toy-conv3", "seed": 11, "input_size": 32,
         "embed_dim": 32, "family": "cnn"}  # fmt: skip
UNPUBLISHABLE = {"name": "toy_unpublishable", "source": "onnx", "model_id": "/nonexistent/bobench/x.onnx",
                 "input_size": 32, "embed_dim": 8}  # fmt: skip


def test_scheduler_publishes_a_never_served_backbone_before_dispatch(s3_triton, tmp_path):
    from bobench.battle.spec import parse_spec
    from bobench.client import SchedulerClient

    settings, store, server = s3_triton
    spec = parse_spec({"name": "publish-e2e", "backbones": [FRESH, UNPUBLISHABLE], "datasets": ["toy"],
                       "protocols": [{"name": "knn", "config": {"ks": [5]}}]})  # fmt: skip
    assert not store.list("toy_fresh/")
    common = {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1", "BOBENCH_BATCH_SIZE": "8",
              "BOBENCH_TRITON_URL": server.grpc_url}  # fmt: skip
    evaluator = start_evaluator(tmp_path, {**common, "BOBENCH_EMBEDDER": "triton"})
    scheduler = None
    try:
        scheduler = start_scheduler(tmp_path, evaluator.address, {
            **common,
            "BOBENCH_CACHE_DIR": str(tmp_path / "c-scheduler"),
            "BOBENCH_S3_ENDPOINT": settings.s3_endpoint,
            "BOBENCH_S3_ACCESS_KEY": settings.s3_access_key,
            "BOBENCH_S3_SECRET_KEY": settings.s3_secret_key,
            "BOBENCH_PUBLISH_TO": f"s3://bobench/{PREFIX}",
            "BOBENCH_TRITON_ADMIN_KEY": ADMIN_KEY,
            "BOBENCH_DATA_ROOTS": "/nonexistent/bobench",  # the unpublishable file may be named, not found
        })  # fmt: skip
        with SchedulerClient(scheduler.address) as client:
            client.wait_ready()
            battle_id = client.submit(spec).battle_id
            for _ in client.watch(battle_id, timeout_s=240):
                pass
            records = {r.backbone: r for r in client.results(battle_id)}
    finally:
        if scheduler is not None:
            stop_pid(scheduler.pid)
        stop_pid(evaluator.pid)
    fresh = records["toy_fresh"]
    assert fresh.finished, fresh.error
    assert fresh.environment["runtime"] == "triton" and fresh.environment["embedder_variant"] == "onnx"
    assert fresh.environment["served_model"] == "toy_fresh" and fresh.environment["model_version"]
    assert "toy_fresh/config.pbtxt" in store.list("toy_fresh/")
    bad = records["toy_unpublishable"]
    assert bad.status == "failed" and "publishing 'toy_unpublishable'" in bad.error
    assert "does not exist" in bad.error


def test_bob_publish_cli_publishes_and_says_when_nothing_was_uploaded(s3_triton, monkeypatch, capsys):
    from bobench.cli import main

    settings, store, server = s3_triton
    for key, value in {"BOBENCH_S3_ENDPOINT": settings.s3_endpoint, "BOBENCH_S3_ACCESS_KEY": settings.s3_access_key,
                       "BOBENCH_S3_SECRET_KEY": settings.s3_secret_key, "BOBENCH_TRITON_ADMIN_KEY": ADMIN_KEY,
                       "BOBENCH_CACHE_DIR": settings.cache_dir}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    argv = ["publish", "toy", "--store", f"s3://bobench/{PREFIX}", "--triton-url", server.grpc_url]
    assert main(argv) == 0
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert "already published, nothing uploaded" in out[-1] and "loaded on" in out[-1]
    assert settings.s3_secret_key not in "\n".join(out)
    assert main(["publish", "toy", "--store", "/tmp/not-s3"]) == 2
    assert "expected s3://bucket/prefix" in capsys.readouterr().err


def test_s3_credentials_reach_triton_only_through_its_environment(s3_triton):
    from pathlib import Path

    settings, _, server = s3_triton
    secret = settings.s3_secret_key.encode()
    assert secret not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert secret not in server.log_path.read_bytes()
    assert b"AWS_SECRET_ACCESS_KEY=" + secret in Path(f"/proc/{server.pid}/environ").read_bytes()
