"""Executors run one planned run and return its record. The in-process executor lives here; the gRPC
and Kubernetes executors implement the same `Executor` interface elsewhere."""

from __future__ import annotations

import abc
import logging
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from bobench.battle.context import LocalContext, ProgressFn
from bobench.battle.plan import RunPlan
from bobench.battle.records import STATUS_FAILED, STATUS_FINISHED, RunRecord
from bobench.config import Settings
from bobench.embed.cache import FeatureCache
from bobench.environment import environment
from bobench.errors import BobenchError

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def backbone_info(spec: Any) -> dict[str, Any]:
    """The backbone metadata analysis groups by (family, method, data, size)."""
    return {
        "family": spec.family,
        "pretraining_method": spec.pretraining_method,
        "pretraining_data": spec.pretraining_data,
        "num_params": spec.num_params,
        "embed_dim": spec.embed_dim,
        "input_size": spec.input_size,
        "source": spec.source,
        "weights": spec.weights,
        "weights_sha256": spec.weights_sha256,
        "license": spec.license,
        "digest": spec.digest(),
    }


class Executor(abc.ABC):
    """Runs one plan to a finished or failed record. Never raises for a run's own failure."""

    @abc.abstractmethod
    def execute(self, plan: RunPlan, progress: ProgressFn | None = None) -> RunRecord: ...

    def close(self) -> None:
        """Release held resources."""


class LocalExecutor(Executor):
    """Runs protocols in this process. Keeps the current backbone's embedder and loaded datasets warm."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = FeatureCache(settings.cache_dir)
        self._datasets: dict[str, Any] = {}
        self._embedder_key: str | None = None
        self._embedder = None
        self.executions = 0  # runs actually executed (not skipped), for tests and metrics

    def dataset(self, ref: str | dict) -> Any:
        """Load and fully validate a dataset once per executor (a corrupt image fails before any run)."""
        import json

        from bobench.data import load_dataset, validate_dataset

        key = json.dumps(ref, sort_keys=True)
        if key not in self._datasets:
            ds = load_dataset(ref)
            validate_dataset(ds)
            self._datasets[key] = ds
        return self._datasets[key]

    def embedder(self, spec: Any):
        from bobench.embed import make_embedder

        key = spec.digest()
        if self._embedder_key != key:
            if self._embedder is not None:
                self._embedder.close()
            options: dict[str, Any] = {
                "batch_size": self.settings.batch_size,
                "threads": self.settings.threads,
            }
            if self.settings.embedder == "onnxruntime":
                options["cache_dir"] = self.settings.cache_dir
            if self.settings.embedder == "torch":
                options["device"] = self.settings.device
            if self.settings.embedder == "triton":
                options = {"batch_size": self.settings.batch_size, "url": self.settings.triton_url}
            log.info("loading %s with the %s embedder", spec.name, self.settings.embedder)
            self._embedder = make_embedder(self.settings.embedder, spec.name, **options)
            self._embedder_key = key
        return self._embedder

    def module(self, spec: Any):
        from bobench.backbones import create_backbone

        loaded = create_backbone(spec.name)
        if loaded.module is None:
            from bobench.errors import FailedPrecondition

            raise FailedPrecondition(
                f"backbone {spec.name!r} is an ONNX model; it has no trainable torch module"
            )
        return loaded.module

    def execute(self, plan: RunPlan, progress: ProgressFn | None = None) -> RunRecord:
        from bobench.backbones import get_spec
        from bobench.protocols import get_protocol

        record = plan.new_record()
        record.started_at = utc_now()
        t0 = time.perf_counter()
        runtime_info: dict[str, Any] = {"runtime": self.settings.embedder, "device": self.settings.device}
        try:
            if plan.error:
                raise BobenchError(plan.error)
            spec = get_spec(plan.backbone)
            record.backbone_info = backbone_info(spec)
            ctx = LocalContext(
                spec,
                self.dataset(plan.dataset_ref),
                cache=self.cache,
                embedder_factory=lambda: self.embedder(spec),
                dataset_loader=self.dataset,
                module_factory=lambda: self.module(spec),
                progress=progress,
                settings=self.settings,
            )
            self.executions += 1
            metrics = get_protocol(plan.protocol).evaluate(ctx, plan.config, plan.seed)
            runtime_info.update(ctx.runtime_info)
            if ctx.feature_runtimes:  # cached features may come from another runtime: say so
                runtime_info["feature_runtimes"] = sorted(ctx.feature_runtimes)
            if self._embedder is not None and self._embedder_key == spec.digest():
                record.backbone_info = backbone_info(self._embedder.spec)
            record.metrics = dict(metrics)
            record.status = STATUS_FINISHED
        except BobenchError as exc:
            record.status, record.error = STATUS_FAILED, f"{type(exc).__name__}: {exc}"
            log.info(  # the run's own failure (bad data, unavailable weights): recorded, not a crash
                "run %s (%s/%s/%s) failed: %s",
                plan.run_key,
                plan.backbone,
                plan.dataset,
                plan.protocol,
                record.error,
            )
        except Exception as exc:  # a bug or a library failure: keep the battle going, keep the traceback
            record.status, record.error = STATUS_FAILED, f"internal error: {type(exc).__name__}: {exc}"
            log.error("run %s crashed:\n%s", plan.run_key, traceback.format_exc())
        record.finished_at = utc_now()
        record.duration_s = round(time.perf_counter() - t0, 3)
        record.environment = environment(
            {**runtime_info, "threads": self.settings.threads or _default_threads()}
        )
        return record

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
            self._embedder_key = None


def _default_threads() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
