"""The container command of a run Job (`bob job run`): run one `RunPlan` in process, with the store.

Contract with the Kubernetes executor (`bobench.battle.executors.kubernetes`):
- the plan comes as JSON (`RunPlan.to_dict`) in env `BOBENCH_JOB_PLAN`; store and S3 settings from
  the usual `BOBENCH_*` environment (`bobench.config.load_settings`);
- protocols that checkpoint (`k8s_jobs.CHECKPOINTED`: fine-tuning and the detection protocols) first
  download `jobs/<run_key>/checkpoints/` into their checkpoint directory, so a retried pod resumes
  from the last completed epoch, and upload the checkpoints after every epoch;
- the RunRecord, finished or failed, is written to `jobs/<run_key>/record.json`; the scheduler (not
  this process) copies a finished one to `results/`, so only the scheduler decides what is finished;
- on failure a short message goes to the termination log (`/dev/termination-log` by default) and
  the exit code is 2 for a bobench config error found before the run starts (InvalidArgument,
  NotFound, FailedPrecondition: the Job's podFailurePolicy fails the Job at once) and 1 otherwise
  (the pod is retried up to backoffLimit).
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

from bobench.battle.executors.base import utc_now
from bobench.battle.executors.k8s_jobs import (
    CHECKPOINTED,
    CONFIG_ERROR_EXIT_CODE,
    checkpoint_prefix,
    record_key,
)
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.plan import RunPlan
from bobench.config import Settings
from bobench.errors import FailedPrecondition, InvalidArgument, NotFound
from bobench.exit_codes import FAILED, OK
from bobench.results import RunRecord
from bobench.store.base import ArtifactStore

log = logging.getLogger(__name__)

CONFIG_ERRORS = (InvalidArgument, NotFound, FailedPrecondition)
TERMINATION_MESSAGE_LIMIT = 4000  # the kubelet keeps at most 4096 bytes


def parse_plan(text: str | None) -> RunPlan:
    """The RunPlan in `text` (JSON); InvalidArgument when it is missing or malformed."""
    if not text:
        raise InvalidArgument("job: no run plan given (env BOBENCH_JOB_PLAN or --plan)")
    try:
        return RunPlan.from_dict(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"job: the run plan is not a serialized RunPlan ({exc})") from None


def _checkpoint_dir(plan: RunPlan, settings: Settings, executor: LocalExecutor) -> Path | None:
    """The protocol's local checkpoint directory, after the config checks that can fail fast."""
    from bobench.backbones import get_spec
    from bobench.protocols import get_protocol

    if plan.error:
        raise InvalidArgument(plan.error)
    spec = get_spec(plan.backbone)
    config = get_protocol(plan.protocol).resolve_config(plan.config)
    dataset = executor.dataset(plan.dataset_ref)  # loaded once: execute() reuses it
    target = CHECKPOINTED.get(plan.protocol)
    if target is None:
        return None
    module, func = target.split(":")
    path = getattr(importlib.import_module(module), func)(
        settings.cache_dir, spec, dataset, config, plan.seed
    )
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def _failed(plan: RunPlan, exc: BaseException) -> RunRecord:
    record = plan.new_record()
    record.fail_with(exc)
    record.started_at = record.finished_at = utc_now()
    return record


def execute_with_store(plan: RunPlan, settings: Settings, store: ArtifactStore) -> tuple[RunRecord, int]:
    """Run `plan` with checkpoint sync; write its record to the store; return (record, exit code)."""
    from bobench.finetune.store_sync import CheckpointSync

    executor = LocalExecutor(settings)
    try:
        try:
            local_dir = _checkpoint_dir(plan, settings, executor)
        except CONFIG_ERRORS as exc:
            record = _failed(plan, exc)
            store.put_json(record_key(plan.run_key), _doc(record))
            return record, CONFIG_ERROR_EXIT_CODE
        sync = CheckpointSync(store, checkpoint_prefix(plan.run_key), local_dir) if local_dir else None
        if sync is not None:
            sync.restore()
        record = executor.execute(plan, progress=(lambda *_: sync.push()) if sync else None)
        if sync is not None:
            sync.push()
            record.metrics["checkpoint_dir"] = f"{store.url}/{checkpoint_prefix(plan.run_key)}"
    finally:
        executor.close()
    store.put_json(record_key(plan.run_key), _doc(record))
    return record, OK if record.finished else FAILED


def write_termination_message(path: str | Path, message: str) -> None:
    """Best effort: the kubelet shows this file as the container's termination message."""
    try:
        Path(path).write_text(message[:TERMINATION_MESSAGE_LIMIT])
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)


def main_job(plan_text: str | None, settings: Settings, termination_log: str | Path) -> int:
    """Everything `bob job run` does; returns the process exit code."""
    from bobench.store import open_store

    try:
        plan = parse_plan(plan_text)
        store = open_store(settings)
    except CONFIG_ERRORS as exc:
        write_termination_message(termination_log, f"{type(exc).__name__}: {exc}")
        return CONFIG_ERROR_EXIT_CODE
    try:
        record, code = execute_with_store(plan, settings, store)
    except Exception as exc:  # the store failed, or a bug: the pod is retried
        log.exception("run %s: the job could not complete", plan.run_key)
        write_termination_message(termination_log, f"{type(exc).__name__}: {exc}")
        return FAILED
    finally:
        store.close()
    if code:
        write_termination_message(termination_log, record.error or "failed")
    log.info("run %s %s (exit %d)", plan.run_key, record.status, code)
    return code


def _doc(record: RunRecord) -> dict[str, Any]:
    return json.loads(record.to_json())
