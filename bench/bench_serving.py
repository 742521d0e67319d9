"""Serving through Triton vs in-process ONNX Runtime, on the same ONNX file, measured in the same run.

Reports, for one backbone (default EfficientNet-Lite0, real pretrained weights from its pip package):

- throughput ratio Triton (uint8 transport) / in-process ORT at batch 32 (target >= 0.9),
- batch-1 p50 latency overhead of the serving hop (Triton p50 - in-process p50, ms),
- uint8 vs float32 transport throughput ratio through Triton at batch 32.

Both runtimes get the same ONNX Runtime intra-op thread count and run one request at a time (a
closed loop with one client), so throughput = images / summed request time. The machine is shared,
so the runtimes are measured in interleaved rounds and each ratio is the median of per-round ratios
(load drifting between rounds cancels within a round). Triton is reached through TritonEmbedder,
the client every evaluator uses.

    python bench/bench_serving.py [--backbone efficientnet_lite0] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bobench.tensors import INPUT_NAME, OUTPUT_NAME


def build_in_subprocess(
    backbone: str, repo: Path, cache: Path, input_dtype: str, model_name: str, batch: int, threads: int
) -> None:
    """Export + write the repository entry in a child process, so this process never imports torch
    (torch's idle OpenMP pool measurably slows in-process ORT on a 2-core machine)."""
    code = (
        "import sys; from bobench.serving.embedder_service import build_repository_for; "
        "build_repository_for([sys.argv[1]], sys.argv[2], sys.argv[3], input_dtype=sys.argv[4], "
        "model_name=sys.argv[5], max_batch_size=max(32, int(sys.argv[6])), "
        "preferred_batch_sizes=(int(sys.argv[6]),), intra_op_threads=int(sys.argv[7]))"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            backbone,
            str(repo),
            str(cache),
            input_dtype,
            model_name,
            str(batch),
            str(threads),
        ],
        check=True,
    )


def timed_calls_s(fn: Callable[[], object], calls: int) -> list[float]:
    """Wall time of each of `calls` back-to-back calls of `fn`."""
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="ORT intra-op threads, both runtimes (1: the dev machines' 2 cores are shared)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument(
        "--calls", type=int, default=3, help="batch-B calls per runtime per round (x10 at batch 1)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="ONNX export cache (default: a temporary directory)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from bobench.embed.triton_embedder import TritonEmbedder
    from bobench.export.onnx_export import ort_session
    from bobench.serving.triton import TritonServer

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        cache = Path(args.cache_dir or Path(tmp) / "cache")
        repo = Path(tmp) / "repo"
        t0 = time.perf_counter()
        for dtype in ("uint8", "float32"):
            build_in_subprocess(args.backbone, repo, cache, dtype, f"m_{dtype}", args.batch, args.threads)
        build_s = time.perf_counter() - t0
        u8_dir = repo / "m_uint8"
        size = json.loads((u8_dir / "bobench.json").read_text())["spec"]["input_size"]
        big = np.random.default_rng(0).integers(0, 256, size=(args.batch, 3, size, size), dtype=np.uint8)
        big_f32, one = big.astype(np.float32), big[:1].copy()
        session = ort_session(u8_dir / "1" / "model.onnx", args.threads)

        def ort(x):
            return lambda: session.run([OUTPUT_NAME], {INPUT_NAME: x})

        with TritonServer(repo) as server:
            u8 = TritonEmbedder("m_uint8", url=server.grpc_url, batch_size=args.batch, concurrency=1)
            f32 = TritonEmbedder(
                "m_float32", url=server.grpc_url, batch_size=args.batch, concurrency=1, input_dtype="float32"
            )
            for fn in (
                ort(big),
                ort(one),
                lambda: u8.infer_batch(big),
                lambda: f32.infer_batch(big_f32),
                lambda: u8.infer_batch(one),
            ):
                fn()  # warm-up: first-call allocations, connection setup
            rounds = []
            for _ in range(args.rounds):
                rounds.append(
                    {
                        "ort_b32": timed_calls_s(ort(big), args.calls),
                        "triton_uint8_b32": timed_calls_s(lambda: u8.infer_batch(big), args.calls),
                        "triton_float32_b32": timed_calls_s(lambda: f32.infer_batch(big_f32), args.calls),
                        "ort_b1": timed_calls_s(ort(one), 10 * args.calls),
                        "triton_b1": timed_calls_s(lambda: u8.infer_batch(one), 10 * args.calls),
                    }
                )
            u8.close()
            f32.close()

    def ips(times: list[float]) -> float:
        return args.batch * len(times) / sum(times)

    tp_ratio = [ips(r["triton_uint8_b32"]) / ips(r["ort_b32"]) for r in rounds]
    dtype_ratio = [ips(r["triton_uint8_b32"]) / ips(r["triton_float32_b32"]) for r in rounds]
    overhead_ms = [1e3 * (np.median(r["triton_b1"]) - np.median(r["ort_b1"])) for r in rounds]
    results = {
        "backbone": args.backbone,
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "calls_per_round_b32": args.calls,
        "export_and_repo_s": round(build_s, 1),
        "ort_inprocess_ips": [ips(r["ort_b32"]) for r in rounds],
        "triton_uint8_ips": [ips(r["triton_uint8_b32"]) for r in rounds],
        "triton_float32_ips": [ips(r["triton_float32_b32"]) for r in rounds],
        "ratio_triton_uint8_over_ort": float(np.median(tp_ratio)),
        "ratio_triton_uint8_over_ort_per_round": tp_ratio,
        "ratio_uint8_over_float32_transport": float(np.median(dtype_ratio)),
        "ratio_uint8_over_float32_per_round": dtype_ratio,
        "ort_p50_ms_b1": [1e3 * float(np.median(r["ort_b1"])) for r in rounds],
        "triton_p50_ms_b1": [1e3 * float(np.median(r["triton_b1"])) for r in rounds],
        "overhead_p50_ms_b1": float(np.median(overhead_ms)),
    }
    print(json.dumps(results, indent=2, default=float))
    print(
        f"throughput Triton(uint8)/in-process ORT at batch {args.batch}: "
        f"{results['ratio_triton_uint8_over_ort']:.2f} (target >= 0.9)"
    )
    print(f"batch-1 p50 overhead of the serving hop: {results['overhead_p50_ms_b1']:.2f} ms")
    print(
        f"uint8 / float32 transport throughput at batch {args.batch}: "
        f"{results['ratio_uint8_over_float32_transport']:.2f}"
    )


if __name__ == "__main__":
    main()
