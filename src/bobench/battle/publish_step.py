"""Publish before dispatch: the scheduler's preparer that puts a run's backbone on Triton first.

`PublishStep(publisher)` is a `bobench.battle.scheduler.Preparer`. For a run that embeds through
Triton (`bobench.battle.plan.embeds`: protocols with features, serving_latency, efficiency) it
publishes the run's backbone once per (weights digest, embedder variant):

- memoized and thread-safe: one lock per key, so concurrent runs of one backbone wait for a single
  publish, and runs of other backbones are not held up;
- idempotent across scheduler restarts: the publisher itself finds the entry in the store and only
  (re)loads it on Triton;
- a failure is remembered for the key only when permanent (a BobenchError other than Unavailable /
  DeadlineExceeded): every run of that backbone then fails with the same reason and the battle goes on;
  transient errors propagate (the scheduler retries the run) and the next run tries again.

Runs that do not embed (fine-tuning) and failed plans skip it.

`Publisher` is the seam between "when to publish" (here) and "where it runs": `InProcessPublisher`
calls `bobench.serving.publish.publish` in this process (local stack, embedded mode); in the cluster
`bobench.battle.k8s_publish.JobPublisher` runs `publish_job_argv(...)` (the `bob publish` command
line) as a Kubernetes Job and returns the same `PublishedModel`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

from bobench.battle.plan import RunPlan, embeds
from bobench.errors import BobenchError, DeadlineExceeded, Unavailable
from bobench.serving.publish import PublishedModel
from bobench.store.base import ArtifactStore

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Publishes one backbone's `embedder_variant` and has Triton load it (raises BobenchError)."""

    def publish(self, backbone: str, embedder_variant: str) -> PublishedModel: ...


class InProcessPublisher:
    """`bobench.serving.publish.publish` in this process, against one model store and Triton."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        cache_dir: str | Path,
        triton_url: str | None,
        target: str = "local",
        admin_key: str = "",
        input_dtype: str = "uint8",
    ) -> None:
        self.store, self.cache_dir, self.triton_url = store, cache_dir, triton_url
        self.target, self.admin_key, self.input_dtype = target, admin_key, input_dtype

    def publish(self, backbone: str, embedder_variant: str) -> PublishedModel:
        from bobench.serving.publish import publish

        return publish(
            backbone,
            self.store,
            embedder_variant,
            target=self.target,
            input_dtype=self.input_dtype,
            cache_dir=self.cache_dir,
            triton_url=self.triton_url,
            admin_key=self.admin_key,
        )


def publish_job_argv(
    backbone: str, embedder_variant: str, *, store_url: str, triton_url: str, target: str
) -> list[str]:
    """The container command of a publish Job (credentials and the admin key come from its env:
    BOBENCH_S3_*, BOBENCH_TRITON_ADMIN_KEY)."""
    return [
        "bob",
        "publish",
        backbone,
        "--store",
        store_url,
        "--variant",
        embedder_variant,
        "--triton-url",
        triton_url,
        "--target",
        target,
    ]


class PublishStep:
    """The scheduler preparer: publish a run's backbone once per (digest, variant) before it runs."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._done: dict[tuple[str, str], PublishedModel] = {}
        self._failed: dict[tuple[str, str], BobenchError] = {}
        self.publishes = 0  # publisher calls made (for tests and logs)

    def close(self) -> None:
        """Release the publisher (a Job-backed one stops following its Jobs; they go on)."""
        close = getattr(self.publisher, "close", None)
        if close is not None:
            close()

    def __call__(self, plan: RunPlan, battle_id: str) -> None:
        if plan.error or not _embeds(plan):
            return
        self.prepare(plan.backbone, plan.embedder_variant)

    def prepare(self, backbone: str, embedder_variant: str) -> PublishedModel:
        """The published model of (backbone, variant), publishing it on first use."""
        from bobench.backbones import get_spec
        from bobench.backbones.weights import with_weights_digest

        key = (with_weights_digest(get_spec(backbone)).digest(), embedder_variant)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._done:
                return self._done[key]
            if key in self._failed:
                raise self._failed[key]
            try:
                self.publishes += 1
                published = self.publisher.publish(backbone, embedder_variant)
            except (Unavailable, DeadlineExceeded):
                raise  # transient: the scheduler retries the run, the next attempt publishes again
            except BobenchError as exc:
                self._failed[key] = type(exc)(f"publishing {backbone!r} ({embedder_variant}): {exc}")
                log.warning("%s", self._failed[key])
                raise self._failed[key] from None
            self._done[key] = published
            log.info(
                "run backbone %s served as %s version %d (%s)",
                backbone,
                published.model_name,
                published.version,
                "uploaded" if published.uploaded else "already published",
            )
            return published


def _embeds(plan: RunPlan) -> bool:
    from bobench.protocols import get_protocol

    return embeds(get_protocol(plan.protocol))


def publish_step_from_settings(settings) -> PublishStep | None:
    """The in-process PublishStep the settings ask for (`publish_to`), or None when it is off."""
    if not settings.publish_to:
        return None
    from bobench.store import open_store

    store = open_store(settings.publish_to, settings, create_bucket=True)
    return PublishStep(
        InProcessPublisher(
            store,
            cache_dir=settings.cache_dir,
            triton_url=settings.triton_url,
            target=settings.publish_target,
            admin_key=settings.triton_admin_key,
        )
    )
