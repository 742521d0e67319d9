"""The Job machinery both Kubernetes users share (`kubernetes.KubernetesExecutor` for run Jobs,
`k8s_publish.JobPublisher` for publish Jobs), through the official `kubernetes` client.

`JobApi(namespace, api_client)` creates Jobs, finds them by label, deletes them (propagationPolicy
Background), follows one until it ends and tells why a failed one failed:

- `follow(name, is_cancelled)`: list, then watch from the list's resourceVersion; a watch that times
  out is resumed from the last version seen (bookmarks included); `410 Gone` means re-list and watch
  again; a broken stream re-lists. Returns the ended Job, or `CANCELLED` when the Job was deleted and
  `is_cancelled()` says bobench deleted it. A Job deleted by someone else raises Unavailable.
- `pod_failure(job)`: the newest pod's exit code, termination message and log tail (best effort).

Errors: every API call maps client errors to bobench errors naming the call: 5xx, 429, 409 and an
unreachable server are Unavailable (retry), 404 NotFound, other 4xx FailedPrecondition (the API
server refused it). After `close()` calls raise Unavailable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bobench.errors import BobenchError, FailedPrecondition, NotFound, Unavailable

log = logging.getLogger(__name__)

CANCELLED = object()  # what `follow` returns for a Job deleted by its owner (`is_cancelled()` true)


def api_client_from_environment(configuration: Any = None) -> Any:
    """An ApiClient: `configuration` when given (tests), in-cluster service account, else kubeconfig."""
    from kubernetes import client, config

    if configuration is not None:
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise Unavailable(f"no Kubernetes API access (not in a cluster, no kubeconfig): {exc}") from None
    return client.ApiClient()


def terminal(job: Any) -> str | None:
    """ "Complete" or "Failed" when the Job has ended, else None."""
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def condition_text(job: Any) -> str:
    """The Failed condition as "Reason: message" (just "Failed" without one)."""
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type == "Failed" and cond.status == "True":
            return f"{cond.reason or 'Failed'}: {cond.message or ''}".strip(": ")
    return "Failed"


@dataclass(frozen=True)
class PodFailure:
    """Why a Job's newest pod ended: its container's exit code (None when unknown) and the story."""

    exit_code: int | None
    text: str


class JobApi:
    """Jobs of one namespace; `container` is the container whose exit code and log tell the story."""

    def __init__(
        self,
        namespace: str,
        api_client: Any,
        *,
        container: str,
        watch_timeout_s: int = 30,
        log_tail_lines: int = 40,
    ) -> None:
        from kubernetes import client

        self.namespace, self.container = namespace, container
        self.watch_timeout_s, self.log_tail_lines = watch_timeout_s, log_tail_lines
        self._api = api_client
        self._batch, self._core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop all calls and watches (the Jobs keep running)."""
        self._closed.set()
        self._api.close()

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` with client errors mapped to bobench errors naming `what`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if self._closed.is_set():
            raise Unavailable(f"{what}: the Kubernetes client is closed")
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise api_error(what, exc) from None
        except (HTTPError, OSError) as exc:
            raise Unavailable(f"{what}: Kubernetes API unreachable ({type(exc).__name__}: {exc})") from None

    def jobs_labelled(self, selector: str, what: str) -> list[Any]:
        """The Jobs matching the label selector `selector`."""
        jobs = self.call(what, self._batch.list_namespaced_job, self.namespace, label_selector=selector)
        return list(jobs.items)

    def create(self, body: dict[str, Any]) -> None:
        """Create the Job manifest `body` (a plain dict)."""
        name = body["metadata"]["name"]
        self.call(f"create Job {name}", self._batch.create_namespaced_job, self.namespace, body)

    def delete(self, name: str) -> None:
        """Delete Job `name` and (in the background) its pods; a Job already gone is fine."""
        from kubernetes import client

        options = client.V1DeleteOptions(
            api_version="v1", kind="DeleteOptions", propagation_policy="Background"
        )
        try:
            self.call(
                f"delete Job {name}", self._batch.delete_namespaced_job, name, self.namespace, body=options
            )
        except NotFound:
            pass

    def follow(self, name: str, is_cancelled: Callable[[], bool]) -> Any:
        """Watch Job `name` until it ends; returns the ended Job, or CANCELLED when it was deleted."""
        from kubernetes.client.exceptions import ApiException

        where = f"follow Job {name}"
        while True:
            listed = self.call(
                where, self._batch.list_namespaced_job, self.namespace, field_selector=f"metadata.name={name}"
            )
            if not listed.items:
                return _vanished(name, is_cancelled)
            job = listed.items[0]
            if job.metadata.deletion_timestamp and is_cancelled():
                return CANCELLED
            if terminal(job):
                return job
            version = listed.metadata.resource_version
            try:
                result = self._watch(name, is_cancelled, version)
            except ApiException as exc:
                if exc.status != 410:
                    raise api_error(where, exc) from None
                log.info("watch of Job %s: resourceVersion %s is gone (410); re-listing", name, version)
                continue
            if result is not None:
                return result

    def _watch(self, name: str, is_cancelled: Callable[[], bool], version: str) -> Any:
        """Watch from `version`, resuming after each timeout; None when the list must be redone."""
        from kubernetes import watch
        from urllib3.exceptions import HTTPError

        while True:
            if self._closed.is_set():
                raise Unavailable(f"follow Job {name}: the Kubernetes client is closed")
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self._batch.list_namespaced_job,
                    self.namespace,
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout_s,
                    _request_timeout=self.watch_timeout_s + 30,
                ):
                    job = event["object"]
                    if event["type"] == "BOOKMARK":
                        version = stream.resource_version or version
                        continue
                    version = job.metadata.resource_version or version
                    if event["type"] == "DELETED":
                        return _vanished(name, is_cancelled)
                    if job.metadata.deletion_timestamp and is_cancelled():
                        return CANCELLED
                    if terminal(job):
                        return job
            except (HTTPError, OSError):
                return None  # a broken stream: re-list
            finally:
                stream.stop()

    def pod_failure(self, job: Any) -> PodFailure:
        """Exit code, termination message and log tail of the Job's newest pod (best effort)."""
        name, uid = job.metadata.name, job.metadata.uid
        try:
            pods = self.call(
                f"list pods of Job {name}",
                self._core.list_namespaced_pod,
                self.namespace,
                label_selector=f"job-name={name}",
            ).items
        except BobenchError as exc:
            return PodFailure(None, f"pods unreadable ({exc})")
        pods = [p for p in pods if not uid or any(o.uid == uid for o in p.metadata.owner_references or [])]
        if not pods:
            return PodFailure(None, "no pod found")
        pod = max(pods, key=lambda p: (p.metadata.creation_timestamp or 0, p.metadata.name))
        exit_code, ended = self._termination(pod)
        tail = self._log_tail(pod.metadata.name)
        return PodFailure(exit_code, f"pod {pod.metadata.name}: {ended}; log tail:\n{tail}")

    def _termination(self, pod: Any) -> tuple[int | None, str]:
        for status in (pod.status.container_statuses or []) if pod.status else []:
            term = status.state.terminated if status.state else None
            if status.name == self.container and term is not None:
                message = (term.message or "").strip()
                text = f"exit code {term.exit_code} ({term.reason or 'Error'})"
                return term.exit_code, text + (f": {message}" if message else "")
        return None, f"phase {pod.status.phase if pod.status else 'unknown'}"

    def _log_tail(self, pod: str) -> str:
        try:
            return self.call(
                f"read the log of pod {pod}",
                self._core.read_namespaced_pod_log,
                pod,
                self.namespace,
                container=self.container,
                tail_lines=self.log_tail_lines,
            ).rstrip()
        except BobenchError as exc:
            return f"(log unreadable: {exc})"


def _vanished(name: str, is_cancelled: Callable[[], bool]) -> Any:
    if is_cancelled():
        return CANCELLED
    raise Unavailable(f"Job {name} was deleted before it ended (not by bobench); it is retried")


def api_error(what: str, exc: Any) -> BobenchError:
    """An ApiException as a bobench error: 5xx/429 are transient, 404 NotFound, the rest refused."""
    status, reason = exc.status or 0, (exc.reason or "").strip()
    if status in (0, 429) or status >= 500:
        return Unavailable(f"{what}: Kubernetes API error {status} {reason}")
    if status == 404:
        return NotFound(f"{what}: not found")
    if status == 409:
        return Unavailable(f"{what}: conflict (the previous Job is still being deleted)")
    body = (exc.body or "")[:500] if isinstance(exc.body, str) else ""
    return FailedPrecondition(f"{what}: Kubernetes API refused it ({status} {reason}) {body}".rstrip())
