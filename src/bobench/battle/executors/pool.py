"""A bounded pool of in-process executors for the Evaluator service.

Each LocalExecutor keeps one backbone's embedder warm and is not thread-safe, so the pool hands each
one to one run at a time; the number of executors bounds concurrent runs. Datasets are loaded and
validated once per process and shared by every executor and the planner.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import numpy as np
from prometheus_client import Counter, Histogram

from bobench.battle.executors.local import LocalExecutor
from bobench.config import Settings
from bobench.embed.base import Embedder
from bobench.errors import ResourceExhausted
from bobench.status_codes import LIMIT_PREFIX

EMBED_BATCH_SECONDS = Histogram(
    "bobench_evaluator_embed_batch_seconds",
    "Wall time of one embedding forward pass (one batch) in the evaluator.",
    ["backbone", "runtime"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EXECUTIONS = Counter(
    "bobench_evaluator_executions", "Runs the evaluator executed (not answered from the store)."
)


def check_images_per_dataset(dataset, max_images: int) -> None:
    """ResourceExhausted when `dataset` holds more than `max_images` images (max_images_per_dataset)."""
    if len(dataset) > max_images:
        raise ResourceExhausted(
            f"{LIMIT_PREFIX}dataset {dataset.name[:60]!r} has {len(dataset)} images; the limit is "
            f"max_images_per_dataset={max_images} (setting BOBENCH_MAX_IMAGES_PER_DATASET)"
        )


class SharedDatasets:
    """Load-and-validate-once dataset cache shared across threads (a lock per reference). A dataset
    of more than `max_images` images is refused (ResourceExhausted naming max_images_per_dataset)."""

    def __init__(self, max_images: int | None = None) -> None:
        self.max_images = max_images
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._datasets: dict[str, Any] = {}

    def load(self, ref: str | dict) -> Any:
        """The validated dataset of `ref`; raises what load_dataset/validate_dataset raise."""
        from bobench.data import load_dataset, validate_dataset

        key = json.dumps(ref, sort_keys=True)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._datasets:
                ds = load_dataset(ref)
                if self.max_images is not None:
                    check_images_per_dataset(ds, self.max_images)
                validate_dataset(ds)
                self._datasets[key] = ds
            return self._datasets[key]


class TimedEmbedder(Embedder):
    """Delegates to another embedder, recording each batch's latency in EMBED_BATCH_SECONDS."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner.spec, inner.batch_size)
        self.inner = inner
        self.runtime, self.device, self.precision = inner.runtime, inner.device, inner.precision
        self._histogram = EMBED_BATCH_SECONDS.labels(inner.spec.name, inner.runtime)

    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.inner._embed_batch(batch)
        finally:
            self._histogram.observe(time.perf_counter() - t0)

    def describe(self) -> dict:
        return self.inner.describe()

    def __getattr__(self, name: str):
        if name == "embed_stream" and hasattr(self.inner, "embed_stream"):
            return self._timed_stream  # only where the inner embedder streams (Triton)
        raise AttributeError(name)

    def _timed_stream(self, batches):
        """The inner embedder's stream (several batches in flight); with batches overlapping, each
        batch's recorded time is the wait since the previous answer, not its own round trip."""
        t0 = time.perf_counter()
        for features in self.inner.embed_stream(batches):
            now = time.perf_counter()
            self._histogram.observe(now - t0)
            t0 = now
            yield features

    def unwrap(self) -> Embedder:
        return self.inner.unwrap()

    def close(self) -> None:
        self.inner.close()


class PooledExecutor(LocalExecutor):
    """A LocalExecutor using the shared dataset cache, a timed embedder and a per-run batch size."""

    def __init__(self, settings: Settings, datasets: SharedDatasets, concurrent_runs: int = 1) -> None:
        super().__init__(settings, concurrent_runs)  # the pool's executors share the thread budget
        self._shared = datasets
        self.batch_size_override: int | None = None

    def dataset(self, ref: str | dict) -> Any:
        return self._shared.load(ref)

    def embedder(self, spec: Any, embedder_variant: str = "onnx") -> Embedder:
        emb = super().embedder(spec, embedder_variant)
        if not isinstance(emb, TimedEmbedder):
            emb = TimedEmbedder(emb)
            self._embedder = emb  # replaces the plain one for as long as this backbone stays loaded
        emb.batch_size = self.batch_size_override or self.settings.batch_size
        return emb

    def execute(self, plan, progress=None):
        EXECUTIONS.inc()
        return super().execute(plan, progress)


class ExecutorPool:
    """`size` PooledExecutors; `acquire()` waits (asynchronously) for a free one. The process's
    thread budget is split over them: each run gets `threads // size` (`bobench.threads`)."""

    def __init__(self, settings: Settings, size: int) -> None:
        if size < 1:
            from bobench.errors import InvalidArgument

            raise InvalidArgument(f"max concurrent runs must be >= 1, got {size}")
        self.settings = settings
        self.datasets = SharedDatasets(settings.max_images_per_dataset)
        self.size = size
        self._all = [PooledExecutor(settings, self.datasets, size) for _ in range(size)]
        self._free: asyncio.Queue[PooledExecutor] | None = None

    def _queue(self) -> asyncio.Queue[PooledExecutor]:
        if self._free is None:  # created on first use, inside the server's event loop
            self._free = asyncio.Queue()
            for ex in self._all:
                self._free.put_nowait(ex)
        return self._free

    async def acquire(self) -> PooledExecutor:
        return await self._queue().get()

    def release(self, executor: PooledExecutor) -> None:
        executor.batch_size_override = None
        self._queue().put_nowait(executor)

    def close(self) -> None:
        for ex in self._all:
            ex.close()
