"""Evaluator under load: 64 concurrent Evaluate calls (toy backbone, toy dataset, kNN on cached
features) against a real evaluator process on loopback, and the same 64 runs in process as the
baseline. Prints errors, p50/p99 call latency, calls/s, and the gRPC/in-process throughput ratio.

    python bench/bench_evaluate_load.py [--calls 64] [--max-concurrent-runs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

RUN = ("toy", "toy", "knn", {"ks": [10, 20]})


def start_evaluator(root: Path, max_concurrent_runs: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BOBENCH_LOG_LEVEL": "WARNING"}
    cmd = [
        sys.executable,
        "-m",
        "bobench.rpc.evaluator_service",
        "--port",
        "0",
        "--cache-dir",
        str(root / "cache"),
        "--results-dir",
        str(root / "results"),
        "--threads",
        "1",
        "--batch-size",
        "32",
        "--max-concurrent-runs",
        str(max_concurrent_runs),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    ready = json.loads(proc.stdout.readline())
    return proc, ready["address"]


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def remote_load(address: str, calls: int) -> dict:
    from bobench.client import EvaluatorClient

    backbone, dataset, protocol, config = RUN
    with EvaluatorClient(address) as client:
        client.wait_ready()
        warm = client.evaluate(backbone, dataset, protocol, config)  # fills the feature cache
        assert warm.record.finished, warm.record.error

        def one(seed: int) -> tuple[float, str | None]:
            t0 = time.perf_counter()
            try:
                outcome = client.evaluate(
                    backbone, dataset, protocol, config, seed % 4, rerun=True, timeout_s=300
                )
                error = None if outcome.record.finished else outcome.record.error
            except Exception as exc:  # counted, reported
                error = f"{type(exc).__name__}: {exc}"
            return time.perf_counter() - t0, error

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=calls) as pool:
            results = list(pool.map(one, range(calls)))
        wall_s = time.perf_counter() - t0
    latencies_ms = np.array([r[0] for r in results]) * 1e3
    errors = [r[1] for r in results if r[1]]
    return {
        "calls": calls,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": wall_s,
        "calls_per_s": calls / wall_s,
        "p50_ms": float(np.percentile(latencies_ms, 50)),
        "p99_ms": float(np.percentile(latencies_ms, 99)),
        "top1_k20": warm.record.metrics.get("top1_k20"),
    }


def in_process(root: Path, calls: int, workers: int) -> dict:
    """The same runs through LocalExecutor directly: one executor per worker thread, warm cache."""
    import torch

    from bobench.battle.executors.local import LocalExecutor
    from bobench.battle.single_run import plan_single_run
    from bobench.config import Settings

    torch.set_num_threads(1)
    settings = Settings(cache_dir=str(root / "cache"), batch_size=32, threads=1)
    backbone, dataset, protocol, config = RUN
    executors = [LocalExecutor(settings) for _ in range(workers)]
    plans = [
        plan_single_run(backbone, dataset, protocol, config, s % 4, dataset_loader=executors[0].dataset)
        for s in range(calls)
    ]
    for ex in executors:
        ex.execute(plans[0])  # warm: datasets loaded, features cached

    def worker(i: int) -> list[float]:
        out = []
        for plan in plans[i::workers]:
            t0 = time.perf_counter()
            record = executors[i].execute(plan)
            assert record.finished, record.error
            out.append(time.perf_counter() - t0)
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_run_s = [x for chunk in pool.map(worker, range(workers)) for x in chunk]
    wall_s = time.perf_counter() - t0
    for ex in executors:
        ex.close()
    return {
        "calls": calls,
        "wall_s": wall_s,
        "calls_per_s": calls / wall_s,
        "run_p50_ms": float(np.percentile(np.array(per_run_s) * 1e3, 50)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=64)
    parser.add_argument("--max-concurrent-runs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        root = Path(tmp)
        proc, address = start_evaluator(root, args.max_concurrent_runs)
        try:
            remote = remote_load(address, args.calls)
        finally:
            stop(proc)
        local = in_process(root, args.calls, args.max_concurrent_runs)
    ratio = remote["calls_per_s"] / local["calls_per_s"]
    summary = {"remote": remote, "in_process": local, "throughput_ratio_grpc_over_in_process": ratio}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{args.calls} concurrent Evaluate calls (toy/toy/knn, cached features, "
            f"{args.max_concurrent_runs} runs at once): {remote['errors']} errors"
        )
        print(
            f"  gRPC loopback : {remote['calls_per_s']:.1f} calls/s, p50 {remote['p50_ms']:.0f} ms, "
            f"p99 {remote['p99_ms']:.0f} ms (wall {remote['wall_s']:.2f} s)"
        )
        print(
            f"  in process    : {local['calls_per_s']:.1f} runs/s, per-run p50 {local['run_p50_ms']:.1f} ms "
            f"(wall {local['wall_s']:.2f} s)"
        )
        print(f"  ratio gRPC / in-process throughput: {ratio:.2f}")
    return 1 if remote["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
