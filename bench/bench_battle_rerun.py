"""Battle re-run: wall time of a fully cached second run over the first run, same spec, same run.

The second run must reuse every finished run key and compute no features (target ratio <= 0.1).
Run: python bench/bench_battle_rerun.py [--backbones a,b] [--datasets lfw] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bobench.battle.executors.local import LocalExecutor
from bobench.battle.runner import run_battle
from bobench.battle.spec import parse_spec
from bobench.config import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="efficientnet_lite0,resnet18-random")
    parser.add_argument("--datasets", default="lfw")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    spec = parse_spec(
        {
            "name": "bench-rerun",
            "backbones": args.backbones.split(","),
            "datasets": args.datasets.split(","),
            "protocols": ["linear_probe", "knn", "fewshot"],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(cache_dir=str(Path(tmp) / "cache"), threads=args.threads)
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        first = run_battle(spec, out, settings, progress=False)
        first_s = time.perf_counter() - t0
        executor = LocalExecutor(settings)
        t0 = time.perf_counter()
        second = run_battle(spec, out, settings, executor=executor, progress=False)
        second_s = time.perf_counter() - t0
    ratio = second_s / first_s
    print(f"{len(first.records)} runs ({args.backbones} on {args.datasets}; linear_probe, knn, fewshot)")
    print(
        f"first run {first_s:.2f} s ({first.executed} executed), re-run {second_s:.3f} s "
        f"({second.executed} executed, {second.reused} reused, feature cache misses {executor.cache.misses})"
    )
    print(f"re-run / first run = {ratio:.4f} (target <= 0.1: {'met' if ratio <= 0.1 else 'NOT met'})")
    if second.executed or executor.cache.misses:
        raise SystemExit("the re-run executed runs or computed features")


if __name__ == "__main__":
    main()
