"""The Kubernetes executor end to end: the real Scheduler, the real `kubernetes` client, real SeaweedFS
S3, and a *stand-in Kubernetes API server* (`tests/k8s_standin.py`; no real cluster exists here) that
runs each Job's container command (`bob job run`) as a local process with the Job's env.

Checked: a fine-tune battle completes with the in-process metrics; a SIGKILLed Job process is retried
and resumes from the stored checkpoint, ending with the uninterrupted run's weights; cancel deletes
the Job and the run ends cancelled; a restarted scheduler adopts a running Job (no second Job); a
410 Gone watch is survived; every object the executor sent passed schema validation. A detection
battle (real tree-crown tiles, exported to a COCO folder so the Job's fresh cache needs no download)
becomes a GPU Job (`nvidia.com/gpu` limit, `BOBENCH_DEVICE=cuda`; with no GPU here the run falls back to
CPU) whose record and per-epoch checkpoints land in the store, with the in-process run's metrics.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from bobench.battle.executors.k8s_jobs import JobConfig, checkpoint_prefix, job_name
from bobench.battle.executors.kubernetes import KubernetesExecutor
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.plan import plan_battle
from bobench.battle.scheduler import Scheduler
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.finetune.checkpoint import LAST, load_checkpoint
from bobench.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from k8s_standin import StandInKubeAPI  # noqa: E402
from s3_fixtures import S3_ADMIN  # noqa: E402

pytestmark = pytest.mark.integration

SECRET = "bobench-credentials"  # the JobConfig default, as deployed
RECIPE = {"batch_size": 16, "lr": 1e-2, "warmup_epochs": 0.5, "device": "cpu"}
VOLATILE = ("checkpoint_dir", "train_time_s")  # where the checkpoints live, how long training took


def finetune_spec(name: str, epochs: int):
    return parse_spec(
        {
            "name": name,
            "backbones": ["toy"],
            "datasets": ["toy"],
            "protocols": [{"name": "finetune", "config": {**RECIPE, "epochs": epochs}}],
            "seeds": [0],
        }
    )


@pytest.fixture
def standin(tmp_path):
    """The stand-in Kubernetes API server, knowing the S3 Secret's values."""
    secrets = {
        (SECRET, "BOBENCH_S3_ACCESS_KEY"): S3_ADMIN.access_key,
        (SECRET, "BOBENCH_S3_SECRET_KEY"): S3_ADMIN.secret_key,
    }
    api = StandInKubeAPI(tmp_path / "pods", secrets).start()
    yield api
    api.stop()
    assert api.invalid == []  # every object the executor sent passed the schema and model checks


@pytest.fixture
def cluster(s3_settings, standin):
    """(store, job config, make_scheduler) over one fresh store prefix in SeaweedFS."""
    from kubernetes import client

    url = f"s3://bobench/k8s-{uuid.uuid4().hex[:8]}"
    store = open_store(url, s3_settings, create_bucket=True)
    config = JobConfig(
        image="bobench/evaluator",
        gpus=0,
        cpu_request="1",
        memory_request="1Gi",
        cpu_limit="2",
        memory_limit="2Gi",
        store=url,
        s3_endpoint=s3_settings.s3_endpoint,
        backoff_limit=2,
        env={"OMP_NUM_THREADS": "1"},
        watch_timeout_s=2,
    )
    made = []

    def make_scheduler() -> tuple[Scheduler, KubernetesExecutor]:
        executor = KubernetesExecutor(config, store, client.ApiClient(standin.configuration()))
        sched = Scheduler(
            store, [LocalExecutor(s3_settings)], job_executor=executor, max_retries=1, backoff_s=0.1
        ).start()
        made.append(sched)
        return sched, executor

    yield store, config, make_scheduler
    for sched in made:
        sched.close(timeout_s=5)


def in_process(spec, tmp_path):
    """The run's plan and its record from the in-process executor (the reference)."""
    torch.set_num_threads(1)
    (plan,) = plan_battle(spec)
    local = LocalExecutor(Settings(cache_dir=str(tmp_path / "reference")))
    return plan, local.execute(plan)


def poll(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def same_metrics(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k not in VOLATILE} == {
        k: v for k, v in b.items() if k not in VOLATILE
    }


def test_a_finetune_battle_runs_as_a_job_and_matches_the_in_process_result(cluster, standin, tmp_path):
    store, config, make_scheduler = cluster
    sched, executor = make_scheduler()
    spec = finetune_spec("k8s-e2e", epochs=2)
    standin.expire_watches(1)  # the first watch answers 410 Gone: the executor re-lists and goes on
    bid = sched.submit(spec)
    status = sched.wait(bid, timeout_s=180)
    assert status.state == "finished", sched.results(bid)
    (record,) = sched.results(bid)
    plan, reference = in_process(spec, tmp_path)
    assert record.run_key == plan.run_key and record.finished
    same_metrics(record.metrics, reference.metrics)
    assert record.metrics["checkpoint_dir"] == f"{config.store}/{checkpoint_prefix(plan.run_key)}"
    assert store.exists(f"{checkpoint_prefix(plan.run_key)}/{LAST}")
    assert standin.gone_watches == 1 and standin.creates == {job_name(plan): 1}
    job = standin.received[0]
    assert job["kind"] == "Job" and job["metadata"]["labels"]["bobench.io/run-key"] == plan.run_key
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "value" not in env["BOBENCH_S3_SECRET_KEY"] and S3_ADMIN.secret_key not in str(job)
    again = executor.execute(plan)  # the succeeded Job is found by label: its stored record, no new Job
    assert again.metrics == record.metrics and standin.creates == {job_name(plan): 1}


def stored_checkpoint(store, run_key: str):
    return lambda: store.exists(f"{checkpoint_prefix(run_key)}/{LAST}")


def test_a_killed_job_process_is_retried_and_resumes_from_the_stored_checkpoint(cluster, standin, tmp_path):
    store, _, make_scheduler = cluster
    sched, _ = make_scheduler()
    spec = finetune_spec("k8s-kill", epochs=40)
    plan, reference = in_process(spec, tmp_path)
    bid = sched.submit(spec)
    poll(stored_checkpoint(store, plan.run_key), 120, "the first stored checkpoint")
    pid = poll(lambda: standin.running_pid(job_name(plan)), 10, "the Job's process")
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
    assert sched.wait(bid, timeout_s=180).state == "finished", sched.results(bid)
    (record,) = sched.results(bid)
    first, second = standin.pods_of(job_name(plan))
    assert first["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    assert 1 <= record.metrics["resumed_from_epoch"] < 40 and reference.metrics["resumed_from_epoch"] == 0
    same_metrics(
        {k: v for k, v in record.metrics.items() if k != "resumed_from_epoch"},
        {k: v for k, v in reference.metrics.items() if k != "resumed_from_epoch"},
    )
    resumed = load_checkpoint(store.get_file(f"{checkpoint_prefix(plan.run_key)}/{LAST}", tmp_path / "r.pt"))
    uninterrupted = load_checkpoint(Path(reference.metrics["checkpoint_dir"]) / LAST)
    assert resumed["run"]["epoch"] == uninterrupted["run"]["epoch"] == 40
    for key, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][key], tensor), key
    assert standin.creates == {job_name(plan): 1}  # the retry was the Job's own pod, not a new Job


def test_cancel_deletes_the_job_and_the_run_ends_cancelled(cluster, standin):
    store, _, make_scheduler = cluster
    sched, _ = make_scheduler()
    spec = finetune_spec("k8s-cancel", epochs=500)
    (plan,) = plan_battle(spec)
    bid = sched.submit(spec)
    pid = poll(lambda: standin.running_pid(job_name(plan)), 60, "the Job's process")
    sched.cancel(bid, reason="user asked")
    poll(lambda: sched.get(bid).counts["running"] == 0, 60, "the run to end")
    status = sched.get(bid)
    assert status.state == "cancelled" and status.counts["cancelled"] == 1 and status.counts["finished"] == 0
    assert standin.list_jobs("bobench", None, None)["items"] == []
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert not store.exists(f"results/{plan.run_key}.json")
    (record,) = sched.results(bid)
    assert record.status == "cancelled" and "deleted" in record.error


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_restarted_scheduler_adopts_the_running_job_instead_of_creating_another(cluster, standin):
    store, _, make_scheduler = cluster
    first, _ = make_scheduler()
    spec = finetune_spec("k8s-adopt", epochs=400)  # ~20 s warm: still training when the first scheduler stops
    (plan,) = plan_battle(spec)
    bid = first.submit(spec, battle_id="adopt-me")
    poll(stored_checkpoint(store, plan.run_key), 120, "the Job to be training")
    first.close(timeout_s=60)  # the scheduler pod stops (SIGTERM): it stops following the Job
    assert standin.running_pid(job_name(plan)) is not None  # the Job kept running meanwhile

    second, _ = make_scheduler()  # resumes the stored battle: its running run is queued again
    assert second.wait(bid, timeout_s=180).state == "finished", second.results(bid)
    assert standin.creates == {job_name(plan): 1} and len(standin.pods_of(job_name(plan))) == 1
    (record,) = second.results(bid)
    assert record.finished and record.metrics["resumed_from_epoch"] == 0  # one uninterrupted run
    assert store.list("results/") == [f"results/{plan.run_key}.json"]


def test_a_config_error_fails_the_job_at_once_with_its_termination_message(cluster, standin):
    import dataclasses

    store, _, make_scheduler = cluster
    _, executor = make_scheduler()
    (plan,) = plan_battle(finetune_spec("k8s-bad", epochs=1))
    plan = dataclasses.replace(plan, backbone="no-such-backbone", run_key="0" * 24)
    record = executor.execute(plan)
    assert record.status == "failed" and record.error.startswith("InvalidArgument: unknown backbone")
    assert "exit code 2" in record.error and "PodFailurePolicy" in record.error
    assert "log tail" in record.error
    assert len(standin.pods_of(job_name(plan))) == 1  # FailJob: no retry for a config error


def test_a_disrupted_pod_is_retried_without_counting_against_the_backoff_limit(cluster, standin):
    import dataclasses

    from kubernetes import client

    store, config, _ = cluster
    executor = KubernetesExecutor(
        dataclasses.replace(config, backoff_limit=0), store, client.ApiClient(standin.configuration())
    )
    (plan,) = plan_battle(finetune_spec("k8s-evict", epochs=40))
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("record", executor.execute(plan)))
    worker.start()
    poll(stored_checkpoint(store, plan.run_key), 120, "the Job to be training")
    standin.disrupt(job_name(plan))  # a node drain: DisruptionTarget, then the process is killed
    worker.join(180)
    executor.close()
    record = done["record"]
    assert record.finished, record.error
    assert len(standin.pods_of(job_name(plan))) == 2 and record.metrics["resumed_from_epoch"] >= 1


def test_the_scheduler_service_with_a_job_config_runs_finetune_as_jobs(s3_settings, standin, tmp_path):
    """The real scheduler process: --job-config from BOBENCH_JOB_CONFIG, API access from a kubeconfig
    naming the stand-in Kubernetes API server, the battle submitted over gRPC."""
    from bobench.client import SchedulerClient
    from bobench.stack.procs import start_bobench_service, stop_pid

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "standin", "cluster": {"server": standin.url}}],
                "users": [{"name": "scheduler", "user": {"token": "stand-in-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "scheduler"}}],
                "current-context": "c",
            }
        )
    )
    jobs_yaml = tmp_path / "jobs.yaml"
    jobs_yaml.write_text(yaml.safe_dump({"image": "bobench/evaluator", "gpus": 0, "watch_timeout_s": 2}))
    url = f"s3://bobench/k8s-svc-{uuid.uuid4().hex[:8]}"
    env = {
        "KUBECONFIG": str(kubeconfig),
        "BOBENCH_JOB_CONFIG": str(jobs_yaml),
        "BOBENCH_S3_ENDPOINT": s3_settings.s3_endpoint,
        "BOBENCH_S3_ACCESS_KEY": S3_ADMIN.access_key,
        "BOBENCH_S3_SECRET_KEY": S3_ADMIN.secret_key,
        "OMP_NUM_THREADS": "1",
    }
    args = ["--port", "0", "--store", url, "--cache-dir", str(tmp_path / "cache")]
    svc = start_bobench_service(
        "scheduler", "bobench.rpc.scheduler_service", args, tmp_path / "logs", env=env
    )
    try:
        spec = finetune_spec("k8s-service", epochs=2)
        (plan,) = plan_battle(spec)
        with SchedulerClient(svc.address) as client:
            client.wait_ready()
            battle_id = client.submit(spec).battle_id
            for _ in client.watch(battle_id, timeout_s=180):
                pass
            assert client.get(battle_id).counts.finished == 1, Path(svc.log).read_text()[-3000:]
            (result,) = client.results(battle_id)
        assert result.run_key == plan.run_key and standin.creates == {job_name(plan): 1}
        (job,) = [o for o in standin.received if o.get("kind") == "Job"]
        env_vars = {
            e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env_vars["BOBENCH_STORE"] == url and env_vars["BOBENCH_S3_ENDPOINT"] == s3_settings.s3_endpoint
    finally:
        stop_pid(svc.pid)


def test_a_user_defined_backbone_fine_tunes_as_a_job(cluster, standin):
    """A battle's own backbone (a mapping in the spec) is unknown to the Job's process, which starts
    from the image's registry: the executor hands its definition over (BOBENCH_JOB_BACKBONE)."""
    from bobench.backbones import BACKBONES
    from bobench.battle.plan import CUSTOM_BACKBONES

    custom = {"name": "job-custom-resnet", "source": "timm", "model_id": "resnet18", "weights": "random",
              "input_size": 32, "crop_pct": 1}  # fmt: skip
    spec = parse_spec(
        {
            "name": "k8s-custom",
            "backbones": [custom],
            "datasets": ["toy"],
            "protocols": [{"name": "finetune", "config": {**RECIPE, "epochs": 1}}],
            "seeds": [0],
        }
    )
    store, config, make_scheduler = cluster
    sched, _ = make_scheduler()
    try:
        bid = sched.submit(spec)
        status = sched.wait(bid, timeout_s=180)
        (record,) = sched.results(bid)
        assert status.state == "finished", record.error
        assert record.backbone == "job-custom-resnet" and record.metrics["top1"] >= 0
    finally:
        BACKBONES._items.pop("job-custom-resnet", None)
        CUSTOM_BACKBONES.pop("job-custom-resnet", None)


DETECTION = {"epochs": 2, "batch_size": 8, "min_size": 64, "max_size": 64, "fpn_channels": 16,
             "warmup_steps": 2, "resamples": 20}  # fmt: skip


def export_tree_crowns_coco(root: Path) -> dict:
    """The tree-crown tiles as a COCO folder (PNG files + annotations.json): real data a Job's pod
    reads from disk. Returns the dataset ref."""
    import json

    import numpy as np
    from PIL import Image

    from bobench.data import load_dataset
    from bobench.errors import Unavailable

    try:
        ds = load_dataset("tree_crowns")
    except Unavailable as exc:
        pytest.skip(f"deepforest wheel (tree crowns) not available offline: {exc}")
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(len(ds.targets)):
        pixels = np.asarray(ds.load(i), dtype=np.uint8)
        Image.fromarray(pixels).save(images_dir / f"tile{i:03d}.png")
        images.append({"id": i + 1, "file_name": f"tile{i:03d}.png", "height": pixels.shape[0],
                       "width": pixels.shape[1]})  # fmt: skip
        for x0, y0, x1, y1 in ds.targets[i].boxes.tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "iscrowd": 0})  # fmt: skip
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "tree"}]}
    (root / "annotations.json").write_text(json.dumps(doc))
    return {"type": "coco", "name": "tree_crowns_coco", "images": str(images_dir),
            "annotations": str(root / "annotations.json")}  # fmt: skip


def test_a_detection_battle_runs_as_a_gpu_job_and_its_result_and_checkpoints_land_in_the_store(
    cluster, standin, tmp_path
):
    import dataclasses

    from kubernetes import client

    store, config, _ = cluster
    ref = export_tree_crowns_coco(tmp_path / "coco")
    spec = parse_spec(
        {
            "name": "k8s-detection",
            "backbones": ["resnet18-random"],
            "datasets": [ref],
            "protocols": [{"name": "detection", "config": DETECTION}],
            "seeds": [0],
        }
    )
    gpu_config = dataclasses.replace(config, gpus=1)
    executor = KubernetesExecutor(gpu_config, store, client.ApiClient(standin.configuration()))
    sched = Scheduler(
        store, [LocalExecutor(Settings(cache_dir=str(tmp_path / "local")))], job_executor=executor,
        max_retries=1, backoff_s=0.1,
    ).start()  # fmt: skip
    try:
        bid = sched.submit(spec)
        status = sched.wait(bid, timeout_s=300)
        (record,) = sched.results(bid)
        assert status.state == "finished", record.error
    finally:
        sched.close(timeout_s=5)
    plan, reference = in_process(spec, tmp_path)
    assert reference.finished, reference.error
    assert standin.creates == {job_name(plan): 1}  # a Job, not the in-process executor
    (job,) = [o for o in standin.received if o.get("kind") == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {e["name"]: e.get("value") for e in container["env"]}["BOBENCH_DEVICE"] == "cuda"
    assert record.metrics["checkpoint_dir"] == f"{config.store}/{checkpoint_prefix(plan.run_key)}"
    assert store.exists(f"{checkpoint_prefix(plan.run_key)}/{LAST}")
    assert store.exists(f"results/{plan.run_key}.json")
    numbers = {k: v for k, v in reference.metrics.items() if isinstance(v, float) and k not in VOLATILE}
    assert numbers and "AP" in numbers
    assert {k: record.metrics[k] for k in numbers} == pytest.approx(numbers, abs=1e-6)
    assert record.metrics["best_epoch"] == reference.metrics["best_epoch"]
