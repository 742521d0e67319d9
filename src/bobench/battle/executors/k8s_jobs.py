"""What the Kubernetes executor creates: `JobConfig` (the cluster's settings for run Jobs) and
`build_job(plan, config)`, the batch/v1 Job manifest of one run. Pure functions, no API calls.

The Job runs `bob job run` (`bobench.battle.executors.job_entry`) with the serialized `RunPlan` in env
`BOBENCH_JOB_PLAN`; the container reads and writes the artifact store named by `store` (S3 credentials
come from the Secret `s3_secret` through `secretKeyRef`, never literal values). Its name is derived
from the run key alone, so every attempt and every scheduler replica finds the same Job.

`JOB_PROTOCOLS` (the protocols that train on a GPU: fine-tuning and the detection protocols) is the one
list of what goes to Jobs by default: `JobConfig.protocols` and the scheduler's `job_protocols` both
default to it, and `CHECKPOINTED` says, for each, where its checkpoints live (`bob job run` syncs them
with the store, so a retried pod resumes). A GPU Job's container gets `BOBENCH_DEVICE=cuda` (unless
`env` sets it), so the detection protocols train on the GPU, under bf16 autocast.

`load_job_config(path)` reads a YAML mapping of `JobConfig` fields; bad values raise InvalidArgument
naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bobench.battle.plan import RunPlan
from bobench.errors import InvalidArgument
from bobench.exit_codes import USAGE_ERROR
from bobench.protocols import PROTOCOLS

LABEL_RUN_KEY = "bobench.io/run-key"
LABEL_BATTLE = "bobench.io/battle"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
CONTAINER = "run"
PLAN_ENV = "BOBENCH_JOB_PLAN"
# A user-defined backbone's BackboneSpec fields (JSON): a Job's process registers it before it runs,
# since it lives only in the battle spec, not in the image's registry.
BACKBONE_ENV = "BOBENCH_JOB_BACKBONE"
CONFIG_ERROR_EXIT_CODE = USAGE_ERROR  # a bobench config error: retrying cannot help, the Job fails at once
CACHE_MOUNT = "/cache"
PUBLISH_GPU_CHOICES = ("tensorrt", "always", "never")
# protocol -> "module:function(cache_dir, spec, dataset, config, seed) -> its checkpoint directory",
# from the protocols' own metadata (`Protocol.job_checkpoint_dir`; torch-free)
CHECKPOINTED: dict[str, str] = {
    name: protocol.job_checkpoint_dir for name, protocol in PROTOCOLS.items() if protocol.job_checkpoint_dir
}
JOB_PROTOCOLS: tuple[str, ...] = tuple(CHECKPOINTED)  # what runs as a Job unless the config says otherwise
DEVICE_ENV = "BOBENCH_DEVICE"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class JobConfig:
    """How run Jobs look in one cluster. `gpus` 0 makes CPU Jobs (no `nvidia.com/gpu` request).

    `store` / `s3_endpoint` empty mean "the scheduler's own" (filled in by the scheduler service);
    `protocols` are the protocols the scheduler sends to Jobs; `max_jobs` caps Jobs in flight.
    """

    namespace: str = "bobench"
    image: str = "bobench/finetune-gpu"
    image_pull_policy: str = "IfNotPresent"
    gpus: int = 1
    cpu_request: str = "4"
    memory_request: str = "16Gi"
    cpu_limit: str = "8"
    memory_limit: str = "32Gi"
    cache_size: str = "20Gi"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    runtime_class: str = ""
    priority_class: str = ""
    queue: str = ""  # Kueue LocalQueue; "" = no queue label
    backoff_limit: int = 3
    active_deadline_s: int = 86400
    ttl_s: int = 604800
    protocols: tuple[str, ...] = JOB_PROTOCOLS
    max_jobs: int = 4
    store: str = ""
    s3_endpoint: str = ""
    s3_secret: str = "bobench-credentials"  # the deployment's Secret (deploy/k8s/secrets.example.yaml)
    s3_access_key_key: str = "BOBENCH_S3_ACCESS_KEY"
    s3_secret_key_key: str = "BOBENCH_S3_SECRET_KEY"
    triton_admin_key_key: str = "TRITON_ADMIN_KEY"  # key of `s3_secret` that publish Jobs load with
    run_as_user: int = 10001
    service_account: str = ""  # "" = the namespace default; its token is never mounted either way
    env: dict[str, str] = field(default_factory=dict)  # extra literal (non-secret) env, e.g. threads
    termination_log: str = "/dev/termination-log"
    log_tail_lines: int = 40
    watch_timeout_s: int = 30  # one watch request; the executor re-watches (and notices close) after
    publish_jobs: bool = False  # the scheduler publishes backbones as Jobs (bobench.battle.k8s_publish)
    publish_image: str = ""  # "" = `image`
    publish_gpu: str = (
        "tensorrt"  # nvidia.com/gpu for publish Jobs: tensorrt (trt-* variants) | always | never
    )

    def __post_init__(self) -> None:
        for name in ("gpus", "backoff_limit", "run_as_user"):
            _check_int(self, name, 0)
        for name in ("active_deadline_s", "ttl_s", "max_jobs", "log_tail_lines", "watch_timeout_s"):
            _check_int(self, name, 1)
        for name in ("namespace", "image", "s3_secret", "s3_access_key_key", "s3_secret_key_key",
                     "triton_admin_key_key"):  # fmt: skip
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidArgument(f"job config: {name!r} must be a non-empty string")
        if not _DNS_LABEL.match(self.namespace):
            raise InvalidArgument(f"job config: 'namespace' {self.namespace!r} is not a DNS-1123 label")
        if self.queue and not _LABEL_VALUE.match(self.queue):
            raise InvalidArgument(f"job config: 'queue' {self.queue!r} is not a valid label value")
        if not self.protocols or not all(isinstance(p, str) and p for p in self.protocols):
            raise InvalidArgument("job config: 'protocols' must be a non-empty list of protocol names")
        _check_str_map(self.node_selector, "node_selector")
        _check_str_map(self.env, "env")
        if not all(isinstance(t, dict) for t in self.tolerations):
            raise InvalidArgument("job config: 'tolerations' must be a list of mappings")
        if not isinstance(self.publish_jobs, bool):
            raise InvalidArgument(
                f"job config: 'publish_jobs' must be true or false, got {self.publish_jobs!r}"
            )
        if not isinstance(self.publish_image, str):
            raise InvalidArgument(f"job config: 'publish_image' must be a string, got {self.publish_image!r}")
        if self.publish_gpu not in PUBLISH_GPU_CHOICES:
            raise InvalidArgument(
                f"job config: 'publish_gpu' must be one of {list(PUBLISH_GPU_CHOICES)}, got {self.publish_gpu!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str = "job config") -> JobConfig:
        """Build from a mapping; unknown keys and bad values raise InvalidArgument naming `where`."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgument(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        for name in ("tolerations", "protocols"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        for name in ("cpu_request", "memory_request", "cpu_limit", "memory_limit", "cache_size"):
            if isinstance(values.get(name), int | float) and not isinstance(values[name], bool):
                values[name] = str(values[name])
        try:
            return cls(**values)
        except InvalidArgument as exc:
            raise InvalidArgument(str(exc).replace("job config", where, 1)) from None
        except TypeError as exc:
            raise InvalidArgument(f"{where}: {exc}") from None


def _check_int(config: JobConfig, name: str, low: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgument(f"job config: {name!r} must be an integer >= {low}, got {value!r}")


def _check_str_map(value: Any, name: str) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgument(f"job config: {name!r} must map strings to strings, got {value!r}")


def load_job_config(path: str | Path) -> JobConfig:
    """The JobConfig in a YAML file; InvalidArgument naming the file (and key) when it is bad."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InvalidArgument(f"job config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"job config file {p}: not valid YAML ({exc})") from None
    if data is not None and not isinstance(data, dict):
        raise InvalidArgument(f"job config file {p}: expected a mapping at the top level")
    return JobConfig.from_dict(data, where=f"job config file {p}")


def job_name(plan: RunPlan) -> str:
    """`bobench-<protocol>-<run key>`: a DNS-1123 label (<= 63 chars) fixed by the run key."""
    proto = re.sub(r"[^a-z0-9]+", "-", plan.protocol.lower()).strip("-")[:20].strip("-") or "run"
    return f"bobench-{proto}-{plan.run_key.lower()}"[:63].rstrip("-")


def run_labels(plan: RunPlan) -> dict[str, str]:
    labels = {LABEL_RUN_KEY: plan.run_key, LABEL_PART_OF: "bobench"}
    if plan.battle and _LABEL_VALUE.match(plan.battle) and len(plan.battle) <= 63:
        labels[LABEL_BATTLE] = plan.battle
    return labels


def secret_env(config: JobConfig, name: str, key: str) -> dict[str, Any]:
    """Env `name` from key `key` of the Secret `config.s3_secret` (never a literal value)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": config.s3_secret, "key": key}}}


def store_env(config: JobConfig) -> list[dict[str, Any]]:
    """The env every Job's container gets: S3 endpoint and credentials, cache directory, HOME."""
    return [
        {"name": "BOBENCH_S3_ENDPOINT", "value": config.s3_endpoint},
        secret_env(config, "BOBENCH_S3_ACCESS_KEY", config.s3_access_key_key),
        secret_env(config, "BOBENCH_S3_SECRET_KEY", config.s3_secret_key_key),
        {"name": "BOBENCH_CACHE_DIR", "value": CACHE_MOUNT},
        {"name": "HOME", "value": "/tmp"},
    ]


def custom_backbone_env(backbone: str) -> list[dict[str, Any]]:
    """`BOBENCH_JOB_BACKBONE` for a user-defined backbone registered in this process, else nothing."""
    from bobench.battle.plan import CUSTOM_BACKBONES

    entry = CUSTOM_BACKBONES.get(backbone)
    return [{"name": BACKBONE_ENV, "value": json.dumps(entry, sort_keys=True)}] if entry else []


def register_job_backbone(value: str | None) -> None:
    """Register the user-defined backbone a Job was given in `BOBENCH_JOB_BACKBONE` (None: none).
    Raises InvalidArgument naming the variable when it is not a backbone definition."""
    from bobench.battle.plan import register_custom_backbones

    if not value:
        return
    try:
        entry = json.loads(value)
    except ValueError as exc:
        raise InvalidArgument(f"{BACKBONE_ENV}: not JSON ({exc})") from None
    if not isinstance(entry, dict) or not entry.get("name"):
        raise InvalidArgument(f"{BACKBONE_ENV}: expected a backbone definition with a 'name'")
    register_custom_backbones((entry,))


def _env(plan: RunPlan, config: JobConfig) -> list[dict[str, Any]]:
    env = [
        {"name": PLAN_ENV, "value": json.dumps(plan.to_dict(), sort_keys=True)},
        {"name": "BOBENCH_STORE", "value": config.store},
        *custom_backbone_env(plan.backbone),
        *store_env(config),
    ]
    if config.gpus and DEVICE_ENV not in config.env:  # the detection protocols train where this says
        env.append({"name": DEVICE_ENV, "value": "cuda"})
    return env + [{"name": k, "value": v} for k, v in sorted(config.env.items())]


def _container(plan: RunPlan, config: JobConfig) -> dict[str, Any]:
    return container(
        config,
        image=config.image,
        command=["bob", "job", "run"],
        args=["--termination-log", config.termination_log],
        env=_env(plan, config),
        gpus=config.gpus,
    )


def container(
    config: JobConfig,
    *,
    image: str,
    command: list[str],
    args: list[str],
    env: list[dict[str, Any]],
    gpus: int,
) -> dict[str, Any]:
    """The Job container: `command` with `args`, `env`, the config's resources (+ `gpus` nvidia.com/gpu),
    a read-only root with the cache, /tmp and /dev/shm volumes mounted, and a termination message."""
    requests = {"cpu": config.cpu_request, "memory": config.memory_request}
    limits = {"cpu": config.cpu_limit, "memory": config.memory_limit}
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus)
    return {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": command,
        "args": args,
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "terminationMessagePath": config.termination_log,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "cache", "mountPath": CACHE_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }


def pod_spec(config: JobConfig, main: dict[str, Any]) -> dict[str, Any]:
    """The pod spec around container `main`: never restarted in place, no API token, non-root,
    the config's volumes, node selector, tolerations and classes."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # podFailurePolicy needs it; a retry is a fresh pod
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_user,
            "fsGroup": config.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [main],
        "volumes": [
            {"name": "cache", "emptyDir": {"sizeLimit": config.cache_size}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
        ],
    }
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = [dict(t) for t in config.tolerations]
    if config.runtime_class:
        spec["runtimeClassName"] = config.runtime_class
    if config.priority_class:
        spec["priorityClassName"] = config.priority_class
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    return spec


def build_job(plan: RunPlan, config: JobConfig) -> dict[str, Any]:
    """The batch/v1 Job (a plain dict, as sent to the API server) that runs `plan`."""
    return job_manifest(job_name(plan), config, run_labels(plan), _container(plan, config))


def job_manifest(
    name: str, config: JobConfig, labels: dict[str, str], main: dict[str, Any]
) -> dict[str, Any]:
    """A batch/v1 Job `name` running container `main`; `labels` on the Job and its pods (plus the
    Kueue queue label on the Job). Exit code 2 (a config error) fails the Job at once; disrupted pods
    (preemption, node drain) do not count against `backoff_limit`."""
    job_labels = {**labels, LABEL_QUEUE: config.queue} if config.queue else dict(labels)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": config.namespace, "labels": job_labels},
        "spec": {
            "backoffLimit": config.backoff_limit,
            "activeDeadlineSeconds": config.active_deadline_s,
            "ttlSecondsAfterFinished": config.ttl_s,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [CONFIG_ERROR_EXIT_CODE],
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec(config, main)},
        },
    }


def record_key(run_key: str) -> str:
    """Where a run Job's container writes its RunRecord (finished or failed) in the artifact store."""
    return f"jobs/{run_key}/record.json"


def checkpoint_prefix(run_key: str) -> str:
    """Where a run Job keeps its checkpoints (`last.pt`, `best.pt`) in the artifact store."""
    return f"jobs/{run_key}/checkpoints"
