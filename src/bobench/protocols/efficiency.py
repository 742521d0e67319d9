"""Efficiency: parameters, FLOPs, latency / throughput per batch size and peak memory of a backbone.

Latency follows timm's `benchmark.py`: a seeded random uint8 batch at the spec's input size is made
once, `warmup_steps` untimed calls are run, then each of `timed_steps` calls is timed on its own
(the embedders return host arrays, so every call has finished on the device when it returns).
Reported per batch size N: `latency_ms_p50_bN`, `latency_ms_p90_bN`, `latency_ms_p99_bN`,
`latency_ms_mean_bN` and `throughput_ips_bN` (= N x timed steps / summed timed wall time). The
figures are for the run's embedder (ONNX Runtime by default), and the runtime, device, precision and
thread count are recorded with them. A batch size that runs out of memory gets null figures.

Parameters are counted on the torch module (`params_source: "torch"`); for a backbone without one,
on the initializers of the embedder's ONNX graph when it exposes the file (`"onnx_initializers"`: every
initializer counts, including a composed graph's few preprocessing constants; weights folded into
Constant nodes do not), else the spec's catalog figure (`"spec"`), else
null. FLOPs are counted per image at batch 1 by
`torch.utils.flop_counter.FlopCounterMode`, which counts FLOPs (a multiply-add = 2) of matrix
multiplications and convolutions only; `flops_counter` and `flops_unit` are recorded. No torch
module, or a count of 0 (no op the counter knows), gives null — never 0.

Memory on CPU comes from /proc/self/status: `peak_rss_mb` is the process's peak resident set during
the measurement (the kernel's high-water mark, reset first where /proc/self/clear_refs allows it;
`peak_rss_reset` says whether it was), `rss_delta_mb` = peak - resident set before. On a CUDA torch
embedder, `peak_gpu_allocated_mb` / `peak_gpu_reserved_mb` come from torch.cuda's peak statistics.
Not ranked: the analysis reads these as cost columns.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bobench.embed.base import unwrap
from bobench.errors import FailedPrecondition, InvalidArgument
from bobench.protocols.base import Protocol, RunContext, register_protocol
from bobench.protocols.metrics import positive_ints

log = logging.getLogger(__name__)

FLOPS_COUNTER = "torch.utils.flop_counter.FlopCounterMode"
_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def latency_summary(times_ms: list[float], batch_size: int) -> dict[str, float]:
    """p50/p90/p99/mean latency (ms, linear-interpolated percentiles) and throughput (images/s)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0 or not np.isfinite(t).all() or (t < 0).any():
        raise InvalidArgument(f"efficiency: need non-negative finite step times, got {times_ms!r}")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    total_s = float(t.sum()) / 1000.0
    return {
        f"latency_ms_p50_b{batch_size}": float(p50),
        f"latency_ms_p90_b{batch_size}": float(p90),
        f"latency_ms_p99_b{batch_size}": float(p99),
        f"latency_ms_mean_b{batch_size}": float(t.mean()),
        f"throughput_ips_b{batch_size}": batch_size * t.size / total_s if total_s > 0 else None,
    }


def time_steps(
    step: Callable[[], Any],
    warmup_steps: int,
    timed_steps: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Run `step` `warmup_steps` times untimed, then `timed_steps` times; each timed call's ms."""
    for _ in range(warmup_steps):
        step()
    times_ms = []
    for _ in range(timed_steps):
        start = clock()
        step()
        times_ms.append((clock() - start) * 1000.0)
    return times_ms


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


def read_memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of this process in kB; empty where /proc is absent."""
    out: dict[str, int] = {}
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux ≥ 4.0). Returns whether it worked."""
    try:
        _PROC_CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


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


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def _measure_batch(embedder: Any, images: np.ndarray, warmup_steps: int, timed_steps: int) -> dict[str, Any]:
    batch_size = images.shape[0]
    saved = embedder.batch_size
    embedder.batch_size = max(saved, batch_size)  # one call = one forward pass of the whole batch
    try:
        times_ms = time_steps(lambda: embedder.embed(images), warmup_steps, timed_steps)
    except (RuntimeError, MemoryError) as exc:
        if not _is_out_of_memory(exc):
            raise
        log.warning("efficiency: batch %d ran out of memory; its figures are null", batch_size)
        names = [f"latency_ms_{stat}_b{batch_size}" for stat in ("p50", "p90", "p99", "mean")]
        return dict.fromkeys([*names, f"throughput_ips_b{batch_size}"])
    finally:
        embedder.batch_size = saved
    return latency_summary(times_ms, batch_size)


def _threads(ctx: RunContext, described: dict[str, Any]) -> int:
    if described.get("threads"):
        return int(described["threads"])
    configured = getattr(getattr(ctx, "settings", None), "threads", 0)
    return int(configured) if configured else len(os.sched_getaffinity(0))


def _gpu_memory(described: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"peak_gpu_allocated_mb": None, "peak_gpu_reserved_mb": None}
    if described.get("runtime") == "torch" and str(described.get("device", "")).startswith("cuda"):
        import torch

        out["peak_gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def _steps(config: dict[str, Any], key: str, minimum: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"efficiency: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Measure the backbone (module docstring). `seed` seeds the random input images.

    Raises InvalidArgument for a bad config (batch sizes, step counts).
    """
    config = PROTOCOL.resolve_config(config)
    batch_sizes = positive_ints(config["batch_sizes"], "efficiency: 'batch_sizes'")
    warmup_steps, timed_steps = _steps(config, "warmup_steps", 0), _steps(config, "timed_steps", 1)
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
        "warmup_steps": warmup_steps,
        "timed_steps": timed_steps,
    }
    if described.get("runtime") == "torch" and str(described.get("device", "")).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    before_kb = read_memory_kb()
    metrics["peak_rss_reset"] = reset_peak_rss()
    rng = np.random.default_rng(seed)
    for i, batch_size in enumerate(batch_sizes):
        ctx.progress(i, len(batch_sizes), f"efficiency: batch {batch_size}")
        images = rng.integers(0, 256, size=(batch_size, 3, size, size), dtype=np.uint8)
        metrics.update(_measure_batch(embedder, images, warmup_steps, timed_steps))
    after_kb = read_memory_kb()
    peak_kb = after_kb.get("VmHWM")
    metrics["peak_rss_mb"] = peak_kb / 1024 if peak_kb else None
    metrics["rss_delta_mb"] = (
        (peak_kb - before_kb["VmRSS"]) / 1024 if peak_kb and "VmRSS" in before_kb else None
    )
    metrics.update(_gpu_memory(described))
    ctx.progress(len(batch_sizes), len(batch_sizes), "efficiency: done")
    return metrics


PROTOCOL = register_protocol(
    Protocol(
        name="efficiency",
        version="1",
        task="efficiency",
        evaluate=evaluate,
        seeded=False,  # deterministic: once per split seed
        defaults={"batch_sizes": [1, 8, 32], "warmup_steps": 3, "timed_steps": 10, "flops": True},
        primary_metric="latency_ms_p50_b1",
        higher_is_better={
            "latency_ms_p50_b1": False,
            "latency_ms_p90_b1": False,
            "latency_ms_p99_b1": False,
            "throughput_ips_b1": True,
            "params": False,
            "flops": False,
            "peak_rss_mb": False,
        },
        description="Params, FLOPs (FlopCounterMode), latency percentiles and throughput per batch size, peak memory.",
        needs_features=False,
    )
)
