"""Efficiency: parameters, FLOPs, latency / throughput per batch size and peak memory of a backbone.

Latency follows timm's `benchmark.py` budget (`bobench.protocols.latency`): a seeded random uint8
batch at the spec's input size, `warmup_steps` (10) untimed calls, then at least `timed_steps` (40)
timed ones, extended to `min_time_s` of timed work, at most `max_timed_steps`. Reported per batch
size N: `latency_ms_p50_bN` / `_p90_` / `_p99_` (each null unless enough samples back it),
`latency_ms_mean_bN`, `latency_samples_bN`, `latency_block_spread_bN` and `throughput_ips_bN`
(= N x samples / summed timed time). The figures are for the run's embedder (ONNX Runtime by
default); runtime, device, precision and thread count are recorded with them. A batch size that
runs out of memory gets null figures.

Fair on a shared machine: a battle runner that executes several efficiency runs of one battle on
one host measures their backbones together, interleaved (`measure_together`), and hands each run
its step times (`handed_latency`); `evaluate` then uses them (`measurement: "interleaved"`,
`interleaved_with` names the group) instead of timing alone (`measurement: "alone"`). Parameters,
FLOPs and memory are always measured by the run itself.

The embedder timed is the one the battle's other runs of the backbone use (one ONNX Runtime
session per backbone, `battle.executors.local.LocalExecutor`), so it may already have embedded
features, or not: either way the `warmup_steps` untimed calls (and `block_warmup_steps` after each
switch) come before any timed one, so a session's first-call costs (memory arena, kernel
selection) never reach the figures, and a warm session times as a fresh one would after its warm-up.

Parameters are counted on the torch module (`params_source: "torch"`); for a backbone without one,
on the initializers of the embedder's ONNX graph when it exposes the file (`"onnx_initializers"`: every
initializer counts, including a composed graph's few preprocessing constants; weights folded into
Constant nodes do not), else the spec's catalog figure (`"spec"`), else
null. FLOPs are counted per image at batch 1 by
`torch.utils.flop_counter.FlopCounterMode`, which counts FLOPs (a multiply-add = 2) of matrix
multiplications and convolutions only; `flops_counter` and `flops_unit` are recorded. No torch
module, or a count of 0 (no op the counter knows), gives null — never 0.

Memory is this backbone's, per batch size, from one forward pass of that batch after the timing:
the kernel's peak-RSS mark is reset first (/proc/self/clear_refs), so `peak_rss_mb_bN` is the
process's peak resident set during that pass and `rss_delta_mb_bN` its rise over the resident set
just before it (the batch's working memory). `peak_rss_mb` / `rss_delta_mb` are their maxima over
the batch sizes. Where the mark cannot be reset (`peak_rss_reset` false) they are null rather than
the process's lifetime high-water mark. On a CUDA torch embedder, `peak_gpu_allocated_mb_bN` /
`peak_gpu_reserved_mb_bN` come from torch.cuda's peak statistics reset before each batch's pass
(and `peak_gpu_*_mb` are their maxima). Not ranked: the analysis reads these as cost columns.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from bobench.embed.base import unwrap
from bobench.errors import FailedPrecondition
from bobench.protocols.base import RunContext, get_protocol
from bobench.protocols.latency import (
    Budget,
    StepCheck,
    latency_summary,
    measure_alone,
    measure_interleaved,
    whole_batch,
)
from bobench.protocols.memory import (
    MEMORY_STEMS,
    batch_memory,
    batch_memory_keys,
    max_over_batches,
    reset_peak_rss,
)
from bobench.protocols.metrics import positive_ints
from bobench.protocols.options import BUDGET_KEYS
from bobench.threads import resolve_threads

log = logging.getLogger(__name__)

FLOPS_COUNTER = "torch.utils.flop_counter.FlopCounterMode"


def count_flops(module: Any, input_size: int) -> int | None:
    """FLOPs of one forward pass of `module` on one uint8 image (FlopCounterMode); None when it counts 0."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    image = torch.zeros(1, 3, input_size, input_size, dtype=torch.uint8, device=device)
    counter = FlopCounterMode(display=False)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), counter:
            module(image)
    finally:
        module.train(was_training)
    total = int(counter.get_total_flops())
    return total if total > 0 else None


def count_onnx_parameters(path: str | os.PathLike) -> int | None:
    """Elements in the initializers of an ONNX graph (its weights), or None if there are none."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    total = sum(int(np.prod(init.dims)) if init.dims else 1 for init in model.graph.initializer)
    return total or None


def _module_or_none(ctx: RunContext) -> Any:
    try:
        return ctx.backbone_module()
    except FailedPrecondition as exc:
        log.info("efficiency: no torch module (%s); FLOPs are null", exc)
        return None


def _params(ctx: RunContext, module: Any, embedder: Any) -> tuple[int | None, str | None]:
    if module is not None:
        return int(sum(p.numel() for p in module.parameters())), "torch"
    onnx_path = getattr(unwrap(embedder), "onnx_path", None)
    counted = count_onnx_parameters(onnx_path) if onnx_path else None
    if counted:
        return counted, "onnx_initializers"
    if ctx.spec.num_params:
        return int(ctx.spec.num_params), "spec"
    return None, None


def _threads(ctx: RunContext, described: dict[str, Any]) -> int:
    if described.get("threads"):
        return int(described["threads"])
    return resolve_threads(int(getattr(getattr(ctx, "settings", None), "threads", 0) or 0))


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def _null_latency(batch_size: int) -> dict[str, Any]:
    """Every latency figure of a batch size that ran out of memory: null."""
    return dict.fromkeys(latency_summary([1.0], batch_size))


def _images(seed: int, batch_sizes: list[int], size: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {b: rng.integers(0, 256, size=(b, 3, size, size), dtype=np.uint8) for b in batch_sizes}


def _time_alone(
    embedder: Any, images: np.ndarray, budget: Budget, on_step: StepCheck | None = None
) -> list[float] | None:
    """Step times of one backbone at one batch size; None when the batch runs out of memory.
    `on_step` is the run's progress/cancel check, called after every call."""
    with whole_batch([embedder], images.shape[0]):
        try:
            return measure_alone(lambda: embedder.embed(images), budget, on_step=on_step)
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            log.warning("efficiency: batch %d ran out of memory; its figures are null", images.shape[0])
            return None


@dataclass(frozen=True)
class HandedLatency:
    """Step times (ms) per batch size measured for one run by a battle-level step; None = out of memory."""

    times_ms: dict[int, list[float] | None]
    interleaved_with: tuple[str, ...]


_HANDED: dict[str, HandedLatency] = {}


def handoff_key(spec_digest: str, config: dict[str, Any] | None, seed: int) -> str:
    """Which run a handed measurement belongs to: backbone digest, resolved config and seed."""
    resolved = get_protocol("efficiency").resolve_config(config)
    return json.dumps([spec_digest, resolved, seed], sort_keys=True)


@contextmanager
def handed_latency(measured: Mapping[str, HandedLatency]) -> Iterator[None]:
    """While open, `evaluate` takes the run's step times from `measured` (by `handoff_key`)
    instead of timing alone (runs of one backbone on several datasets share them); all are
    dropped on exit, so they never outlive the battle that measured them."""
    _HANDED.update(measured)
    try:
        yield
    finally:
        for key in measured:
            _HANDED.pop(key, None)


def measure_together(
    embedders: Mapping[str, Any], config: dict[str, Any] | None, seed: int
) -> dict[str, HandedLatency]:
    """Time several backbones' embedders interleaved (`latency.measure_interleaved`) at each batch
    size of `config`; {name: HandedLatency}. Names are what the records call the backbones.

    A batch size at which one of them runs out of memory is measured alone for each instead.
    Raises InvalidArgument for a bad config.
    """
    config = get_protocol("efficiency").resolve_config(config)
    batch_sizes = positive_ints(config["batch_sizes"], "efficiency: 'batch_sizes'")
    budget = _budget(config)
    images = {n: _images(seed, batch_sizes, e.spec.input_size) for n, e in embedders.items()}
    times: dict[str, dict[int, list[float] | None]] = {n: {} for n in embedders}
    for b in batch_sizes:
        steps = {n: (lambda e=e, x=images[n][b]: e.embed(x)) for n, e in embedders.items()}
        try:
            with whole_batch(embedders.values(), b):
                for name, measured in measure_interleaved(steps, budget).items():
                    times[name][b] = measured
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            for name, embedder in embedders.items():
                times[name][b] = _time_alone(embedder, images[name][b], budget)
    names = tuple(embedders)
    return {n: HandedLatency(times[n], tuple(o for o in names if o != n)) for n in names}


def _budget(config: dict[str, Any]) -> Budget:
    return Budget(**{k: config[k] for k in BUDGET_KEYS})


def _latency_metrics(
    embedder: Any,
    images: dict[int, np.ndarray],
    budget: Budget,
    handed: HandedLatency | None,
    on_step: StepCheck | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "measurement": "interleaved" if handed else "alone",
        "interleaved_with": ",".join(handed.interleaved_with) if handed else None,
    }
    for b, batch in images.items():
        times = handed.times_ms.get(b) if handed else _time_alone(embedder, batch, budget, on_step)
        out.update(latency_summary(times, b, budget.block_steps) if times else _null_latency(b))
    return out


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Measure the backbone (module docstring). `seed` seeds the random input images.

    Raises InvalidArgument for a bad config (batch sizes, step counts, minimum time).
    """
    config = get_protocol("efficiency").resolve_config(config)
    batch_sizes = positive_ints(config["batch_sizes"], "efficiency: 'batch_sizes'")
    budget = _budget(config)
    embedder = ctx.embedder()
    described = dict(embedder.describe())
    size = ctx.spec.input_size
    module = _module_or_none(ctx)
    params, params_source = _params(ctx, module, embedder)
    flops = count_flops(module, size) if module is not None and config["flops"] else None
    del module  # the timed figures are for the embedder; free the module's memory first
    metrics: dict[str, Any] = {
        "params": params,
        "params_source": params_source,
        "flops": flops,
        "flops_counter": FLOPS_COUNTER if flops is not None else None,
        "flops_unit": "FLOPs",
        "flops_batch_size": 1,
        "runtime": described.get("runtime", getattr(embedder, "runtime", "unknown")),
        "device": described.get("device", getattr(embedder, "device", "unknown")),
        "precision": described.get("precision", getattr(embedder, "precision", "unknown")),
        "threads": _threads(ctx, described),
        "input_size": size,
        "batch_sizes": batch_sizes,
        **{k: config[k] for k in BUDGET_KEYS},
    }
    images = _images(seed, batch_sizes, size)
    handed = _HANDED.get(handoff_key(ctx.spec.digest(), config, seed))
    phase = "efficiency: latency" + (" (interleaved)" if handed else "")
    ctx.progress(0, 2, phase)
    metrics.update(_latency_metrics(embedder, images, budget, handed, lambda: ctx.progress(0, 2, phase)))
    ctx.progress(1, 2, "efficiency: memory")
    metrics["peak_rss_reset"] = reset_peak_rss()
    for b in batch_sizes:
        ctx.progress(1, 2, "efficiency: memory")  # a cancelled run stops before the next forward pass
        if metrics[f"latency_ms_mean_b{b}"] is None:  # ran out of memory while timing
            metrics.update(dict.fromkeys(batch_memory_keys(b)))
            continue
        metrics.update(batch_memory(embedder, images[b], described))
    for stem in MEMORY_STEMS:
        metrics[stem] = max_over_batches(metrics, stem, batch_sizes)
    ctx.progress(2, 2, "efficiency: done")
    return metrics
