"""Peak memory of one batch's forward pass: the kernel's RSS mark reset per batch, torch.cuda's peaks.

Used by the efficiency protocol (see its module docstring for the metric names and what they mean).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bobench.protocols.latency import whole_batch

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
MEMORY_STEMS = ("peak_rss_mb", "rss_delta_mb", "peak_gpu_allocated_mb", "peak_gpu_reserved_mb")


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


def is_cuda_torch(described: Mapping[str, Any]) -> bool:
    """Whether an embedder's description is a torch embedder on a CUDA device (GPU figures exist)."""
    return described.get("runtime") == "torch" and str(described.get("device", "")).startswith("cuda")


def batch_memory(embedder: Any, images: np.ndarray, described: Mapping[str, Any]) -> dict[str, Any]:
    """The `MEMORY_STEMS` figures of this batch size, from one forward pass after resetting the
    peak marks (see the efficiency protocol's docstring); None where unmeasurable."""
    b = images.shape[0]
    cuda = is_cuda_torch(described)
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset = reset_peak_rss()
    before_kb = read_memory_kb().get("VmRSS")
    with whole_batch([embedder], b):
        embedder.embed(images)
    peak_kb = read_memory_kb().get("VmHWM") if reset else None
    out: dict[str, Any] = {
        f"peak_rss_mb_b{b}": peak_kb / 1024 if peak_kb else None,
        f"rss_delta_mb_b{b}": (peak_kb - before_kb) / 1024 if peak_kb and before_kb else None,
        f"peak_gpu_allocated_mb_b{b}": None,
        f"peak_gpu_reserved_mb_b{b}": None,
    }
    if cuda:
        out[f"peak_gpu_allocated_mb_b{b}"] = torch.cuda.max_memory_allocated() / 2**20
        out[f"peak_gpu_reserved_mb_b{b}"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def max_over_batches(metrics: dict[str, Any], stem: str, batch_sizes: list[int]) -> float | None:
    """The largest non-null `{stem}_bN` over the batch sizes (the backbone's figure), or None."""
    values = [metrics[f"{stem}_b{b}"] for b in batch_sizes if metrics.get(f"{stem}_b{b}") is not None]
    return max(values) if values else None


def batch_memory_keys(b: int) -> list[str]:
    """The per-batch memory figures of batch size `b` (null together when the batch ran out of memory)."""
    return [f"{stem}_b{b}" for stem in MEMORY_STEMS]
