"""Run Jobs without a cluster: the JobConfig file, the Job manifest (strict Kubernetes schema and client
models), `bob job render`, and the Job's container command (`bob job run`) against a local store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from bobench.battle.executors.job_entry import main_job
from bobench.battle.executors.k8s_jobs import (
    CONFIG_ERROR_EXIT_CODE,
    JOB_PROTOCOLS,
    LABEL_BATTLE,
    LABEL_QUEUE,
    LABEL_RUN_KEY,
    PLAN_ENV,
    JobConfig,
    build_job,
    checkpoint_prefix,
    job_name,
    load_job_config,
    record_key,
)
from bobench.battle.plan import RunPlan
from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.store import LocalStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from k8s_schema import schema_problems  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "warmup_epochs": 0.5, "device": "cpu"}


def plan(run_key: str = "a1b2c3d4e5f6a7b8c9d0e1f2", protocol: str = "finetune", **kw) -> RunPlan:
    from bobench.protocols import get_protocol

    config = get_protocol("finetune").resolve_config(TINY) if protocol == "finetune" else {}
    values = dict(
        run_key=run_key,
        backbone="toy",
        dataset="toy",
        dataset_ref="toy",
        protocol=protocol,
        protocol_version="1",
        task="finetune",
        config=config,
        seed=0,
        primary_metric="top1",
        battle="my-battle",
    )
    return RunPlan(**{**values, **kw})


FULL = JobConfig(
    store="s3://bobench/artifacts",
    s3_endpoint="http://minio:9000",
    node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
    runtime_class="nvidia",
    priority_class="batch-low",
    queue="gpu-queue",
    env={"OMP_NUM_THREADS": "4"},
    service_account="bobench-runs",
)


@pytest.mark.parametrize(
    "config", [FULL, JobConfig(store="s3://b/p", gpus=0)], ids=["gpu-all-options", "cpu"]
)
def test_the_job_passes_the_strict_schema_and_the_client_models(config):
    job = build_job(plan(), config)
    assert schema_problems(job, "V1Job") == []
    assert schema_problems({**job, "spec": {**job["spec"], "backofLimit": 3}}, "V1Job")  # the check bites


def test_the_job_carries_labels_gpus_policies_and_no_literal_secret():
    job = build_job(plan(), FULL)
    meta, spec = job["metadata"], job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert meta["labels"] == {
        LABEL_RUN_KEY: plan().run_key,
        LABEL_BATTLE: "my-battle",
        "app.kubernetes.io/part-of": "bobench",
        LABEL_QUEUE: "gpu-queue",
    }
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (pod["runtimeClassName"], pod["priorityClassName"]) == ("nvidia", "batch-low")
    assert pod["nodeSelector"] == FULL.node_selector and pod["tolerations"] == list(FULL.tolerations)
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "bobench-runs"
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    rules = {r["action"]: r for r in spec["podFailurePolicy"]["rules"]}
    assert rules["FailJob"]["onExitCodes"]["values"] == [CONFIG_ERROR_EXIT_CODE]
    assert rules["Ignore"]["onPodConditions"][0]["type"] == "DisruptionTarget"
    env = {e["name"]: e for e in container["env"]}
    for name in ("BOBENCH_S3_ACCESS_KEY", "BOBENCH_S3_SECRET_KEY"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == FULL.s3_secret
    assert RunPlan.from_dict(json.loads(env[PLAN_ENV]["value"])) == plan()
    cpu = build_job(plan(), JobConfig(store="s3://b/p", gpus=0))["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["requests"] | cpu["resources"]["limits"]


def test_job_names_are_dns_labels_fixed_by_the_run_key():
    a, b = plan(), plan(run_key="f" * 24)
    assert job_name(a) == job_name(plan(seed=7, battle="other")) == f"bobench-finetune-{a.run_key}"
    assert job_name(a) != job_name(b)
    long = job_name(plan(protocol="Very_Long.Protocol Name With Spaces And More"))
    assert len(long) <= 63 and long.replace("-", "").isalnum() and long == long.lower()


def test_the_container_command_is_one_the_bob_cli_accepts():
    from bobench.cli import build_parser

    (container,) = build_job(plan(), FULL)["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "bob"
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert (args.command, args.job_command, args.termination_log) == ("job", "run", "/dev/termination-log")


@pytest.mark.parametrize("path", ["deploy/k8s/scheduler/jobs.yaml", "deploy/overlays/cpu/jobs.yaml"])
def test_the_deployed_job_configs_load(path):
    config = load_job_config(ROOT / path)
    assert config.protocols == JOB_PROTOCOLS and config.s3_secret  # unset in the file: the code's one list
    assert (config.gpus > 0) == ("overlays" not in path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("gpus: -1", "'gpus' must be an integer >= 0"),
        ("max_jobs: 0", "'max_jobs' must be an integer >= 1"),
        ("namespace: Bad_NS", "'namespace' 'Bad_NS' is not a DNS-1123 label"),
        ("protocols: []", "'protocols' must be a non-empty list"),
        ("node_selector: {zone: 1}", "'node_selector' must map strings to strings"),
        ("gpu: 1", "unknown key(s) ['gpu']"),
        ("- a list", "expected a mapping"),
        ("gpus: [unclosed", "not valid YAML"),
    ],
)
def test_bad_job_config_values_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as err:
        load_job_config(path)
    assert message in str(err.value) and str(path) in str(err.value)
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_job_config(tmp_path / "missing.yaml")


def test_bob_job_render_prints_exactly_what_the_executor_creates(tmp_path, capsys):
    from bobench.battle.plan import plan_battle
    from bobench.battle.spec import load_spec
    from bobench.cli import main

    spec = tmp_path / "battle.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "render",
                "backbones": ["toy"],
                "datasets": ["toy"],
                "protocols": ["knn", {"name": "finetune", "config": TINY}],
            }
        )
    )
    assert (
        main(["job", "render", str(spec), "--job-config", str(ROOT / "deploy/k8s/scheduler/jobs.yaml")]) == 0
    )
    rendered = list(yaml.safe_load_all(capsys.readouterr().out))
    config = load_job_config(ROOT / "deploy/k8s/scheduler/jobs.yaml")
    config = JobConfig.from_dict(
        {**config.to_dict(), "store": "s3://bobench/artifacts", "s3_endpoint": "http://minio:9000"}
    )
    (finetune,) = [p for p in plan_battle(load_spec(spec)) if p.protocol == "finetune"]
    assert rendered == [build_job(finetune, config)]  # only the finetune run becomes a Job


def test_the_job_entrypoint_writes_record_and_checkpoints_to_the_store(tmp_path):
    store_dir = tmp_path / "store"
    settings = Settings(cache_dir=str(tmp_path / "cache"), store=str(store_dir))
    p = plan()
    assert main_job(json.dumps(p.to_dict()), settings, tmp_path / "term") == 0
    store = LocalStore(store_dir)
    record = store.get_json(record_key(p.run_key))
    assert record["status"] == "finished" and record["metrics"]["epochs"] == 2
    assert record["metrics"]["checkpoint_dir"].endswith(checkpoint_prefix(p.run_key))
    assert sorted(store.list(checkpoint_prefix(p.run_key))) == [
        f"{checkpoint_prefix(p.run_key)}/best.pt",
        f"{checkpoint_prefix(p.run_key)}/last.pt",
    ]
    assert not (tmp_path / "term").exists()


@pytest.mark.parametrize(
    "plan_text, message",
    [
        (None, "no run plan given"),
        ("{not json", "not a serialized RunPlan"),
        (json.dumps(plan(backbone="no-such-backbone").to_dict()), "unknown backbone"),
    ],
)
def test_a_config_error_exits_2_with_a_termination_message(tmp_path, plan_text, message):
    settings = Settings(cache_dir=str(tmp_path / "cache"), store=str(tmp_path / "store"))
    assert main_job(plan_text, settings, tmp_path / "term") == CONFIG_ERROR_EXIT_CODE
    assert message in (tmp_path / "term").read_text()


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    assert all(e["operator"] == "Exists" for e in selector.get("matchExpressions", []))
    return all(e["key"] in labels for e in selector.get("matchExpressions", []))


def test_job_pods_carry_the_labels_the_run_job_network_policies_select():
    policies = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/networkpolicies.yaml").read_text()) if d]
    run_job_selector = {
        "matchLabels": {"app.kubernetes.io/part-of": "bobench"},
        "matchExpressions": [{"key": LABEL_RUN_KEY, "operator": "Exists"}],
    }
    own = [p for p in policies if p["spec"]["podSelector"] == run_job_selector]
    assert own, "no NetworkPolicy selects run Job pods"
    labels = build_job(plan(), FULL)["spec"]["template"]["metadata"]["labels"]
    assert _selects(run_job_selector, labels)
    assert not _selects(run_job_selector, {"app.kubernetes.io/part-of": "bobench"})


def test_the_scheduler_service_refuses_jobs_without_an_s3_store(tmp_path):
    from bobench.rpc.scheduler_service import build_job_executor, build_parser

    jobs_yaml = tmp_path / "jobs.yaml"
    jobs_yaml.write_text("gpus: 0\n")
    args = build_parser().parse_args(["--job-config", str(jobs_yaml)])
    assert args.job_config == str(jobs_yaml)
    assert build_job_executor(None, Settings(), LocalStore(tmp_path / "s")) == (None, ())
    with pytest.raises(InvalidArgument, match=r"Jobs need an s3:// store"):
        build_job_executor(args.job_config, Settings(store=str(tmp_path / "s")), LocalStore(tmp_path / "s"))


# -- detection runs as Jobs ----------------------------------------------------------------------------
# A short CPU schedule on small inputs: the run's plumbing (Job, checkpoint sync), not its accuracy.
DETECTION = {"epochs": 2, "batch_size": 8, "min_size": 64, "max_size": 64, "fpn_channels": 16,
             "warmup_steps": 2, "resamples": 0}  # fmt: skip


def test_fine_tuning_and_detection_go_to_jobs_by_default_from_one_list(tmp_path):
    from bobench.battle.executors.k8s_jobs import CHECKPOINTED, JOB_PROTOCOLS
    from bobench.battle.executors.local import LocalExecutor
    from bobench.battle.scheduler import Scheduler
    from bobench.protocols import get_protocol

    assert JOB_PROTOCOLS == ("detection", "finetune", "instance_segmentation", "ood_detection")
    assert JobConfig().protocols == JOB_PROTOCOLS == tuple(CHECKPOINTED)
    for protocol, target in CHECKPOINTED.items():  # every Job protocol resumes: its directory is known
        import importlib

        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
        assert get_protocol(protocol).name == protocol
    store, local = LocalStore(tmp_path / "store"), LocalExecutor(Settings(cache_dir=str(tmp_path / "c")))
    stand_in_jobs = LocalExecutor(Settings(cache_dir=str(tmp_path / "j")))  # any executor: never started
    with_jobs = Scheduler(store, [local], job_executor=stand_in_jobs)
    assert with_jobs.job_protocols == frozenset(JOB_PROTOCOLS)
    assert Scheduler(store, [local]).job_protocols == frozenset()  # no Kubernetes: all run in process


def test_a_gpu_job_tells_the_run_to_train_on_cuda_and_a_cpu_job_does_not():
    det = plan(protocol="detection", task="detection", primary_metric="AP")
    gpu = build_job(det, FULL)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gpu["env"]}
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and env["BOBENCH_DEVICE"] == "cuda"
    assert job_name(det) == f"bobench-detection-{det.run_key}"
    cpu = build_job(det, JobConfig(store="s3://b/p", gpus=0))["spec"]["template"]["spec"]["containers"][0]
    assert "BOBENCH_DEVICE" not in {e["name"] for e in cpu["env"]}
    own = JobConfig(store="s3://b/p", env={"BOBENCH_DEVICE": "cuda:1"})  # the config's own choice wins
    names = [e["name"] for e in build_job(det, own)["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert names.count("BOBENCH_DEVICE") == 1
    assert schema_problems(build_job(det, FULL), "V1Job") == []


@pytest.fixture(scope="module")
def deepforest_wheel_file() -> Path:
    from bobench.data.detection_bundled import deepforest_wheel
    from bobench.errors import Unavailable

    try:
        return deepforest_wheel(Path(Settings().cache_dir))
    except Unavailable as exc:
        pytest.skip(f"deepforest wheel (tree crowns) not available offline: {exc}")


def detection_plan(protocol: str, dataset: str | dict = "tree_crowns") -> RunPlan:
    from bobench.battle.plan import plan_battle
    from bobench.battle.spec import parse_spec

    spec = {"name": "det-job", "backbones": ["resnet18-random"], "datasets": [dataset],
            "protocols": [{"name": protocol, "config": DETECTION}], "seeds": [0]}  # fmt: skip
    (p,) = plan_battle(parse_spec(spec))
    assert p.error is None, p.error
    return p


@pytest.mark.slow  # a real detector trained for 2 short epochs: about 10 s of CPU each
@pytest.mark.parametrize("protocol", ["detection", "ood_detection"])
def test_the_job_entrypoint_runs_detection_with_its_checkpoints_in_the_store(
    tmp_path, deepforest_wheel_file, protocol
):
    """The run as a Job's pod runs it (a fresh cache, the store as the only state): the checkpoints
    the detector writes every epoch land under jobs/<run_key>/checkpoints, so the directory the Job
    syncs (`bobench.protocols.job_checkpoints`) is the one the protocol trains in."""
    import shutil

    p = detection_plan(protocol)
    cache = tmp_path / "cache"
    (cache / "pypi").mkdir(parents=True)
    shutil.copy(deepforest_wheel_file, cache / "pypi" / deepforest_wheel_file.name)  # no network here
    settings = Settings(cache_dir=str(cache), store=str(tmp_path / "store"), threads=1)
    assert main_job(json.dumps(p.to_dict()), settings, tmp_path / "term") == 0
    store = LocalStore(tmp_path / "store")
    record = store.get_json(record_key(p.run_key))
    assert record["status"] == "finished", record["error"]
    metrics = record["metrics"]
    assert (
        metrics["checkpoint_dir"].endswith(checkpoint_prefix(p.run_key)) and metrics["regime"] == "finetune"
    )
    assert metrics["AP"] is not None and 0.0 <= metrics["AP"] <= 1.0
    if protocol == "ood_detection":
        assert metrics["gap"] == pytest.approx(metrics["AP"] - metrics["shift_AP"])
    stored = {k.rsplit("/", 1)[-1] for k in store.list(checkpoint_prefix(p.run_key))}
    assert {"last.pt", "best.pt"} <= stored
    local = list((cache / "detection").iterdir())
    assert len(local) == 1  # the one directory the run trained in, and the one that was synced


@pytest.mark.slow  # a real Mask R-CNN trained for 2 epochs on one image
def test_the_job_entrypoint_runs_instance_segmentation_with_its_checkpoints_in_the_store(tmp_path):
    """Mask R-CNN on labelme's COCO sample (Debian labelme-examples; one image per split) as a Job's
    pod runs it: its checkpoint directory is the one `bob job run` syncs to the store."""
    from bobench.data.detection_bundled import LABELME_DIR

    if not Path(LABELME_DIR, "annotations.json").exists():
        pytest.skip("Debian labelme-examples is not installed")
    p = detection_plan("instance_segmentation", "labelme_coco")
    settings = Settings(cache_dir=str(tmp_path / "cache"), store=str(tmp_path / "store"), threads=1)
    assert main_job(json.dumps(p.to_dict()), settings, tmp_path / "term") == 0
    store = LocalStore(tmp_path / "store")
    record = store.get_json(record_key(p.run_key))
    assert record["status"] == "finished", record["error"]
    assert "mask_AP" in record["metrics"] and record["metrics"]["checkpoint_dir"].endswith(
        checkpoint_prefix(p.run_key)
    )
    stored = {k.rsplit("/", 1)[-1] for k in store.list(checkpoint_prefix(p.run_key))}
    assert {"last.pt", "best.pt"} <= stored
