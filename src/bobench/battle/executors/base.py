"""The executor contract: run one planned run and return its record (`bobench.battle.executors`).

Every way a battle's runs execute implements `Executor`: in this process (`local.LocalExecutor`), on
remote evaluators over gRPC (`grpc.GrpcExecutor`), or as Kubernetes Jobs
(`kubernetes.KubernetesExecutor`); the evaluator service runs its requests on a pool of local ones
(`pool.ExecutorPool`). A run's own failure is a failed record, never an exception; transient
failures (`bobench.errors.TRANSIENT_ERRORS`) are raised or recorded, and the scheduler retries them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import UTC, datetime

from bobench.battle.context import ProgressFn
from bobench.battle.plan import RunPlan
from bobench.results import RunRecord


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Executor(abc.ABC):
    """Runs one plan to a finished or failed record. Never raises for a run's own failure."""

    @abc.abstractmethod
    def execute(self, plan: RunPlan, progress: ProgressFn | None = None) -> RunRecord: ...

    def plan_ahead(self, plans: Sequence[RunPlan]) -> None:  # noqa: B027 - an optional hook, not abstract
        """The runs about to be executed, in order (a hint: an executor may prepare shared work);
        default: ignored."""

    def cancel(self, run_key: str) -> None:  # noqa: B027 - an optional hook, not abstract
        """Stop the run `run_key` if this executor can (a Kubernetes Job is deleted); default: no-op,
        the run finishes and is recorded."""

    def close(self) -> None:
        """Release held resources."""
