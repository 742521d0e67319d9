"""Publish Jobs end to end: a *stand-in Kubernetes API server* (`tests/k8s_standin.py`; no real cluster
exists here) runs each Job's container command (`bob publish ...`) as a local process with the Job's
env (Secrets resolved), real SeaweedFS S3 holds the model repository and the artifacts, and the real
`tritonserver` reads its models straight from S3 and is asked to load them by the Job.

Checked: a JobPublisher publish creates one Job running `bob publish`, after which Triton serves the
model; publishing again (same step, or a restarted scheduler's new step) creates no Job; the real
Scheduler with the Kubernetes job executor, the JobPublisher preparer and a real evaluator process runs
a battle with a never-published backbone end to end (publish Job -> evaluator -> Triton) plus a
fine-tune run as a Job; a publish Job that fails with exit code 2 fails only that backbone's
embedding runs, with the Job's reason.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from bobench.backbones import get_spec
from bobench.battle.executors.grpc import GrpcExecutor
from bobench.battle.executors.k8s_jobs import JobConfig
from bobench.battle.executors.kubernetes import KubernetesExecutor
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.k8s_publish import JobPublisher, publish_job_key, publish_job_name
from bobench.battle.publish_step import PublishStep
from bobench.battle.scheduler import Scheduler
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.stack.procs import stop_pid
from bobench.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from k8s_standin import StandInKubeAPI  # noqa: E402
from s3_fixtures import S3_ADMIN  # noqa: E402

from services import start_evaluator  # noqa: E402

pytestmark = pytest.mark.integration

ADMIN_KEY = "k8s-publish-admin-key"
SECRET = "bobench-credentials"  # the JobConfig default, as deployed
FINETUNE = {"name": "finetune", "config": {"epochs": 1, "batch_size": 16, "lr": 1e-2, "warmup_epochs": 0.5,
                                           "device": "cpu"}}  # fmt: skip


@pytest.fixture
def models(seaweedfs, tmp_path):
    """(settings, model store, TritonServer) over a fresh model repository prefix: nothing is published."""
    from bobench.errors import Unavailable
    from bobench.serving.triton import TritonServer, tritonserver_home

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1, batch_size=8,
                        s3_endpoint=f"http://{seaweedfs.address}", s3_access_key=S3_ADMIN.access_key,
                        s3_secret_key=S3_ADMIN.secret_key, triton_admin_key=ADMIN_KEY)  # fmt: skip
    url = f"s3://bobench/k8s-models-{uuid.uuid4().hex[:8]}"
    store = open_store(url, settings, create_bucket=True)
    server = TritonServer(url, settings=settings, admin_key=ADMIN_KEY, log_dir=tmp_path / "triton-log")
    server.start(timeout_s=120)
    try:
        yield settings, store, server
    finally:
        server.stop()


@pytest.fixture
def standin(tmp_path):
    """The stand-in Kubernetes API server, knowing the deployment Secret's values."""
    secrets = {(SECRET, "BOBENCH_S3_ACCESS_KEY"): S3_ADMIN.access_key,
               (SECRET, "BOBENCH_S3_SECRET_KEY"): S3_ADMIN.secret_key, (SECRET, "TRITON_ADMIN_KEY"): ADMIN_KEY}  # fmt: skip
    api = StandInKubeAPI(tmp_path / "pods", secrets).start()
    yield api
    api.stop()
    assert api.invalid == []  # every object sent passed the schema and model checks


@pytest.fixture
def cluster(models, standin):
    """(job config, artifact store, make_publisher) for one fresh artifact prefix."""
    from kubernetes import client

    settings, model_store, server = models
    url = f"s3://bobench/k8s-artifacts-{uuid.uuid4().hex[:8]}"
    config = JobConfig(image="bobench/evaluator", gpus=0, cpu_request="1", memory_request="1Gi", cpu_limit="2",
                       memory_limit="2Gi", store=url, s3_endpoint=settings.s3_endpoint, backoff_limit=1,
                       env={"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1"}, watch_timeout_s=2,
                       publish_jobs=True)  # fmt: skip
    made = []

    def make_publisher() -> JobPublisher:
        api = client.ApiClient(standin.configuration())
        made.append(
            JobPublisher(config, model_store, triton_url=server.grpc_url, target="local", api_client=api)
        )
        return made[-1]

    yield config, open_store(url, settings, create_bucket=True), make_publisher
    for publisher in made:
        publisher.close()


def jobs_sent(standin) -> list[dict]:
    return [o for o in standin.received if o.get("kind") == "Job"]


def argv_of(job: dict) -> list[str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return [*container["command"], *container["args"]]


def test_a_publish_job_runs_bob_publish_triton_serves_the_model_and_republishing_creates_no_job(
    models, standin, cluster
):
    from bobench.embed.triton_embedder import TritonEmbedder

    settings, model_store, server = models
    _, _, make_publisher = cluster
    step = PublishStep(make_publisher())
    published = step.prepare("toy", "onnx")
    name = publish_job_name(publish_job_key(get_spec("toy").digest(), "onnx", "local"))
    assert standin.creates == {name: 1}
    (job,) = jobs_sent(standin)
    assert argv_of(job)[:3] == ["bob", "publish", "toy"] and server.grpc_url in argv_of(job)
    assert job["metadata"]["labels"]["bobench.io/job-kind"] == "publish"
    assert published.loaded and published.model_name == "toy" and published.store_url == model_store.url
    assert f"toy/{published.version}/model.onnx" in model_store.list("toy/")
    assert server.client().is_model_ready("toy", str(published.version))
    images = np.random.default_rng(0).integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    embedder = TritonEmbedder(get_spec("toy"), url=server.grpc_url, batch_size=4)
    try:
        assert embedder.embed(images).shape == (3, 32)
        assert embedder.describe()["model_version"] == str(published.version)
    finally:
        embedder.close()

    assert step.prepare("toy", "onnx") == published and step.publishes == 1  # memoized
    restarted = PublishStep(make_publisher())  # a restarted scheduler: finds the completed Job
    assert restarted.prepare("toy", "onnx").version == published.version
    assert standin.creates == {name: 1}


def test_the_scheduler_publishes_a_never_published_backbone_through_a_job_and_runs_the_battle(
    models, standin, cluster, tmp_path
):
    settings, model_store, server = models
    config, store, make_publisher = cluster
    assert model_store.list("toy/") == []
    spec = parse_spec({"name": "k8s-publish-e2e", "backbones": ["toy"], "datasets": ["toy"], "seeds": [0],
                       "protocols": [{"name": "knn", "config": {"ks": [5]}}, FINETUNE]})  # fmt: skip
    env = {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1", "BOBENCH_BATCH_SIZE": "8",
           "BOBENCH_EMBEDDER": "triton", "BOBENCH_TRITON_URL": server.grpc_url}  # fmt: skip
    evaluator = start_evaluator(tmp_path, env)
    from kubernetes import client

    executor = KubernetesExecutor(config, store, client.ApiClient(standin.configuration()))
    sched = Scheduler(store, [GrpcExecutor(evaluator.address, timeout_s=240)], job_executor=executor,
                      preparer=PublishStep(make_publisher()), max_retries=1, backoff_s=0.1).start()  # fmt: skip
    try:
        bid = sched.submit(spec)
        status = sched.wait(bid, timeout_s=300)
        records = {r.protocol: r for r in sched.results(bid)}
    finally:
        sched.close(timeout_s=5)
        stop_pid(evaluator.pid)
    assert status.state == "finished", records
    knn, finetune = records["knn"], records["finetune"]
    assert knn.finished and finetune.finished, (knn.error, finetune.error)
    assert knn.environment["runtime"] == "triton" and knn.environment["served_model"] == "toy"
    version = knn.environment["model_version"]
    assert server.client().is_model_ready("toy", version) and f"toy/{version}/model.onnx" in model_store.list(
        "toy/"
    )
    kinds = sorted(j["metadata"]["labels"].get("bobench.io/job-kind", "run") for j in jobs_sent(standin))
    assert kinds == ["publish", "run"]  # one publish Job (the fine-tune run embeds nothing), one run Job
    assert sorted(standin.creates.values()) == [1, 1]


def test_a_publish_job_failing_with_exit_2_fails_only_that_backbones_runs_with_the_reason(
    models, standin, cluster
):
    settings, _, _ = models
    config, store, make_publisher = cluster
    spec = parse_spec({"name": "k8s-publish-bad", "backbones": ["toy"], "datasets": ["toy"], "seeds": [0],
                       "embedder_variant": "trt-fp16",  # a TensorRT plan cannot be published for target local
                       "protocols": [{"name": "knn", "config": {"ks": [5]}}, FINETUNE]})  # fmt: skip
    from kubernetes import client

    executor = KubernetesExecutor(config, store, client.ApiClient(standin.configuration()))
    step = PublishStep(make_publisher())
    sched = Scheduler(store, [LocalExecutor(settings)], job_executor=executor, preparer=step, max_retries=2,
                      backoff_s=0.1).start()  # fmt: skip
    try:
        bid = sched.submit(spec)
        status = sched.wait(bid, timeout_s=300)
        records = {r.protocol: r for r in sched.results(bid)}
    finally:
        sched.close(timeout_s=5)
    assert set(records) == {"knn", "finetune"}, (status, records)
    knn, finetune = records["knn"], records["finetune"]
    assert knn.status == "failed" and "publishing 'toy' (trt-fp16)" in knn.error, knn.error
    assert "exit code 2" in knn.error and "only target 'cluster-gpu' serves it" in knn.error
    assert finetune.finished, finetune.error  # the other run of the battle goes on
    name = publish_job_name(publish_job_key(get_spec("toy").digest(), "trt-fp16", "local"))
    assert standin.creates[name] == 1 and step.publishes == 1  # permanent: neither retried nor re-run
    assert len(standin.pods_of(name)) == 1  # exit 2 fails the Job at once (podFailurePolicy)


def test_a_restarted_scheduler_adopts_the_running_publish_job_instead_of_creating_another(standin, cluster):
    import threading
    import time

    _, _, make_publisher = cluster
    name = publish_job_name(publish_job_key(get_spec("toy").digest(), "onnx", "local"))
    first: list = []
    worker = threading.Thread(
        target=lambda: first.append(make_publisher().publish("toy", "onnx")), daemon=True
    )
    worker.start()
    deadline = time.monotonic() + 60
    while standin.running_pid(name) is None:
        assert time.monotonic() < deadline, "the publish Job's process never started"
        time.sleep(0.02)
    adopted = make_publisher().publish("toy", "onnx")  # while the first one's process still runs
    worker.join(timeout=120)
    assert first and first[0] == adopted and adopted.loaded
    assert standin.creates == {name: 1} and len(standin.pods_of(name)) == 1


def test_the_scheduler_service_with_publish_jobs_on_publishes_through_a_job(models, standin, tmp_path):
    """The real scheduler process (`build_scheduler`): BOBENCH_JOB_CONFIG with `publish_jobs: true`,
    API access from a kubeconfig naming the stand-in API server, the battle submitted over gRPC."""
    import yaml

    from bobench.client import SchedulerClient
    from bobench.stack.procs import start_bobench_service

    settings, model_store, server = models
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "standin", "cluster": {"server": standin.url}}],
        "users": [{"name": "scheduler", "user": {"token": "stand-in-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "scheduler"}}],
    }))  # fmt: skip
    jobs_yaml = tmp_path / "jobs.yaml"
    jobs_yaml.write_text(yaml.safe_dump({"image": "bobench/evaluator", "gpus": 0, "watch_timeout_s": 2,
                                         "publish_jobs": True, "env": {"OMP_NUM_THREADS": "1"}}))  # fmt: skip
    common = {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1", "BOBENCH_BATCH_SIZE": "8",
              "BOBENCH_TRITON_URL": server.grpc_url}  # fmt: skip
    evaluator = start_evaluator(tmp_path, {**common, "BOBENCH_EMBEDDER": "triton"})
    env = {
        **common,
        "KUBECONFIG": str(kubeconfig),
        "BOBENCH_JOB_CONFIG": str(jobs_yaml),
        "BOBENCH_S3_ENDPOINT": settings.s3_endpoint,
        "BOBENCH_S3_ACCESS_KEY": S3_ADMIN.access_key,
        "BOBENCH_S3_SECRET_KEY": S3_ADMIN.secret_key,
        "BOBENCH_PUBLISH_TO": model_store.url,
        "BOBENCH_PUBLISH_TARGET": "local",
    }  # fmt: skip (no admin key: only the publish Job needs it)
    url = f"s3://bobench/k8s-svc-{uuid.uuid4().hex[:8]}"
    args = [
        "--port",
        "0",
        "--store",
        url,
        "--cache-dir",
        str(tmp_path / "c-sched"),
        "--evaluators",
        evaluator.address,
    ]
    svc = start_bobench_service(
        "scheduler", "bobench.rpc.scheduler_service", args, tmp_path / "logs", env=env
    )
    spec = parse_spec({"name": "k8s-publish-svc", "backbones": ["toy"], "datasets": ["toy"],
                       "protocols": [{"name": "knn", "config": {"ks": [5]}}]})  # fmt: skip
    try:
        with SchedulerClient(svc.address) as client:
            client.wait_ready()
            battle_id = client.submit(spec).battle_id
            for _ in client.watch(battle_id, timeout_s=240):
                pass
            (record,) = client.results(battle_id)
    finally:
        stop_pid(svc.pid)
        stop_pid(evaluator.pid)
    assert record.finished, record.error
    assert record.environment["served_model"] == "toy"
    (job,) = jobs_sent(standin)
    assert (
        argv_of(job)[:3] == ["bob", "publish", "toy"]
        and job["metadata"]["labels"]["bobench.io/job-kind"] == "publish"
    )
    assert server.client().is_model_ready("toy", record.environment["model_version"])
