"""Latency ratio of two backbones under a background CPU load: back to back (the old way) vs interleaved.

A CPU hog (bounded busy-loop subprocesses that switch on and off at seeded random times, so the
load comes and goes like other jobs on a shared machine) runs throughout. The ratio of the two
backbones' batch latency (median, the protocol's p50, and mean) is measured `--trials` times each way with the efficiency
protocol's own timing (`bobench.protocols.latency`): sequential = one backbone's whole budget,
then the other's; interleaved = round robin in blocks over the same window. Printed: each trial's
ratio and the relative change of the ratio between trials (max - min over min) for each way;
interleaved should be clearly more stable.
Run: python bench/bench_latency_fairness.py [--backbones A,B] [--trials N] [--hogs N] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from bobench.embed import make_embedder
from bobench.protocols.latency import Budget, measure_alone, measure_interleaved

HOG_BOUND_S = 300.0  # every hog ends by itself after this, whatever happens to the bench
HOG = """
import random, sys, time
rng = random.Random(int(sys.argv[1]))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    busy_until = time.monotonic() + rng.uniform(1.0, 4.0)
    while time.monotonic() < min(busy_until, end):
        pass
    time.sleep(min(rng.uniform(1.0, 4.0), max(0.0, end - time.monotonic())))
"""


def start_hogs(count: int, duration_s: float) -> list[subprocess.Popen]:
    """`count` busy-loop processes, each ending by itself after `duration_s`."""
    return [subprocess.Popen([sys.executable, "-c", HOG, str(i), str(duration_s)]) for i in range(count)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.terminate()
    for hog in hogs:
        try:
            hog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            hog.kill()
            hog.wait()


def ratios(times: dict[str, list[float]], a: str, b: str) -> tuple[float, float]:
    """(p50 ratio, mean ratio) of b over a."""
    return float(np.median(times[b]) / np.median(times[a])), float(np.mean(times[b]) / np.mean(times[a]))


def relative_change(ratios: list[float]) -> float:
    return (max(ratios) - min(ratios)) / min(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="efficientnet_lite0-random,resnet18-random")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=80, help="timed steps per backbone and measurement")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    a, b = args.backbones.split(",")
    budget = Budget(warmup_steps=10, timed_steps=args.steps)  # the protocol's blocks and re-warm-up
    with tempfile.TemporaryDirectory() as cache:
        embedders = {
            n: make_embedder("onnxruntime", n, batch_size=args.batch_size, threads=1, cache_dir=cache)
            for n in (a, b)
        }
        rng = np.random.default_rng(0)
        images = {
            n: rng.integers(
                0, 256, (args.batch_size, 3, e.spec.input_size, e.spec.input_size), dtype=np.uint8
            )
            for n, e in embedders.items()
        }
        steps = {n: (lambda e=e, x=images[n]: e.embed(x)) for n, e in embedders.items()}
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the hogs on the way out
        hogs = start_hogs(args.hogs, duration_s=HOG_BOUND_S)
        t0 = time.perf_counter()
        sequential, interleaved = [], []
        try:
            for _ in range(args.trials):
                sequential.append(ratios({n: measure_alone(s, budget) for n, s in steps.items()}, a, b))
                interleaved.append(ratios(measure_interleaved(steps, budget), a, b))
        finally:
            stop_hogs(hogs)
            for e in embedders.values():
                e.close()
    print(
        f"latency ratio {b} / {a} at batch {args.batch_size}, 1 thread each, {args.hogs} CPU hog(s) "
        f"switching on and off, {args.steps} timed steps per backbone, {time.perf_counter() - t0:.0f} s"
    )
    for stat, i in (("p50", 0), ("mean", 1)):
        change = {}
        for name, measured in (("sequential", sequential), ("interleaved", interleaved)):
            values = [r[i] for r in measured]
            change[name] = relative_change(values)
            print(
                f"{stat:>4} {name:>11}: ratios {', '.join(f'{r:.3f}' for r in values)}  "
                f"relative change {100 * change[name]:5.1f} %"
            )
        verdict = "more stable" if change["interleaved"] < change["sequential"] else "NOT more stable"
        print(f"{stat:>4}: interleaved is {verdict} than sequential in this run")


if __name__ == "__main__":
    main()
