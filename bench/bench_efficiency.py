"""Efficiency-protocol throughput vs an independent timm-style timing loop, same model, same run.

The reference loop is written like timm's benchmark.py and shares no code with the protocol: an ONNX
Runtime session on the same exported file, a random uint8 batch prepared up front, 10 warm-up and 40
timed steps, images/s = images / timed wall time. The two are measured in alternating rounds on this
shared machine and the median per-round ratio is printed (target: within 10 %).
Run: python bench/bench_efficiency.py [--backbone NAME] [--threads N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import onnxruntime as ort

from bobench.backbones import get_spec
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.single_run import plan_single_run
from bobench.config import Settings

WARMUP, TIMED = 10, 40


def reference_ips(session: ort.InferenceSession, batch: np.ndarray) -> float:
    """timm benchmark.py style: warm up, then time `TIMED` whole-batch calls back to back."""
    name = session.get_inputs()[0].name
    for _ in range(WARMUP):
        session.run(None, {name: batch})
    start = time.perf_counter()
    for _ in range(TIMED):
        session.run(None, {name: batch})
    return TIMED * batch.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,32")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as cache:
        settings = Settings(cache_dir=cache, threads=args.threads, batch_size=32)
        executor = LocalExecutor(settings)
        # exactly the reference's step counts: no minimum time extending them
        config = {"batch_sizes": batch_sizes, "warmup_steps": WARMUP, "timed_steps": TIMED, "min_time_s": 0.0}
        config["flops"] = False
        plan = plan_single_run(args.backbone, "toy", "efficiency", config)
        embedder = executor.embedder(get_spec(args.backbone))  # the same embedder the protocol times
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(embedder.onnx_path), options, providers=["CPUExecutionProvider"])
        size = embedder.spec.input_size
        ratios: dict[int, list[float]] = {b: [] for b in batch_sizes}
        figures: dict[int, list[tuple[float, float]]] = {b: [] for b in batch_sizes}
        for _ in range(args.rounds):
            record = executor.execute(plan)
            if record.status != "finished":
                raise SystemExit(f"efficiency run failed: {record.error}")
            for b in batch_sizes:
                batch = np.random.default_rng(b).integers(0, 256, (b, 3, size, size), dtype=np.uint8)
                ref = reference_ips(session, batch)
                ours = record.metrics[f"throughput_ips_b{b}"]
                ratios[b].append(ours / ref)
                figures[b].append((ours, ref))
        env = record.environment
        print(
            f"backbone {args.backbone}, runtime {env.get('runtime')}, threads {args.threads}, "
            f"cpu {env.get('cpu')}, onnxruntime {env['versions'].get('onnxruntime')}"
        )
        for b in batch_sizes:
            ratio = statistics.median(ratios[b])
            ours = statistics.median(f[0] for f in figures[b])
            ref = statistics.median(f[1] for f in figures[b])
            verdict = "within 10 %" if abs(ratio - 1) <= 0.10 else "OUTSIDE 10 %"
            print(
                f"batch {b:>3}: protocol {ours:8.1f} img/s  reference loop {ref:8.1f} img/s  "
                f"ratio {ratio:.3f} ({verdict}; per round {', '.join(f'{r:.3f}' for r in ratios[b])})"
            )


if __name__ == "__main__":
    main()
