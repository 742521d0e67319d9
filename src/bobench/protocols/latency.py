"""Latency timing for the efficiency protocol: one backbone alone, or several interleaved.

The budget is timm's `benchmark.py`: `warmup_steps` untimed calls (10 by default), then at least
`timed_steps` timed ones (40), continued until they sum to `min_time_s` (a fast model gets enough
samples for its tail) but never beyond `max_timed_steps`. Timed calls run in blocks of
`block_steps`. Each call is one forward pass of a whole batch, timed on its own (the embedders
return host arrays, so the work has finished on the device when the call returns).

Interleaved (`measure_interleaved`): the backbones of one battle that run on one host are timed in
round robin — a block of each in turn, the order rotated every round — so they share the same time
window and a background load slows all of them alike; their latency *ratios* stay stable where
back-to-back measurement attributes a load burst to whichever backbone was running. After a switch
the caches hold the other model, so each block starts with `block_warmup_steps` untimed calls
(1 by default; timing alone needs none).

Every call, untimed or timed, is followed by `on_step()` when given: the run's progress/cancel
check (`RunContext.progress`), so a cancelled run, a passed deadline or the evaluator's time limit
stops a long measurement at its next call instead of holding the evaluator's slot.

A percentile is reported only when enough samples back it: p`q` needs n >= 1 / (1 - q/100)
samples (p50: 2, p90: 10, p99: 100), so at least one sample lies at or beyond it; otherwise null.
`latency_block_spread_bN` = (slowest - fastest block median) / overall median: how much the
backbone's latency moved over its measurement window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument

PERCENTILES = (50, 90, 99)
Clock = Callable[[], float]
StepCheck = Callable[[], None]


def _no_check() -> None:
    """`on_step` when none is given: nothing to check."""


def min_samples_for(q: float) -> int:
    """Samples needed before percentile `q` (0 < q < 100) is reported: n >= 1 / (1 - q/100)."""
    return math.ceil(1 / (1 - q / 100) - 1e-9)


@dataclass(frozen=True)
class Budget:
    """How long one backbone is timed at one batch size (module docstring)."""

    warmup_steps: int = 10
    timed_steps: int = 40
    min_time_s: float = 0.0
    max_timed_steps: int = 1000
    block_steps: int = 10
    block_warmup_steps: int = 1

    def __post_init__(self) -> None:
        checks = (("warmup_steps", 0), ("timed_steps", 1), ("block_steps", 1), ("block_warmup_steps", 0))
        for name, minimum in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InvalidArgument(f"efficiency: {name!r} must be an integer >= {minimum}, got {value!r}")
        if isinstance(self.max_timed_steps, bool) or not isinstance(self.max_timed_steps, int):
            raise InvalidArgument(
                f"efficiency: 'max_timed_steps' must be an integer, got {self.max_timed_steps!r}"
            )
        if self.max_timed_steps < self.timed_steps:
            raise InvalidArgument(
                f"efficiency: 'max_timed_steps' ({self.max_timed_steps}) is below 'timed_steps' ({self.timed_steps})"
            )
        if not isinstance(self.min_time_s, int | float) or not 0 <= self.min_time_s < math.inf:
            raise InvalidArgument(f"efficiency: 'min_time_s' must be a number >= 0, got {self.min_time_s!r}")

    def next_block(self, steps: int) -> int:
        """Timed calls in the next block of a backbone that has `steps`: a full block, cut short
        where it would pass `timed_steps` (first) or `max_timed_steps`."""
        left = self.timed_steps - steps if steps < self.timed_steps else self.max_timed_steps - steps
        return max(0, min(self.block_steps, left))

    def done(self, steps: int, spent_s: float) -> bool:
        """Whether a backbone timed `steps` calls summing to `spent_s` seconds has its samples."""
        if steps >= self.max_timed_steps:
            return True
        return steps >= self.timed_steps and spent_s >= self.min_time_s


def latency_summary(times_ms: list[float], batch_size: int, block_steps: int = 0) -> dict[str, Any]:
    """Percentiles (linear interpolation, null when too few samples), mean, sample count, block
    spread (blocks of `block_steps`; null with fewer than two blocks) and throughput (images/s)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0 or not np.isfinite(t).all() or (t < 0).any():
        raise InvalidArgument(f"efficiency: need non-negative finite step times, got {times_ms!r}")
    out: dict[str, Any] = {}
    for q in PERCENTILES:
        backed = t.size >= min_samples_for(q)
        out[f"latency_ms_p{q}_b{batch_size}"] = float(np.percentile(t, q)) if backed else None
    out[f"latency_ms_mean_b{batch_size}"] = float(t.mean())
    out[f"latency_samples_b{batch_size}"] = int(t.size)
    out[f"latency_block_spread_b{batch_size}"] = _block_spread(t, block_steps)
    total_s = float(t.sum()) / 1000.0
    out[f"throughput_ips_b{batch_size}"] = batch_size * t.size / total_s if total_s > 0 else None
    return out


def _block_spread(t: np.ndarray, block_steps: int) -> float | None:
    if block_steps < 1 or t.size < 2 * block_steps:
        return None
    medians = [float(np.median(t[i : i + block_steps])) for i in range(0, t.size, block_steps)]
    overall = float(np.median(t))
    return (max(medians) - min(medians)) / overall if overall > 0 else None


def time_steps(
    step: Callable[[], Any],
    warmup_steps: int,
    timed_steps: int,
    clock: Clock = time.perf_counter,
    on_step: StepCheck | None = None,
) -> list[float]:
    """Run `step` `warmup_steps` times untimed, then `timed_steps` times; each timed call's ms."""
    _untimed(step, warmup_steps, on_step)
    return _timed_block(step, timed_steps, clock, on_step)


def _untimed(step: Callable[[], Any], n: int, on_step: StepCheck | None) -> None:
    on_step = on_step or _no_check
    for _ in range(n):
        step()
        on_step()


def _timed_block(
    step: Callable[[], Any], n: int, clock: Clock, on_step: StepCheck | None = None
) -> list[float]:
    on_step = on_step or _no_check
    times_ms = []
    for _ in range(n):
        start = clock()
        step()
        times_ms.append((clock() - start) * 1000.0)
        on_step()  # outside the timed span
    return times_ms


def measure_alone(
    step: Callable[[], Any],
    budget: Budget,
    clock: Clock = time.perf_counter,
    on_step: StepCheck | None = None,
) -> list[float]:
    """Time one backbone's `step` by `budget` (warm-up, then blocks until `budget.done`)."""
    return measure_interleaved({"alone": step}, budget, clock, on_step)["alone"]


def measure_interleaved(
    steps: Mapping[str, Callable[[], Any]],
    budget: Budget,
    clock: Clock = time.perf_counter,
    on_step: StepCheck | None = None,
) -> dict[str, list[float]]:
    """Time several backbones' `steps` in round robin (module docstring); each one's ms per call.

    Every backbone is warmed up first; then each round runs one block of every backbone not yet
    done, starting one further along the list each round; with more than one backbone each block
    starts with `budget.block_warmup_steps` untimed calls. `on_step()` follows every call (module
    docstring); what it raises (Cancelled, DeadlineExceeded) ends the measurement. Raises
    InvalidArgument for no steps.
    """
    if not steps:
        raise InvalidArgument("efficiency: nothing to measure")
    names = list(steps)
    for name in names:
        _untimed(steps[name], budget.warmup_steps, on_step)
    times: dict[str, list[float]] = {name: [] for name in names}
    spent_s = dict.fromkeys(names, 0.0)
    rewarm = budget.block_warmup_steps if len(names) > 1 else 0
    for round_index in range(budget.max_timed_steps):
        pending = [n for n in names if not budget.done(len(times[n]), spent_s[n])]
        if not pending:
            break
        shift = round_index % len(pending)
        for name in pending[shift:] + pending[:shift]:
            block = budget.next_block(len(times[name]))
            _untimed(steps[name], rewarm, on_step)
            block_ms = _timed_block(steps[name], block, clock, on_step)
            times[name].extend(block_ms)
            spent_s[name] += sum(block_ms) / 1000.0
    return times


@contextmanager
def whole_batch(embedders: Iterable[Any], batch_size: int) -> Iterator[None]:
    """While open, one `embed` call of `batch_size` images is one forward pass for each embedder;
    their batch sizes are restored on exit."""
    embedders = list(embedders)
    saved = [e.batch_size for e in embedders]
    for e in embedders:
        e.batch_size = max(e.batch_size, batch_size)
    try:
        yield
    finally:
        for e, size in zip(embedders, saved, strict=True):
            e.batch_size = size
