"""LocalExecutor: runs protocols in this process (`bob battle run`, the evaluator's pool, a run Job).

LocalExecutor stops a run at its next progress call (protocols call it at every step of their loops)
when `cancel(run_key)` asked for it (record status "cancelled") or when the run has taken longer
than `settings.max_run_s` (a failed record with a DeadlineExceeded error), so no run holds an
executor for good."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bobench.battle.backbone_facts import BackboneFacts
from bobench.battle.context import LocalContext, ProgressFn
from bobench.battle.executors.base import Executor, utc_now
from bobench.battle.plan import RunPlan
from bobench.config import Settings
from bobench.embed.cache import FeatureCache, feature_runtime
from bobench.embed.input_cache import PreparedInputs, preprocess_key
from bobench.environment import environment
from bobench.errors import BobenchError, Cancelled, DeadlineExceeded
from bobench.results import RunRecord, RunStatus
from bobench.stage_timer import stage
from bobench.threads import apply_thread_budget, hold_thread_budget

log = logging.getLogger(__name__)


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


class LocalExecutor(Executor):
    """Runs protocols in this process. Keeps the current backbone's embedder and loaded datasets warm.

    One embedder (one ONNX Runtime session) per backbone, variant and thread count serves every run
    of a battle: the battle-level latency step opens its backbones' embedders ahead
    (`prepared_embedder`) and the first run of each backbone takes its one over instead of loading
    it again. Runs go backbone by backbone (the plan's order), so moving to another backbone closes
    the previous one; `close` (the end of the battle) closes every one still open. Creating the
    executor applies the `threads` setting as the process's thread budget (`bobench.threads`),
    split over `concurrent_runs` executors that run at once (the evaluator's pool). Told the battle's
    runs ahead (`plan_ahead`), it decodes and resizes each image once per input resolution for all
    the backbones that share it (`embed.input_cache`, at most `input_cache_mb`).
    """

    def __init__(self, settings: Settings, concurrent_runs: int = 1) -> None:
        self.settings = settings
        self.cache = FeatureCache(settings.cache_dir, recompute=settings.recompute_features)
        self.facts = BackboneFacts(settings.cache_dir)
        self._datasets: dict[str, Any] = {}
        self._embedder_key: str | None = None
        self._embedder = None
        self._prepared: dict[str, Any] = {}  # embedders opened ahead for later runs, by embedder key
        self.threads = apply_thread_budget(settings.threads, concurrent_runs).per_run  # a run's share
        self.executions = 0  # runs actually executed (not skipped), for tests and metrics
        self._cancel_lock = threading.Lock()
        self._cancel_requested: set[str] = set()
        self.inputs = PreparedInputs(settings.input_cache_mb << 20)
        self._runs_left: Counter[str] = Counter()  # planned runs per backbone (`plan_ahead`)

    def plan_ahead(self, plans: Sequence[RunPlan]) -> None:
        """The runs this executor is about to execute: backbones sharing a preprocessing share inputs."""
        from bobench.backbones import get_spec

        self._runs_left = Counter(plan.backbone for plan in plans)
        keys = {}
        for name in self._runs_left:
            try:
                keys[name] = preprocess_key(get_spec(name))
            except BobenchError:  # an unknown backbone fails its own runs; it shares nothing
                continue
        self.inputs.expect(keys)

    def cancel(self, run_key: str) -> None:
        """Stop `run_key` at its next progress call; it ends with a "cancelled" record."""
        with self._cancel_lock:
            self._cancel_requested.add(run_key)

    def checked_progress(self, plan: RunPlan, progress: ProgressFn | None) -> ProgressFn:
        """`progress` behind this run's stop checks: raises Cancelled once `cancel` was asked for,
        DeadlineExceeded once the run passed `settings.max_run_s`; else forwards the call."""
        limit_s = self.settings.max_run_s
        deadline = time.monotonic() + limit_s if limit_s > 0 else None

        def check(done: int, total: int, message: str = "") -> None:
            with self._cancel_lock:
                cancelled = plan.run_key in self._cancel_requested
            if cancelled:
                raise Cancelled(f"run {plan.run_key} cancelled")
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"run {plan.run_key} passed the time limit of {limit_s} s per run")
            if progress is not None:
                progress(done, total, message)

        return check

    def dataset(self, ref: str | dict) -> Any:
        """Load and fully validate a dataset once per executor (a corrupt image fails before any run)."""
        import json

        from bobench.data import load_dataset, validate_dataset

        key = json.dumps(ref, sort_keys=True)
        if key not in self._datasets:
            with stage("dataset_load"):
                ds = load_dataset(ref)
                validate_dataset(ds)
            self._datasets[key] = ds
        return self._datasets[key]

    def _run_dataset(self, plan: RunPlan) -> Any:
        """The run's dataset. A data error names the dataset as the spec does (`plan.dataset`, e.g.
        'my-pets'), not only by its folder: the same error type, the spec's name in front."""
        try:
            return self.dataset(plan.dataset_ref)
        except BobenchError as exc:
            if f"dataset {plan.dataset!r}" in str(exc):
                raise
            raise type(exc)(f"dataset {plan.dataset!r}: {exc}") from exc

    def embedder(self, spec: Any, embedder_variant: str = "onnx"):
        """The embedder of `spec` (kept warm per backbone digest and variant).

        A TensorRT `embedder_variant` exists only as a published Triton model: with another runtime
        it raises FailedPrecondition. The previous embedder is closed and forgotten *before* the new
        one is made, so a failed `make_embedder` never leaves a closed embedder under a live key.
        """
        key = self.embedder_key(spec, embedder_variant)
        if self._embedder_key == key:
            return self._embedder
        if embedder_variant != "onnx" and self.settings.embedder != "triton":
            from bobench.errors import FailedPrecondition

            raise FailedPrecondition(
                f"embedder_variant {embedder_variant!r} is served by Triton only; this executor embeds "
                f"with {self.settings.embedder!r} (set embedder: triton)"
            )
        self._close_embedder()
        prepared = self._prepared.pop(key, None)
        self._embedder = prepared if prepared is not None else self.new_embedder(spec, embedder_variant)
        self._embedder_key = key
        return self._embedder

    def embedder_key(self, spec: Any, embedder_variant: str = "onnx") -> str:
        """Which embedder serves `spec`: backbone digest, variant and thread count."""
        return f"{spec.digest()}:{embedder_variant}:{self.threads}"

    def prepared_embedder(self, spec: Any, embedder_variant: str = "onnx"):
        """The embedder a later run of `spec` will use, opened now (the battle-level latency step
        times it): kept by the executor, never closed by the caller."""
        key = self.embedder_key(spec, embedder_variant)
        if self._embedder_key == key:
            return self._embedder
        if key not in self._prepared:
            self._prepared[key] = self.new_embedder(spec, embedder_variant)
        return self._prepared[key]

    def new_embedder(self, spec: Any, embedder_variant: str = "onnx"):
        """A fresh embedder of `spec` made from the settings; the caller closes it (`embedder` and
        `prepared_embedder` keep theirs and close them themselves)."""
        from bobench.embed import make_embedder

        options: dict[str, Any] = {"batch_size": self.settings.batch_size, "threads": self.threads}
        if self.settings.embedder == "onnxruntime":
            options["cache_dir"] = self.settings.cache_dir
        if self.settings.embedder == "torch":
            options["device"] = self.settings.device
        if self.settings.embedder == "triton":
            from bobench.export.triton_repo import served_model_name

            options = {
                "batch_size": self.settings.batch_size,
                "url": self.settings.triton_url,
                "model_name": served_model_name(spec, embedder_variant),
                "service_key": self.settings.triton_service_key,  # never logged
            }
        log.info("loading %s (%s) with the %s embedder", spec.name, embedder_variant, self.settings.embedder)
        return make_embedder(self.settings.embedder, spec.name, **options)

    def feature_cache(self, embedder_variant: str) -> FeatureCache:
        """The feature cache of a variant: ONNX features (any runtime) share one; each TensorRT
        variant has its own, since its features differ from ONNX Runtime's."""
        if embedder_variant == "onnx":
            return self.cache
        return FeatureCache(
            Path(self.settings.cache_dir) / "variants" / embedder_variant,
            recompute=self.settings.recompute_features,
        )

    def _close_embedder(self) -> None:
        embedder, self._embedder, self._embedder_key = self._embedder, None, None
        if embedder is not None:
            embedder.close()

    def module(self, spec: Any):
        from bobench.backbones import create_backbone

        with stage("backbone_load"):
            loaded = create_backbone(spec.name)
        if loaded.module is None:
            from bobench.errors import FailedPrecondition

            raise FailedPrecondition(
                f"backbone {spec.name!r} is an ONNX model; it has no trainable torch module"
            )
        return loaded.module

    def _record_spec(self, spec: Any, variant: str) -> Any:
        """The spec a record describes: measured fields as loading the backbone gives them, whether
        this run loaded it or read cached features (`BackboneFacts`)."""
        from bobench.backbones import create_backbone

        live = self._embedder if self._embedder_key == self.embedder_key(spec, variant) else None
        if live is not None and live.spec.num_params is not None:  # Triton's spec measures nothing
            self.facts.keep(spec, live.spec)
        with stage("backbone_load"):
            return self.facts.fill(
                spec, lambda: create_backbone(spec.name, cache_dir=self.settings.cache_dir).spec
            )

    def execute(self, plan: RunPlan, progress: ProgressFn | None = None) -> RunRecord:
        from bobench.backbones import get_spec
        from bobench.backbones.weights import with_weights_digest
        from bobench.export.tensorrt import precision_of_variant
        from bobench.protocols import get_protocol

        record = plan.new_record()
        record.started_at = utc_now()
        t0 = time.perf_counter()
        progress = self.checked_progress(plan, progress)
        hold_thread_budget()  # this thread may have started torch work inside another's scoped change
        runtime_info: dict[str, Any] = {"runtime": self.settings.embedder, "device": self.settings.device}
        try:
            if plan.error:
                raise BobenchError(plan.error)
            spec = with_weights_digest(get_spec(plan.backbone))  # keys cover what the weights hold
            record.backbone_info = backbone_info(spec)
            variant = plan.embedder_variant
            runtime_info["precision"] = precision_of_variant(variant)  # also when every feature is cached
            ctx = LocalContext(
                spec,
                self._run_dataset(plan),
                cache=self.feature_cache(variant),
                embedder_factory=lambda: self.embedder(spec, variant),
                dataset_loader=self.dataset,
                module_factory=lambda: self.module(spec),
                progress=progress,
                settings=self.settings,
                precision=precision_of_variant(variant),
                runtime=feature_runtime(self.settings.embedder),
                inputs=self.inputs,
            )
            self.executions += 1
            with stage(f"protocol:{plan.protocol}"):  # the protocol's own work, net of nested stages
                metrics = get_protocol(plan.protocol).evaluate(ctx, plan.config, plan.seed)
            runtime_info.update(ctx.runtime_info)
            if ctx.feature_runtimes:  # cached features may come from another runtime: say so
                runtime_info["feature_runtimes"] = sorted(ctx.feature_runtimes)
            record.backbone_info = backbone_info(self._record_spec(spec, variant))
            record.metrics = dict(metrics)
            record.status = RunStatus.FINISHED
        except BobenchError as exc:
            record.fail_with(exc, RunStatus.CANCELLED if isinstance(exc, Cancelled) else RunStatus.FAILED)
            log.info(  # the run's own failure (bad data, unavailable weights): recorded, not a crash
                "run %s (%s/%s/%s) failed: %s",
                plan.run_key,
                plan.backbone,
                plan.dataset,
                plan.protocol,
                record.error,
            )
        except Exception as exc:  # a bug or a library failure: keep the battle going, keep the traceback
            record.fail_with(exc)
            log.error("run %s crashed:\n%s", plan.run_key, traceback.format_exc())
        finally:
            with self._cancel_lock:
                self._cancel_requested.discard(plan.run_key)
            self._runs_left[plan.backbone] -= 1
            self.inputs.end_run(plan.backbone, last=self._runs_left[plan.backbone] <= 0)
        record.finished_at = utc_now()
        record.duration_s = round(time.perf_counter() - t0, 3)
        record.environment = environment(
            {
                **runtime_info,
                **self._served(plan),
                "threads": self.threads,
            }
        )
        return record

    def _served(self, plan: RunPlan) -> dict[str, Any]:
        """What the record says served the run: the variant, and on Triton the model name
        (its version comes from the embedder's description when it embedded)."""
        info: dict[str, Any] = {"embedder_variant": plan.embedder_variant}
        if self.settings.embedder == "triton" and not plan.error:
            from bobench.backbones import get_spec
            from bobench.export.triton_repo import served_model_name

            try:
                info["served_model"] = served_model_name(get_spec(plan.backbone), plan.embedder_variant)
            except BobenchError:  # an unknown backbone already failed the run
                pass
        return info

    def close(self) -> None:
        self._close_embedder()
        self.inputs.clear()
        prepared, self._prepared = self._prepared, {}
        for embedder in prepared.values():
            embedder.close()
