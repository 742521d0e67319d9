"""The Kubernetes executor: one run = one batch/v1 Job (`k8s_jobs.build_job`), through the official
`kubernetes` client.

`execute(plan)`:
1. looks for a Job labelled with the run key. A running one is *adopted* (followed, never duplicated:
   a restarted scheduler re-queues its running runs and lands here); a succeeded one yields its stored
   record; a failed or terminating one is deleted and replaced (the new pod resumes from the stored
   checkpoint). With no Job, a finished record already in the store (the Job expired by its TTL) is
   returned as is.
2. creates the Job (after removing a stale record of an earlier attempt) and follows it: list, then
   watch from the list's resourceVersion; a watch that expires is resumed from the last version seen;
   `410 Gone` means re-list and watch again.
3. when the Job ends, reads the record the container wrote to the store (`jobs/<run_key>/record.json`)
   and, for a failed Job, adds the Job condition, the pod's exit code and termination message and the
   tail of its log to the record's error.

`cancel(run_key)` deletes the run's Job (propagationPolicy Background); the run's `execute` then
returns a record with status "cancelled". Transient problems (API server or store unreachable, 5xx,
429, the executor closed mid-run) raise `Unavailable`, so the scheduler retries (and adopts the Job);
an API server refusing the Job (4xx) gives a failed record with its reason.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from bobench.battle.context import ProgressFn
from bobench.battle.executor import Executor, utc_now
from bobench.battle.k8s_jobs import (
    CONTAINER,
    LABEL_RUN_KEY,
    JobConfig,
    build_job,
    job_name,
    record_key,
)
from bobench.battle.plan import RunPlan
from bobench.battle.records import STATUS_CANCELLED, STATUS_FAILED, RunRecord
from bobench.errors import BobenchError, DeadlineExceeded, FailedPrecondition, NotFound, Unavailable
from bobench.store.base import ArtifactStore

log = logging.getLogger(__name__)

_CANCELLED = object()  # the followed Job was deleted by `cancel`


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


def _terminal(job: Any) -> str | None:
    """ "Complete" or "Failed" when the Job has ended, else None."""
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def _condition_text(job: Any) -> str:
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type == "Failed" and cond.status == "True":
            return f"{cond.reason or 'Failed'}: {cond.message or ''}".strip(": ")
    return "Failed"


class KubernetesExecutor(Executor):
    """Runs each plan as a Job in `config.namespace`; `slots` (= `config.max_jobs`) Jobs at once."""

    def __init__(self, config: JobConfig, store: ArtifactStore, api_client: Any = None) -> None:
        from kubernetes import client

        if not config.store:
            raise FailedPrecondition("job config: 'store' must name the store the Jobs write to")
        self.config, self.store = config, store
        self.slots = config.max_jobs
        self._api = api_client if api_client is not None else api_client_from_environment()
        self._batch, self._core = client.BatchV1Api(self._api), client.CoreV1Api(self._api)
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._closed = threading.Event()

    # -- Executor ------------------------------------------------------------------------------
    def execute(self, plan: RunPlan, progress: ProgressFn | None = None) -> RunRecord:
        if plan.error:  # the run cannot start (its dataset failed to load when planned): no Job
            return _record_with_error(plan, f"BobenchError: {plan.error}")
        try:
            return self._execute(plan)
        except (Unavailable, DeadlineExceeded):
            raise
        except BobenchError as exc:
            return _record_with_error(plan, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._cancelled.discard(plan.run_key)

    def cancel(self, run_key: str) -> None:
        """Delete the run's Job (if any); the `execute` following it returns a cancelled record."""
        with self._lock:
            self._cancelled.add(run_key)
        for job in self._jobs_of(run_key):
            self._delete(job.metadata.name)
        log.info("cancelled run %s (its Job is deleted)", run_key)

    def close(self) -> None:
        """Stop following Jobs (they keep running; the next scheduler adopts them)."""
        self._closed.set()
        self._api.close()

    # -- steps ---------------------------------------------------------------------------------
    def _execute(self, plan: RunPlan) -> RunRecord:
        name = job_name(plan)
        existing = [j for j in self._jobs_of(plan.run_key) if j.metadata.name == name]
        job = existing[0] if existing else None
        if job is not None and (job.metadata.deletion_timestamp or _terminal(job) == "Failed"):
            self._delete(name)  # an earlier attempt: replace it (the new pod resumes from the store)
            job = None
        if job is None:
            stored = self._stored_record(plan)
            if stored is not None and stored.finished:
                return stored
            if self._is_cancelled(plan.run_key):
                return _record_with_error(plan, "cancelled before its Job was created", STATUS_CANCELLED)
            self.store.delete(record_key(plan.run_key))
            self._create(plan)
            log.info("run %s: created Job %s/%s", plan.run_key, self.config.namespace, name)
        else:
            log.info("run %s: adopted running Job %s/%s", plan.run_key, self.config.namespace, name)
        outcome = self._follow(name, plan.run_key)
        if outcome is _CANCELLED:
            return _record_with_error(plan, "cancelled: its Job was deleted", STATUS_CANCELLED)
        return self._result(plan, outcome)

    def _result(self, plan: RunPlan, job: Any) -> RunRecord:
        """The run's record once its Job ended: the one its container stored (stale ones were removed
        before the Job was created), with the pod's story added when the Job failed."""
        stored = self._stored_record(plan)
        if stored is not None and stored.finished:
            return stored  # written by the last pod even if the Job was marked failed afterwards
        if _terminal(job) == "Complete":
            return _record_with_error(plan, f"internal error: Job {job.metadata.name} left no record")
        detail = f"Job {job.metadata.name} {_condition_text(job)}; {self._pod_failure(job)}"
        if stored is None:  # killed before it could write one (OOM, SIGKILL, node loss)
            return _record_with_error(plan, f"internal error: {detail}")
        stored.status, stored.error = STATUS_FAILED, f"{stored.error}; {detail}"
        return stored

    def _stored_record(self, plan: RunPlan) -> RunRecord | None:
        try:
            return RunRecord.from_dict(self.store.get_json(record_key(plan.run_key)))
        except NotFound:
            return None

    def _is_cancelled(self, run_key: str) -> bool:
        with self._lock:
            return run_key in self._cancelled

    # -- API calls -----------------------------------------------------------------------------
    def _call(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` with client errors mapped to bobench errors naming `what`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if self._closed.is_set():
            raise Unavailable(f"{what}: the Kubernetes executor is closed")
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise _api_error(what, exc) from None
        except (HTTPError, OSError) as exc:
            raise Unavailable(f"{what}: Kubernetes API unreachable ({type(exc).__name__}: {exc})") from None

    def _jobs_of(self, run_key: str) -> list[Any]:
        jobs = self._call(
            f"list Jobs of run {run_key}",
            self._batch.list_namespaced_job,
            self.config.namespace,
            label_selector=f"{LABEL_RUN_KEY}={run_key}",
        )
        return list(jobs.items)

    def _create(self, plan: RunPlan) -> None:
        self._call(
            f"create Job {job_name(plan)}",
            self._batch.create_namespaced_job,
            self.config.namespace,
            build_job(plan, self.config),
        )

    def _delete(self, name: str) -> None:
        from kubernetes import client

        options = client.V1DeleteOptions(
            api_version="v1", kind="DeleteOptions", propagation_policy="Background"
        )
        try:
            self._call(
                f"delete Job {name}",
                self._batch.delete_namespaced_job,
                name,
                self.config.namespace,
                body=options,
            )
        except NotFound:
            pass

    def _follow(self, name: str, run_key: str) -> Any:
        """Watch Job `name` until it ends; returns the ended Job, or _CANCELLED when it was deleted."""
        from kubernetes.client.exceptions import ApiException

        where = f"follow Job {name}"
        while True:
            listed = self._call(
                where,
                self._batch.list_namespaced_job,
                self.config.namespace,
                field_selector=f"metadata.name={name}",
            )
            if not listed.items:
                return self._vanished(name, run_key)
            job = listed.items[0]
            if job.metadata.deletion_timestamp and self._is_cancelled(run_key):
                return _CANCELLED
            if _terminal(job):
                return job
            version = listed.metadata.resource_version
            try:
                result = self._watch(name, run_key, version)
            except ApiException as exc:
                if exc.status != 410:
                    raise _api_error(where, exc) from None
                log.info("watch of Job %s: resourceVersion %s is gone (410); re-listing", name, version)
                continue
            if result is not None:
                return result

    def _watch(self, name: str, run_key: str, version: str) -> Any:
        """Watch from `version`, resuming after each timeout; None when the list must be redone."""
        from kubernetes import watch
        from urllib3.exceptions import HTTPError

        while True:
            if self._closed.is_set():
                raise Unavailable(f"follow Job {name}: the Kubernetes executor is closed")
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self._batch.list_namespaced_job,
                    self.config.namespace,
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.config.watch_timeout_s,
                    _request_timeout=self.config.watch_timeout_s + 30,
                ):
                    job = event["object"]
                    if event["type"] == "BOOKMARK":
                        version = stream.resource_version or version
                        continue
                    version = job.metadata.resource_version or version
                    if event["type"] == "DELETED":
                        return self._vanished(name, run_key)
                    if job.metadata.deletion_timestamp and self._is_cancelled(run_key):
                        return _CANCELLED
                    if _terminal(job):
                        return job
            except (HTTPError, OSError):
                return None  # a broken stream: re-list
            finally:
                stream.stop()

    def _vanished(self, name: str, run_key: str) -> Any:
        if self._is_cancelled(run_key):
            return _CANCELLED
        raise Unavailable(f"Job {name} was deleted before it ended (not by bobench); the run is retried")

    def _pod_failure(self, job: Any) -> str:
        """Exit code, termination message and log tail of the Job's newest pod (best effort)."""
        name, uid = job.metadata.name, job.metadata.uid
        try:
            pods = self._call(
                f"list pods of Job {name}",
                self._core.list_namespaced_pod,
                self.config.namespace,
                label_selector=f"job-name={name}",
            ).items
        except BobenchError as exc:
            return f"pods unreadable ({exc})"
        pods = [p for p in pods if not uid or any(o.uid == uid for o in p.metadata.owner_references or [])]
        if not pods:
            return "no pod found"
        pod = max(pods, key=lambda p: (p.metadata.creation_timestamp or 0, p.metadata.name))
        return f"pod {pod.metadata.name}: {_termination(pod)}; log tail:\n{self._log_tail(pod.metadata.name)}"

    def _log_tail(self, pod: str) -> str:
        try:
            return self._call(
                f"read the log of pod {pod}",
                self._core.read_namespaced_pod_log,
                pod,
                self.config.namespace,
                container=CONTAINER,
                tail_lines=self.config.log_tail_lines,
            ).rstrip()
        except BobenchError as exc:
            return f"(log unreadable: {exc})"


def _termination(pod: Any) -> str:
    for status in (pod.status.container_statuses or []) if pod.status else []:
        term = status.state.terminated if status.state else None
        if status.name == CONTAINER and term is not None:
            message = (term.message or "").strip()
            return f"exit code {term.exit_code} ({term.reason or 'Error'})" + (
                f": {message}" if message else ""
            )
    return f"phase {pod.status.phase if pod.status else 'unknown'}"


def _api_error(what: str, exc: Any) -> BobenchError:
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


def _record_with_error(plan: RunPlan, error: str, status: str = STATUS_FAILED) -> RunRecord:
    record = plan.new_record()
    record.status, record.error = status, error
    record.started_at = record.finished_at = utc_now()
    record.duration_s = 0.0
    return record
