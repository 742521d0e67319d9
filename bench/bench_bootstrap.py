"""Cost of uncertainty: a bootstrap CI per run, and rank intervals for a 10-backbone x 20-setting battle.

1. Per run: `bootstrap_mean_ci` over n test items (per-item correctness, 2000 resamples), the interval
   every probe/retrieval/OOD run records; printed in ms per run.
2. Per report: the rank-interval bootstrap (`bobench.analysis.uncertainty`, 1000 resamples of the
   whole z-score aggregation) on synthetic records, against one plain aggregation (settings, seed
   means, z-scores, task and overall scores) measured in the same run; printed as a ratio.
Run: python bench/bench_bootstrap.py [--items 5000] [--backbones 10] [--settings 20] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bobench.analysis import aggregate as agg
from bobench.analysis.uncertainty import rank_uncertainty, replicate_task_scores
from bobench.bootstrap_ci import bootstrap_mean_ci
from bobench.results import RunRecord


def best_of(fn, repeats: int = 5) -> float:
    """Fastest wall time of `repeats` calls, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def synthetic_records(backbones: int, settings: int, seed: int = 0) -> list[RunRecord]:
    """One finished run per (backbone, setting), 5 tasks, each value with a recorded 95 % CI."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(settings):
        for b in range(backbones):
            value = float(rng.uniform(0.3, 0.9))
            half = float(rng.uniform(0.01, 0.05))
            out.append(
                RunRecord(
                    run_key=f"s{s}b{b}",
                    backbone=f"backbone{b}",
                    dataset=f"ds{s}",
                    protocol="linear_probe",
                    protocol_version="1",
                    task=f"task{s % 5}",
                    config={},
                    seed=0,
                    status="finished",
                    metrics={"top1": value, "top1_ci_low": value - half, "top1_ci_high": value + half},
                    higher_is_better={"top1": True},
                    primary_metric="top1",
                )
            )
    return out


def plain_aggregation(records: list[RunRecord]) -> list[agg.Setting]:
    settings = agg.build_settings(agg.observations_from_records(records))
    agg.overall_scores(agg.task_scores(settings))
    return settings


def rank_intervals(settings: list[agg.Setting], resamples: int) -> None:
    reps = replicate_task_scores(settings, resamples, seed=0)
    rank_uncertainty(reps.overall(), reps.backbones, reps.backbones)
    for scores in reps.task_scores.values():
        present = [b for i, b in enumerate(reps.backbones) if not np.isnan(scores[:, i]).any()]
        rank_uncertainty(scores, reps.backbones, present)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--backbones", type=int, default=10)
    ap.add_argument("--settings", type=int, default=20)
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()

    correct = (np.random.default_rng(1).random(args.items) < 0.8).astype(np.float64)
    ci_s = best_of(lambda: bootstrap_mean_ci(correct, resamples=2000, seed=0))
    print(f"bootstrap CI per run: {ci_s * 1e3:.1f} ms ({args.items} test items, 2000 resamples)")

    records = synthetic_records(args.backbones, args.settings)
    plain_s = best_of(lambda: plain_aggregation(records))
    settings = plain_aggregation(records)
    ranks_s = best_of(lambda: rank_intervals(settings, args.resamples))
    print(
        f"rank intervals, {args.backbones} backbones x {args.settings} settings, {args.resamples} resamples: "
        f"{ranks_s * 1e3:.1f} ms; plain aggregation {plain_s * 1e3:.2f} ms; "
        f"ratio {ranks_s / plain_s:.1f}x"
    )


if __name__ == "__main__":
    main()
