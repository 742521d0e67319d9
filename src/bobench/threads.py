"""One thread budget for the process: ONNX Runtime, torch, OpenMP and BLAS get the same thread count.

Each of these libraries defaults to "all cores" on its own; a process that uses two of them in turn
(ONNX Runtime embeds, torch fits the probes, numpy/scikit-learn score them) otherwise runs several
thread pools of that size, and the pools fight over the cores. `apply_thread_budget(n)` is called
once at the process edge (the in-process executor that consumes the `threads` setting; in the
evaluator, its pool of executors, which passes its size): it resolves `n` (0 = every physical core this process may run on) and
applies it to

- torch's intra-op threads (and its inter-op threads: 1, like ONNX Runtime's, where torch still
  lets them be set), when torch is already imported; else through the environment, which torch reads
  when it starts;
- OpenMP, MKL and OpenBLAS: `OMP_NUM_THREADS`, `MKL_NUM_THREADS`, `OPENBLAS_NUM_THREADS` for
  libraries loaded later and child processes, and `threadpoolctl` for those already loaded;
- every ONNX Runtime session made without an explicit thread count (`session_threads`).

A process that runs several runs at once (the evaluator with `max_concurrent_runs` k) splits the
budget: `apply_thread_budget(n, concurrent_runs=k)` gives each run `n // k` threads (at least 1) —
its ORT sessions, its torch thread, and the process's OpenMP/BLAS pools — so k busy runs use the n
cores instead of k x n threads fighting over them. One run alone then leaves cores idle; that is the
price of a bound that holds when all k are busy.

Applying the budget never imports torch, so a process without torch (the scheduler) pays nothing.

`torch_threads(k)` changes torch's intra-op threads for a block and restores them (the small-fit
trick of `protocols.logistic`). torch with OpenMP keeps the thread count per OS thread, but a
change also becomes the default of threads that start torch work during the block, so a run on
another thread of an evaluator that runs several at once could inherit the block's setting. Two
guards keep that from leaking: changes and restores are serialised by one lock, and every run
re-asserts the budget on its own thread when it starts (`hold_thread_budget`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SYS_CPU = Path("/sys/devices/system/cpu")  # Linux: which core and package each CPU belongs to


@dataclass(frozen=True)
class ThreadBudget:
    """The applied budget: `threads` >= 1 resolved from `requested` (0 = every available core),
    shared by `concurrent_runs` runs, `per_run` threads each."""

    requested: int
    threads: int
    torch_applied: bool  # torch was imported and took the setting (else it reads ENV_VARS at start)
    limited_libraries: tuple[str, ...]  # the loaded OpenMP/BLAS libraries threadpoolctl limited
    concurrent_runs: int  # runs the process executes at once
    per_run: int  # each run's threads: threads // concurrent_runs, at least 1


_budget: ThreadBudget | None = None
_lock = threading.Lock()


def available_cores() -> int:
    """Physical cores this process may run on: the CPUs of its affinity, hyper-threads of one core
    counted once (as torch and ONNX Runtime count their defaults); the logical CPU count where the
    platform does not say which core a CPU belongs to."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:
        return os.cpu_count() or 1
    cores: set[tuple[str, ...]] = set()
    for cpu in cpus:
        topology = SYS_CPU / f"cpu{cpu}" / "topology"
        try:
            cores.add(
                tuple((topology / name).read_text().strip() for name in ("physical_package_id", "core_id"))
            )
        except OSError:
            return len(cpus)
    return len(cores)


def resolve_threads(requested: int) -> int:
    """`requested` threads, or every available physical core for 0."""
    return requested if requested > 0 else available_cores()


def per_run_threads(threads: int, concurrent_runs: int) -> int:
    """Each of `concurrent_runs` runs' share of `threads`: the integer quotient, at least 1."""
    return max(1, threads // max(1, concurrent_runs))


def apply_thread_budget(requested: int = 0, concurrent_runs: int = 1) -> ThreadBudget:
    """Apply one thread count to torch, OpenMP, BLAS and later ONNX Runtime sessions (module
    docstring): the process's `requested` threads split over `concurrent_runs` runs; returns the
    budget. Applying the budget already in force does nothing; another one replaces it (logged)."""
    global _budget
    threads = resolve_threads(requested)
    per_run = per_run_threads(threads, concurrent_runs)
    with _lock:
        if _budget is not None and (_budget.threads, _budget.per_run) == (threads, per_run):
            return _budget
        if _budget is not None:
            log.info("thread budget changes from %d to %d threads per run", _budget.per_run, per_run)
        for name in ENV_VARS:
            os.environ[name] = str(per_run)
        _budget = ThreadBudget(
            requested=requested,
            threads=threads,
            torch_applied=_apply_to_torch(per_run),
            limited_libraries=_limit_loaded_libraries(per_run),
            concurrent_runs=max(1, concurrent_runs),
            per_run=per_run,
        )
    log.debug("thread budget: %s", _budget)
    return _budget


def current_budget() -> ThreadBudget | None:
    """The budget applied in this process, or None before `apply_thread_budget`."""
    return _budget


def session_threads(threads: int = 0) -> int:
    """Intra-op threads for an ONNX Runtime session: `threads` when given, else one run's share of
    the process budget, else 0 (ONNX Runtime's own default) when no budget was applied."""
    if threads > 0:
        return threads
    return _budget.per_run if _budget is not None else 0


def hold_thread_budget() -> None:
    """Re-assert a run's share of the budget as torch's threads on the calling thread (a run's first
    step): a thread that started torch work while another was inside `torch_threads` took that
    block's setting."""
    if _budget is None or "torch" not in sys.modules:
        return
    import torch

    with _lock:
        if torch.get_num_threads() != _budget.per_run:
            torch.set_num_threads(_budget.per_run)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for the block (None: unchanged), then restored to
    the calling thread's previous value; changes are serialised (module docstring)."""
    import torch

    with _lock:
        before = torch.get_num_threads()
        change = threads is not None and threads != before
        if change:
            torch.set_num_threads(threads)
    if not change:
        yield
        return
    try:
        yield
    finally:
        with _lock:
            torch.set_num_threads(before)


def _apply_to_torch(threads: int) -> bool:
    if "torch" not in sys.modules:  # torch reads OMP_NUM_THREADS when it starts
        return False
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # torch allows it once, before any inter-op work; intra-op is what matters
        log.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())
    return True


def _limit_loaded_libraries(threads: int) -> tuple[str, ...]:
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:  # only the environment variables then (libraries loaded later read them)
        return ()
    threadpool_limits(limits=threads)  # not a context: it stays in force
    return tuple(sorted({str(info.get("internal_api")) for info in threadpool_info()}))
