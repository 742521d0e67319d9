"""Linear-probe C sweep: bobench's one-pass batched L-BFGS vs scikit-learn fitted once per C.

Both sides get the same L2-normalised features, the same C grid, the same stopping rule
(max-abs gradient of the mean objective ≤ tol, at most max_iter iterations) and the same thread
count, measured in the same run. Each side selects C on val, refits on train+val and scores test.

Features: `--features FILE.npz` (arrays x_train, y_train, x_val, y_val, x_test, y_test) when a cached
file exists, else a synthetic stand-in for backbone features — a Gaussian mixture in a 64-d latent
space pushed through a random ReLU layer to 1280-d (non-negative, correlated, like pooled CNN features).

    python bench/bench_linear_probe.py [--grid default|dinov2] [--threads 1,2] [--rounds 3] [--features FILE.npz]

The C grid is the protocol's own (`linear_probe.GRIDS`: the default 31 values over 1e-6..1e4, or
DINOv2's 45 over 1e-6..1e5).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

# Imported at the top, not inside the timed function: scikit-learn's OpenMP runtime must already be
# loaded when threadpool_limits applies, or its loss loops run unlimited (and slow on a busy machine).
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from bobench.protocols.linear_probe import GRIDS, fit_logistic_grid, select_C
from bobench.protocols.metrics import l2_normalize


def synthetic_features(n_train: int, n_val: int, n_test: int, dim: int, n_classes: int, seed: int) -> dict:
    """Train/val/test splits of a latent Gaussian mixture seen through a random ReLU layer."""
    rng = np.random.default_rng(seed)
    latent_dim = 64
    centers = rng.normal(size=(n_classes, latent_dim))
    projection = rng.normal(size=(latent_dim, dim)) / np.sqrt(latent_dim)
    out = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = rng.integers(0, n_classes, n)
        latent = 0.35 * centers[y] + rng.normal(size=(n, latent_dim))
        x = np.maximum(latent @ projection, 0.0) + 0.05 * rng.normal(size=(n, dim))
        out[f"x_{name}"], out[f"y_{name}"] = x.astype(np.float32), y.astype(np.int64)
    return out


def sklearn_sweep(
    x_tr, y_tr, x_va, y_va, x_te, y_te, grid, max_iter, tol
) -> tuple[float, float, float, float]:
    """(sweep seconds, total seconds, test top1, chosen C) of scikit-learn with one fit per C."""
    start = time.perf_counter()
    val_accuracy = [
        LogisticRegression(C=c, max_iter=max_iter, tol=tol).fit(x_tr, y_tr).score(x_va, y_va) for c in grid
    ]
    sweep_s = time.perf_counter() - start
    chosen = grid[select_C(grid, np.asarray(val_accuracy))]
    final = LogisticRegression(C=chosen, max_iter=max_iter, tol=tol)
    final.fit(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]))
    total_s = time.perf_counter() - start
    return sweep_s, total_s, float(final.score(x_te, y_te)), float(chosen)


def sklearn_refit_top1(x_tr, y_tr, x_va, y_va, x_te, y_te, C, max_iter, tol) -> float:
    """scikit-learn's test top1 refit on train+val at a given C (isolates solver from selection)."""
    final = LogisticRegression(C=C, max_iter=max_iter, tol=tol)
    final.fit(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]))
    return float(final.score(x_te, y_te))


def bobench_sweep(
    x_tr, y_tr, x_va, y_va, x_te, y_te, grid, max_iter, tol
) -> tuple[float, float, float, float]:
    """(sweep seconds, total seconds, test top1, chosen C) of bobench's batched grid fit."""
    start = time.perf_counter()
    fit = fit_logistic_grid(x_tr, y_tr, grid, max_iter=max_iter, tol=tol)
    val_accuracy = (fit.predict(x_va) == y_va[None, :]).mean(axis=1)
    sweep_s = time.perf_counter() - start
    chosen = grid[select_C(grid, val_accuracy)]
    final = fit_logistic_grid(
        np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), [chosen], max_iter=max_iter, tol=tol
    )
    total_s = time.perf_counter() - start
    return sweep_s, total_s, float((final.predict(x_te)[0] == y_te).mean()), float(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", help="npz with x_/y_ train/val/test arrays (default: synthetic)")
    parser.add_argument(
        "--grid", default="default", choices=sorted(GRIDS), help="the protocol's C grid preset"
    )
    parser.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated thread counts, each applied to both sides; the headline compares each side "
        "at its fastest count",
    )
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds (order swapped each round); medians reported",
    )
    args = parser.parse_args()

    data = (
        dict(np.load(args.features))
        if args.features
        else synthetic_features(5000, 1000, 2000, 1280, 10, seed=0)
    )
    x_tr, x_va, x_te = (l2_normalize(data[f"x_{s}"]) for s in ("train", "val", "test"))
    y_tr, y_va, y_te = (data[f"y_{s}"] for s in ("train", "val", "test"))
    grid = np.asarray(GRIDS[args.grid])
    thread_counts = [int(t) for t in str(args.threads).split(",")]
    split_args = (x_tr, y_tr, x_va, y_va, x_te, y_te, grid, args.max_iter, args.tol)
    print(
        f"features: train {x_tr.shape}, val {x_va.shape}, test {x_te.shape}; {len(grid)} C values; "
        f"threads {thread_counts}; max_iter {args.max_iter}, tol {args.tol}; {args.rounds} rounds each"
    )
    per_threads = {t: measure(t, split_args, args.rounds) for t in thread_counts}
    for t, (ours, theirs) in per_threads.items():
        print(
            f"{t} thread(s): bobench sweep {ours[0]:6.2f} s (with refit {ours[1]:.2f} s), sklearn sweep "
            f"{theirs[0]:6.2f} s (with refit {theirs[1]:.2f} s): {theirs[0] / ours[0]:.1f}x  (medians)"
        )
    # each side at the thread count where it is fastest on this machine: the fair headline
    t_ours = min(per_threads, key=lambda t: per_threads[t][0][0])
    t_theirs = min(per_threads, key=lambda t: per_threads[t][1][0])
    ours, theirs = per_threads[t_ours][0], per_threads[t_theirs][1]
    same_C = sklearn_refit_top1(x_tr, y_tr, x_va, y_va, x_te, y_te, ours[3], args.max_iter, args.tol)
    print(f"bobench batched L-BFGS : chosen C {ours[3]:.3g}, test top1 {100 * ours[2]:.2f}%")
    print(f"sklearn one fit per C  : chosen C {theirs[3]:.3g}, test top1 {100 * theirs[2]:.2f}%")
    print(
        f"sweep speed-up, each side at its fastest thread count (bobench {t_ours}, sklearn {t_theirs}): "
        f"{theirs[0] / ours[0]:.1f}x (target >= 10x); end-to-end {theirs[1] / ours[1]:.1f}x; "
        f"test top1 difference {100 * abs(ours[2] - theirs[2]):.2f} points (target <= 0.5)"
    )
    print(
        f"at the same C ({ours[3]:.3g}): sklearn test top1 {100 * same_C:.2f}%, "
        f"difference {100 * abs(ours[2] - same_C):.2f} points"
    )


def measure(threads: int, split_args: tuple, rounds: int) -> tuple[list[float], list[float]]:
    """Median (sweep s, sweep+refit s, test top1, chosen C) of both sides at `threads`, alternating
    which side goes first each round."""
    torch.set_num_threads(threads)
    ours_rounds, theirs_rounds = [], []
    with threadpool_limits(limits=threads):
        for round_index in range(rounds):
            sides = [(bobench_sweep, ours_rounds), (sklearn_sweep, theirs_rounds)]
            for sweep, results in sides if round_index % 2 == 0 else sides[::-1]:
                results.append(sweep(*split_args))
            print(
                f"  {threads} thread(s) round {round_index + 1}: bobench {ours_rounds[-1][0]:6.2f} s, "
                f"sklearn {theirs_rounds[-1][0]:6.2f} s, ratio {theirs_rounds[-1][0] / ours_rounds[-1][0]:5.1f}x"
            )
    ours = [float(np.median(column)) for column in zip(*ours_rounds, strict=True)]
    theirs = [float(np.median(column)) for column in zip(*theirs_rounds, strict=True)]
    return ours, theirs


if __name__ == "__main__":
    main()
