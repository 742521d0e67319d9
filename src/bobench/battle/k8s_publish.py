"""Publish Jobs: in the cluster the scheduler publishes each backbone through a Kubernetes Job.

`JobPublisher` is a `bobench.battle.publish_step.Publisher`: `publish(backbone, variant)` runs
`publish_job_argv(...)` (`bob publish BACKBONE --store S --variant V --triton-url T --target G`) as a
batch/v1 Job (`build_publish_job`) and, once it succeeded, returns the `PublishedModel` read from the
model store (`bobench.serving.publish.find_published`), so the scheduler needs neither the export
stack nor tritonclient. The Job machinery (create, find by label, watch with 410 resync, delete, pod
story) is `executors.k8s_api.JobApi`, shared with the run Jobs of `executors.kubernetes`.

- **One Job per (weights digest, variant, target).** Its name and the `bobench.io/publish-key` label
  derive from those alone, so a restarted scheduler adopts a running publish Job (or takes the
  result of a completed one) instead of creating another; a failed or terminating one is replaced.
- **Image and GPU.** `JobConfig.publish_image` (default: `image`; the GPU image builds TensorRT
  plans on the GPU node); a `nvidia.com/gpu` request for `trt-*` variants only (`publish_gpu:
  tensorrt`), always, or never. Env: the S3 endpoint, S3 credentials and `BOBENCH_TRITON_ADMIN_KEY`
  from the Secret `s3_secret` (secretKeyRef, never literal), `BOBENCH_CACHE_DIR`, `env`.
- **Labels.** `app.kubernetes.io/part-of: bobench` and `bobench.io/job-kind: publish`: the
  NetworkPolicies let publish Jobs (only) reach Triton's gRPC port and the store.
- **Errors.** A Job that fails with exit code 2 (a bobench error in `bob publish`: bad backbone,
  variant or target, refused credentials, a model Triton cannot load) raises InvalidArgument with the
  pod's termination message and log tail: `PublishStep` then fails that backbone's runs. Any other
  failure (OOM, a transient error, exit 1) and an API server that cannot be reached raise Unavailable,
  so the scheduler retries the run and the next attempt replaces the failed Job.
"""

from __future__ import annotations

import logging
from typing import Any

from bobench.battle.executors.k8s_api import JobApi, api_client_from_environment, condition_text, terminal
from bobench.battle.executors.k8s_jobs import (
    CONFIG_ERROR_EXIT_CODE,
    CONTAINER,
    LABEL_PART_OF,
    JobConfig,
    container,
    custom_backbone_env,
    job_manifest,
    secret_env,
    store_env,
)
from bobench.battle.publish_step import PublishStep, publish_job_argv
from bobench.errors import FailedPrecondition, InvalidArgument, Unavailable
from bobench.hashing import PUBLISH_JOB_KEY_HEX, json_digest
from bobench.serving.publish import PublishedModel
from bobench.store.base import ArtifactStore

log = logging.getLogger(__name__)

LABEL_JOB_KIND = "bobench.io/job-kind"
LABEL_PUBLISH_KEY = "bobench.io/publish-key"
PUBLISH_KIND = "publish"


def publish_job_key(digest: str, embedder_variant: str, target: str) -> str:
    """PUBLISH_JOB_KEY_HEX hex digits fixed by (weights digest, variant, target): the publish Job's
    identity."""
    return json_digest([digest, embedder_variant, target], PUBLISH_JOB_KEY_HEX)


def publish_job_name(key: str) -> str:
    """`bobench-publish-<key>`: a DNS-1123 label, the same for every scheduler that publishes it."""
    return f"bobench-publish-{key}"


def publish_gpus(config: JobConfig, embedder_variant: str) -> int:
    """nvidia.com/gpu of a publish Job: TensorRT plans are built on the GPU they are served from."""
    wanted = config.publish_gpu == "always" or (
        config.publish_gpu == "tensorrt" and embedder_variant.startswith("trt-")
    )
    return max(config.gpus, 1) if wanted else 0


def build_publish_job(
    backbone: str,
    embedder_variant: str,
    *,
    digest: str,
    config: JobConfig,
    store_url: str,
    triton_url: str,
    target: str,
) -> dict[str, Any]:
    """The batch/v1 Job (a plain dict) that publishes `backbone`'s `embedder_variant` to `store_url`
    for `target` and has Triton at `triton_url` load it."""
    key = publish_job_key(digest, embedder_variant, target)
    argv = publish_job_argv(
        backbone, embedder_variant, store_url=store_url, triton_url=triton_url, target=target
    )
    env = [
        *store_env(config),
        *custom_backbone_env(backbone),
        secret_env(config, "BOBENCH_TRITON_ADMIN_KEY", config.triton_admin_key_key),
        *({"name": k, "value": v} for k, v in sorted(config.env.items())),
    ]
    main = container(
        config,
        image=config.publish_image or config.image,
        command=argv[:1],
        args=argv[1:],
        env=env,
        gpus=publish_gpus(config, embedder_variant),
    )
    labels = {LABEL_PART_OF: "bobench", LABEL_JOB_KIND: PUBLISH_KIND, LABEL_PUBLISH_KEY: key}
    return job_manifest(publish_job_name(key), config, labels, main)


class JobPublisher:
    """Publishes through Jobs in `config.namespace`; `store` is the model store (`store_url`) the
    Jobs write to, read back here for the published entry."""

    def __init__(
        self,
        config: JobConfig,
        store: ArtifactStore,
        *,
        triton_url: str,
        target: str,
        api_client: Any = None,
    ) -> None:
        if not store.url.startswith("s3://"):
            raise FailedPrecondition(f"publish Jobs need an s3:// model store, got {store.url!r}")
        if not triton_url:
            raise FailedPrecondition("publish Jobs need the Triton URL to load the models on (triton_url)")
        self.config, self.store, self.triton_url, self.target = config, store, triton_url, target
        self.jobs = JobApi(
            config.namespace,
            api_client if api_client is not None else api_client_from_environment(),
            container=CONTAINER,
            watch_timeout_s=config.watch_timeout_s,
            log_tail_lines=config.log_tail_lines,
        )

    def close(self) -> None:
        """Stop following publish Jobs (they go on; the next scheduler adopts them)."""
        self.jobs.close()

    def publish(self, backbone: str, embedder_variant: str) -> PublishedModel:
        """Run (or adopt) the publish Job of (backbone, variant) and return what it published."""
        from bobench.backbones import get_spec
        from bobench.backbones.weights import with_weights_digest

        digest = with_weights_digest(get_spec(backbone)).digest()
        name = self._start(backbone, embedder_variant, digest)
        ended = self.jobs.follow(name, lambda: False)
        if terminal(ended) != "Complete":
            raise self._failure(ended)
        published = self._published(backbone, embedder_variant)
        if published is None:
            self.jobs.delete(name)  # it left no entry (deleted since?): the retry publishes again
            raise Unavailable(
                f"publish Job {name} completed but {self.store.url} holds no entry of {backbone!r}"
            )
        return published

    def _start(self, backbone: str, embedder_variant: str, digest: str) -> str:
        """The name of the Job to follow: a running or completed one is adopted, a failed or
        terminating one is replaced, none is created."""
        key = publish_job_key(digest, embedder_variant, self.target)
        name = publish_job_name(key)
        where = f"list publish Jobs of {backbone!r} ({embedder_variant})"
        found = [
            j for j in self.jobs.jobs_labelled(f"{LABEL_PUBLISH_KEY}={key}", where) if j.metadata.name == name
        ]
        job = found[0] if found else None
        if job is not None and (job.metadata.deletion_timestamp or terminal(job) == "Failed"):
            self.jobs.delete(name)  # an earlier attempt: replace it
            job = None
        what = f"publishing {backbone} ({embedder_variant})"
        if job is not None:
            log.info("%s: adopted Job %s/%s", what, self.config.namespace, name)
            return name
        body = build_publish_job(backbone, embedder_variant, digest=digest, config=self.config,
                                 store_url=self.store.url, triton_url=self.triton_url, target=self.target)  # fmt: skip
        self.jobs.create(body)
        log.info("%s: created Job %s/%s", what, self.config.namespace, name)
        return name

    def _published(self, backbone: str, embedder_variant: str) -> PublishedModel | None:
        from dataclasses import replace

        from bobench.serving.publish import find_published

        found = find_published(self.store, backbone, embedder_variant, target=self.target)
        return None if found is None else replace(found, loaded=True)

    def _failure(self, job: Any) -> Exception:
        pod = self.jobs.pod_failure(job)
        message = f"publish Job {job.metadata.name} {condition_text(job)}; {pod.text}"
        if pod.exit_code == CONFIG_ERROR_EXIT_CODE:
            return InvalidArgument(message)
        return Unavailable(message)


def publish_step_for_jobs(config: JobConfig, settings: Any, api_client: Any = None) -> PublishStep:
    """`PublishStep(JobPublisher(...))` publishing to `settings.publish_to` for
    `settings.publish_target`, loading on `settings.triton_url`. FailedPrecondition when the settings
    name no model store or no Triton."""
    from bobench.store import open_store

    if not settings.publish_to:
        raise FailedPrecondition(
            "job config: publish_jobs is on but no model store is set (BOBENCH_PUBLISH_TO=s3://...)"
        )
    store = open_store(settings.publish_to, settings, create_bucket=True)
    publisher = JobPublisher(
        config, store, triton_url=settings.triton_url, target=settings.publish_target, api_client=api_client
    )
    return PublishStep(publisher)
