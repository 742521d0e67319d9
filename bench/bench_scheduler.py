"""Scheduler overhead at the paper's scale: plan + dispatch a 1,500-run battle, then a 15,000-run one,
against a no-op executor and a LocalStore on local disk (fsync off: we measure the scheduler, not the
disk). Each scale runs in its own subprocess so peak RSS is its own. Prints CPU seconds, wall seconds,
peak memory and the 15k/1.5k ratios (linear growth gives ~10x).

    python bench/bench_scheduler.py            # both scales
    python bench/bench_scheduler.py --runs 1500 --json   # one scale (what the parent calls)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

DATASETS, PROTOCOLS = 20, ("knn", "linear_probe", "retrieval")


def one_scale(runs: int) -> dict:
    from bobench.backbones import BackboneSpec, register_spec
    from bobench.battle.executors.base import Executor
    from bobench.battle.plan import plan_battle
    from bobench.battle.scheduler import Scheduler
    from bobench.battle.spec import parse_spec
    from bobench.protocols import get_protocol
    from bobench.store import LocalStore

    for name in PROTOCOLS:  # import the protocol modules (and their libraries) before timing
        get_protocol(name)
    n_backbones = runs // (DATASETS * len(PROTOCOLS))
    names = [f"bench-bb-{i}" for i in range(n_backbones)]
    for i, name in enumerate(names):
        register_spec(
            BackboneSpec(
                name=name,
                source="toy",
                model_id="toy",
                family="cnn",
                pretraining_method="random",
                pretraining_data="none",
                input_size=32,
                seed=i,
            )
        )

    class FakeDataset:  # planning needs only a fingerprint
        def __init__(self, ref):
            self.fingerprint = f"fp-{ref}"

    class NoopExecutor(Executor):
        slots = 4

        def execute(self, plan, progress=None):
            record = plan.new_record()
            record.status, record.metrics = "finished", {"top1": 0.5}
            return record

    spec = parse_spec(
        {
            "name": f"bench-{runs}",
            "backbones": names,
            "datasets": [f"ds{i}" for i in range(DATASETS)],
            "protocols": list(PROTOCOLS),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        sched = Scheduler(
            LocalStore(tmp, fsync=False),
            [NoopExecutor()],
            concurrency=4,
            planner=lambda s, bid: plan_battle(s, battle_id=bid, dataset_loader=FakeDataset),
        ).start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        bid = sched.submit(spec)
        plan_cpu_s = time.process_time() - cpu0
        status = sched.wait(bid, timeout_s=3600)
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        sched.close()
    assert status.counts["finished"] == runs, status.counts
    return {
        "runs": runs,
        "plan_cpu_s": round(plan_cpu_s, 3),
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_ms_per_run": round(1000 * cpu_s / runs, 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, help="measure one scale in this process")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.runs:
        print(json.dumps(one_scale(args.runs)))
        return 0
    rows = []
    for runs in (1500, 15000):
        out = subprocess.run(
            [sys.executable, __file__, "--runs", str(runs), "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'runs':>7} {'plan CPU s':>10} {'CPU s':>8} {'wall s':>8} {'peak RSS MB':>12} {'CPU ms/run':>11}")
    for r in rows:
        print(
            f"{r['runs']:>7} {r['plan_cpu_s']:>10.2f} {r['cpu_s']:>8.2f} {r['wall_s']:>8.2f} "
            f"{r['peak_rss_mb']:>12.1f} {r['cpu_ms_per_run']:>11.3f}"
        )
    small, large = rows
    print(
        f"ratio 15k/1.5k: CPU {large['cpu_s'] / small['cpu_s']:.1f}x, wall {large['wall_s'] / small['wall_s']:.1f}x, "
        f"peak RSS {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x (linear = 10x runs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
