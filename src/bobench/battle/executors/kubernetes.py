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

The API calls, the watch and the pod story are `k8s_api.JobApi` (shared with the publish Jobs).

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
from bobench.battle.executors.base import Executor, utc_now
from bobench.battle.executors.k8s_api import (
    CANCELLED,
    JobApi,
    api_client_from_environment,
    condition_text,
    terminal,
)
from bobench.battle.executors.k8s_jobs import (
    CONTAINER,
    LABEL_RUN_KEY,
    JobConfig,
    build_job,
    job_name,
    record_key,
)
from bobench.battle.plan import RunPlan
from bobench.errors import (
    INTERNAL_ERROR,
    BobenchError,
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    Unavailable,
    error_type,
)
from bobench.results import RunRecord, RunStatus
from bobench.store.base import ArtifactStore

log = logging.getLogger(__name__)


class KubernetesExecutor(Executor):
    """Runs each plan as a Job in `config.namespace`; `slots` (= `config.max_jobs`) Jobs at once."""

    def __init__(self, config: JobConfig, store: ArtifactStore, api_client: Any = None) -> None:
        if not config.store:
            raise FailedPrecondition("job config: 'store' must name the store the Jobs write to")
        self.config, self.store = config, store
        self.slots = config.max_jobs
        self.jobs = JobApi(
            config.namespace,
            api_client if api_client is not None else api_client_from_environment(),
            container=CONTAINER,
            watch_timeout_s=config.watch_timeout_s,
            log_tail_lines=config.log_tail_lines,
        )
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()

    # -- Executor ------------------------------------------------------------------------------
    def execute(self, plan: RunPlan, progress: ProgressFn | None = None) -> RunRecord:
        if plan.error:  # the run cannot start (its dataset failed to load when planned): no Job
            return _record_with_error(plan, "BobenchError", f"BobenchError: {plan.error}")
        try:
            return self._execute(plan)
        except (Unavailable, DeadlineExceeded):
            raise
        except BobenchError as exc:
            return _record_with_error(plan, error_type(exc), f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._cancelled.discard(plan.run_key)

    def cancel(self, run_key: str) -> None:
        """Delete the run's Job (if any); the `execute` following it returns a cancelled record."""
        with self._lock:
            self._cancelled.add(run_key)
        for job in self._jobs_of(run_key):
            self.jobs.delete(job.metadata.name)
        log.info("cancelled run %s (its Job is deleted)", run_key)

    def close(self) -> None:
        """Stop following Jobs (they keep running; the next scheduler adopts them)."""
        self.jobs.close()

    # -- steps ---------------------------------------------------------------------------------
    def _execute(self, plan: RunPlan) -> RunRecord:
        name = job_name(plan)
        existing = [j for j in self._jobs_of(plan.run_key) if j.metadata.name == name]
        job = existing[0] if existing else None
        if job is not None and (job.metadata.deletion_timestamp or terminal(job) == "Failed"):
            self.jobs.delete(name)  # an earlier attempt: replace it (the new pod resumes from the store)
            job = None
        if job is None:
            stored = self._stored_record(plan)
            if stored is not None and stored.finished:
                return stored
            if self._is_cancelled(plan.run_key):
                return _record_with_error(
                    plan, "Cancelled", "cancelled before its Job was created", RunStatus.CANCELLED
                )
            self.store.delete(record_key(plan.run_key))
            self.jobs.create(build_job(plan, self.config))
            log.info("run %s: created Job %s/%s", plan.run_key, self.config.namespace, name)
        else:
            log.info("run %s: adopted running Job %s/%s", plan.run_key, self.config.namespace, name)
        outcome = self.jobs.follow(name, lambda: self._is_cancelled(plan.run_key))
        if outcome is CANCELLED:
            return _record_with_error(
                plan, "Cancelled", "cancelled: its Job was deleted", RunStatus.CANCELLED
            )
        return self._result(plan, outcome)

    def _result(self, plan: RunPlan, job: Any) -> RunRecord:
        """The run's record once its Job ended: the one its container stored (stale ones were removed
        before the Job was created), with the pod's story added when the Job failed."""
        stored = self._stored_record(plan)
        if stored is not None and stored.finished:
            return stored  # written by the last pod even if the Job was marked failed afterwards
        if terminal(job) == "Complete":
            return _record_with_error(
                plan, INTERNAL_ERROR, f"internal error: Job {job.metadata.name} left no record"
            )
        detail = f"Job {job.metadata.name} {condition_text(job)}; {self.jobs.pod_failure(job).text}"
        if stored is None:  # killed before it could write one (OOM, SIGKILL, node loss)
            return _record_with_error(plan, INTERNAL_ERROR, f"internal error: {detail}")
        stored.fail(stored.error_type or INTERNAL_ERROR, f"{stored.error}; {detail}")
        return stored

    def _stored_record(self, plan: RunPlan) -> RunRecord | None:
        try:
            return RunRecord.from_dict(self.store.get_json(record_key(plan.run_key)))
        except NotFound:
            return None

    def _is_cancelled(self, run_key: str) -> bool:
        with self._lock:
            return run_key in self._cancelled

    def _jobs_of(self, run_key: str) -> list[Any]:
        return self.jobs.jobs_labelled(f"{LABEL_RUN_KEY}={run_key}", f"list Jobs of run {run_key}")


def _record_with_error(
    plan: RunPlan, kind: str, error: str, status: RunStatus = RunStatus.FAILED
) -> RunRecord:
    record = plan.new_record()
    record.fail(kind, error, status)
    record.started_at = record.finished_at = utc_now()
    record.duration_s = 0.0
    return record
