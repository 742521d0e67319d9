"""Probe solver: today's `logistic.py` against the one before the issue-13 solver changes, in one run.

Replays every probe fit the demo battle makes on the demo's own cached features: per (backbone,
dataset) the linear probe's sweep over the grid plus its refit (`select_and_refit`; the ood protocol
reuses that fit) and the few-shot protocol's draws (1 and 5 shots, 3 draws each, C chosen on k-shot
val, as `examples/offline-battle.yaml` asks). The baseline is `src/bobench/protocols/logistic.py` as
it was at `--baseline-rev` (default 4741fb3: before the row-space solve and the bounded intercept
Newton), read from git and imported beside today's module; the two are timed in alternating rounds
in one process, so the ratio is measured under the same load. Prints the seconds per round, the ratio,
and how often both solvers choose the same C and reach the same top-1 on the few-shot test items.

The features come from a feature cache filled by `make run` or `bench/bench_demo.py --keep`
(`--cache-dir`, default $BOBENCH_CACHE_DIR or ~/.cache/bobench); with none there, or without git
history (an exported tree), it says so and passes.

Run: python bench/bench_probe_solver.py [--cache-dir DIR] [--rounds 2] [--baseline-rev REV]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

# this folder: the demo's probe features
from bench_probe_fit import GRID, OPTIONS, _cached_features, demo_cache

from bobench.protocols import fewshot, linear_probe, logistic
from bobench.protocols.metrics import l2_normalize

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REV = "4741fb3"  # the last commit before a831b46 (row-space solve, bounded intercept Newton)
SHOTS, DRAWS = (1, 5), 3  # the demo spec's few-shot config; selection kshot_val (the protocol default)


def _module_at(rev: str) -> ModuleType | None:
    """`bobench.protocols.logistic` as it was at git revision `rev`, imported under another name."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:src/bobench/protocols/logistic.py"],
            cwd=ROOT, capture_output=True, check=True, text=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as out:
        out.write(source)
    spec = importlib.util.spec_from_file_location("bobench_logistic_baseline", out.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    os.unlink(out.name)
    return module


@contextlib.contextmanager
def _solver(module: ModuleType) -> Iterator[None]:
    """The probe protocols call `module.fit_logistic_grid` while inside."""
    saved = linear_probe.fit_logistic_grid, fewshot.fit_logistic_grid
    linear_probe.fit_logistic_grid = fewshot.fit_logistic_grid = module.fit_logistic_grid
    try:
        yield
    finally:
        linear_probe.fit_logistic_grid, fewshot.fit_logistic_grid = saved


def _replay(problems: dict, module: ModuleType) -> tuple[float, list[float], list[float]]:
    """Seconds for all the demo's probe fits with `module`'s solver; chosen Cs and few-shot top-1s."""
    chosen, top1 = [], []
    with _solver(module):
        t0 = time.perf_counter()
        for splits in problems.values():
            linear_probe._SELECTED.clear()  # time the fit, not the kept result
            fit = linear_probe.select_and_refit(*splits["train"], *splits["val"], np.asarray(GRID), OPTIONS)
            chosen.append(fit.chosen_C)
            for k in SHOTS:
                for r in range(DRAWS):
                    rng = np.random.default_rng([0, k, r])
                    hits, c, _ = fewshot.fewshot_draw(
                        splits, k, rng, np.asarray(GRID), "kshot_val", **OPTIONS
                    )
                    chosen.append(c)
                    top1.append(float(hits.mean()))
        return time.perf_counter() - t0, chosen, top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args = parser.parse_args()
    cache = demo_cache(args.cache_dir)
    feats = _cached_features(cache)
    problems = {
        (b, d): {
            s: (l2_normalize(feats[(b, d, s)][0]), feats[(b, d, s)][1]) for s in ("train", "val", "test")
        }
        for b, d, _ in sorted(feats)
        if all((b, d, s) in feats for s in ("train", "val", "test"))
    }
    if not problems:  # `make bench` on a fresh clone: nothing to time yet, say so and pass
        print(f"skipped: no cached demo probe features under {cache}/features (run `make run` first)")
        return
    baseline = _module_at(args.baseline_rev)
    if baseline is None:
        print(f"skipped: logistic.py at {args.baseline_rev} not readable from git under {ROOT}")
        return
    load_before = os.getloadavg()[0]
    now_s, before_s = [], []
    for _ in range(args.rounds):
        seconds, chosen_before, top1_before = _replay(problems, baseline)
        before_s.append(seconds)
        seconds, chosen_now, top1_now = _replay(problems, logistic)
        now_s.append(seconds)
    n_fits = len(problems) * (1 + len(SHOTS) * DRAWS)
    print(
        f"{len(problems)} (backbone, dataset) pairs, {n_fits} probe selections "
        f"(linear probe + {len(SHOTS) * DRAWS} few-shot draws each), grid of {len(GRID)}"
    )
    print(f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} (1 min), cpus {os.cpu_count()}")
    print(
        f"baseline logistic.py at {args.baseline_rev}: {' '.join(f'{s:.2f}' for s in before_s)} s per round"
    )
    print(f"today's logistic.py:          {' '.join(f'{s:.2f}' for s in now_s)} s per round")
    ratio = float(np.median(now_s) / np.median(before_s))
    print(f"today / baseline = {ratio:.3f} ({1 / ratio:.2f}x faster; median of rounds)")
    same_c = sum(a == b for a, b in zip(chosen_before, chosen_now, strict=True))
    gap = np.abs(np.asarray(top1_before) - np.asarray(top1_now))
    print(
        f"same chosen C in {same_c} of {len(chosen_now)} selections; few-shot test top-1 equal in "
        f"{int((gap == 0).sum())} of {gap.size} draws (largest difference {gap.max():.4f})"
    )


if __name__ == "__main__":
    main()
