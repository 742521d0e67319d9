"""Probe fits of the demo: one torch thread vs torch's default, on the demo's own cached features.

Reads the train/val features of the demo battle's linear probes from a feature cache (a cache a
`make run` or `bench/bench_demo.py --keep` filled; default $BOBENCH_CACHE_DIR or ~/.cache/bobench),
and times `sweep_and_select` + refit (`select_and_refit`'s work) on each (backbone, dataset) with
the small-problem pinning on (`logistic.SINGLE_THREAD_ROWS`, one thread) and off (torch's thread
setting, `--threads`, default the core count), alternating rounds in one process. Prints the ratio,
the load, and whether both choose the same C. It also times the kept-result path of
`select_and_refit` (the ood protocol asking for the probe linear_probe just fitted).

Run: python bench/bench_probe_fit.py [--cache-dir DIR] [--rounds 2] [--threads N]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from bobench.protocols import linear_probe, logistic
from bobench.protocols.metrics import l2_normalize

GRID = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]  # the demo spec's probe grid
OPTIONS = {"max_iter": 1000, "tol": 1e-4}
DATASETS = ("fashion_mnist", "emoji_google")


def demo_cache(given: Path | None) -> Path:
    """The feature cache to read: `given`, else $BOBENCH_CACHE_DIR, else ~/.cache/bobench."""
    return given or Path(os.environ.get("BOBENCH_CACHE_DIR") or Path.home() / ".cache" / "bobench")


def _cached_features(cache: Path) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
    found = {}
    for path in glob.glob(str(cache / "features" / "*" / "*.npz")):
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("variant") or meta.get("dataset") not in DATASETS:
                continue
            found[(meta["backbone"], meta["dataset"], meta["split"])] = (z["features"], z["labels"])
    return found


def _fit_all(problems: list[tuple], pinned: bool) -> tuple[float, list[float]]:
    saved = logistic.SINGLE_THREAD_ROWS
    logistic.SINGLE_THREAD_ROWS = saved if pinned else 0
    try:
        t0 = time.perf_counter()
        chosen = []
        for x_tr, y_tr, x_va, y_va in problems:
            linear_probe._SELECTED.clear()  # time the fit, not the kept result
            chosen.append(
                linear_probe.select_and_refit(x_tr, y_tr, x_va, y_va, np.asarray(GRID), OPTIONS).chosen_C
            )
        return time.perf_counter() - t0, chosen
    finally:
        logistic.SINGLE_THREAD_ROWS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads when not pinned (0: cores)")
    args = parser.parse_args()
    cache = demo_cache(args.cache_dir)
    feats = _cached_features(cache)
    keys = sorted({(b, d) for b, d, _ in feats if (b, d, "train") in feats and (b, d, "val") in feats})
    if not keys:  # `make bench` on a fresh clone: nothing to time yet, say so and pass
        print(f"skipped: no cached demo probe features under {cache}/features (run `make run` first)")
        return
    problems = [
        (l2_normalize(feats[(b, d, "train")][0]), feats[(b, d, "train")][1],
         l2_normalize(feats[(b, d, "val")][0]), feats[(b, d, "val")][1])
        for b, d in keys
    ]  # fmt: skip
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    default_threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    pinned_s, free_s = [], []
    for _ in range(args.rounds):
        seconds, chosen_pinned = _fit_all(problems, pinned=True)
        pinned_s.append(seconds)
        seconds, chosen_free = _fit_all(problems, pinned=False)
        free_s.append(seconds)
    x_tr, y_tr, x_va, y_va = problems[0]
    linear_probe._SELECTED.clear()
    t0 = time.perf_counter()
    linear_probe.select_and_refit(x_tr, y_tr, x_va, y_va, np.asarray(GRID), OPTIONS)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    linear_probe.select_and_refit(x_tr, y_tr, x_va, y_va, np.asarray(GRID), OPTIONS)
    kept_s = time.perf_counter() - t0
    print(
        f"{len(problems)} probes ({len({b for b, _ in keys})} backbones x {', '.join(DATASETS)}), grid of {len(GRID)}"
    )
    print(f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} (1 min), cpus {os.cpu_count()}")
    print(f"one thread (pinned): {' '.join(f'{s:.2f}' for s in pinned_s)} s per round")
    print(f"{default_threads} threads (torch default): {' '.join(f'{s:.2f}' for s in free_s)} s per round")
    ratio = float(np.median(free_s) / np.median(pinned_s))
    print(f"{default_threads} threads / one thread = {ratio:.2f}x (median of rounds)")
    same = sum(a == b for a, b in zip(chosen_pinned, chosen_free, strict=True))
    print(f"same chosen C in {same} of {len(problems)} probes")
    print(
        f"kept result (ood after linear_probe): {1000 * kept_s:.2f} ms vs fit {first_s:.2f} s = {kept_s / first_s:.5f}"
    )


if __name__ == "__main__":
    main()
