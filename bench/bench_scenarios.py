"""MLPerf-style serving scenarios through Triton, against in-process ONNX Runtime, in one run.

For one backbone (default EfficientNet-Lite0, real weights from its pip package), on one ONNX file:

- served (Triton, uint8 transport) vs in-process ORT throughput at batch 1 / 8 / 32: the Offline
  scenario (all queries issued at once through `async_infer`) against ORT's back-to-back calls;
  each with dynamic batching on (preferred 8/16/32, `--delay-us`) and off (`dynamic_batching=False`);
- the Server scenario at `--server-fraction` of the measured batch-1 Offline rate: achieved (issued)
  QPS vs the target (goal: within 5 %), the scheduled rate of the seeded draw, the KS statistic and
  p-value of the issued inter-arrival times against the exponential of the target rate, and p99;
- TritonEmbedder.embed_stream (batches in flight while the next are read) vs one batch at a time.

Both runtimes get the same ORT intra-op thread count. Rounds are interleaved and each ratio is the
median of per-round ratios (drifting load on a shared machine cancels within a round).

    python bench/bench_scenarios.py [--backbone efficientnet_lite0] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bobench.tensors import INPUT_NAME, OUTPUT_NAME

BATCHES = (1, 8, 32)


def build(
    backbone: str, repo: Path, cache: Path, name: str, threads: int, dynamic: bool, delay_us: int
) -> None:
    """Export + repository entry in a child process (this process never imports torch)."""
    code = (
        "import sys; from bobench.serving.embedder_service import build_repository_for; "
        "build_repository_for([sys.argv[1]], sys.argv[2], sys.argv[3], model_name=sys.argv[4], "
        "max_batch_size=64, preferred_batch_sizes=(8, 16, 32), intra_op_threads=int(sys.argv[5]), "
        "dynamic_batching=sys.argv[6] == '1', max_queue_delay_us=int(sys.argv[7]))"
    )
    argv = [backbone, str(repo), str(cache), name, str(threads), "1" if dynamic else "0", str(delay_us)]
    subprocess.run([sys.executable, "-c", code, *argv], check=True)


def offline_ips(client, model: str, images: np.ndarray, samples: int) -> float:
    """Images/s of the Offline scenario: ceil(samples / batch) queries issued at once."""
    from bobench.protocols.serving_scenarios import triton_issuer
    from bobench.serving import loadgen as lg

    queries = max(4, -(-samples // images.shape[0]))
    r = lg.run_offline(triton_issuer(client, model, images, 120.0), lg.ScenarioSettings(queries, 0.0, 60.0),
                       samples_per_query=images.shape[0])  # fmt: skip
    return r.queries * images.shape[0] / (r.duration_s - float(np.nanmin(r.issued_s)))


def ort_ips(session, images: np.ndarray, samples: int) -> float:
    calls = max(2, -(-samples // images.shape[0]))
    t0 = time.perf_counter()
    for _ in range(calls):
        session.run([OUTPUT_NAME], {INPUT_NAME: images})
    return calls * images.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads, both runtimes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=192, help="images per throughput measurement")
    parser.add_argument("--delay-us", type=int, default=2000, help="dynamic batching max queue delay")
    parser.add_argument("--server-fraction", type=float, default=0.5, help="Server target / Offline b1 rate")
    parser.add_argument("--server-queries", type=int, default=1500)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import tritonclient.grpc as grpcclient

    from bobench.embed.triton_embedder import TritonEmbedder
    from bobench.export.onnx_export import ort_session
    from bobench.protocols.serving_scenarios import triton_issuer
    from bobench.serving import loadgen as lg
    from bobench.serving.triton import TritonServer

    with tempfile.TemporaryDirectory(prefix="bench-scenarios-") as tmp:
        cache, repo = Path(args.cache_dir or Path(tmp) / "cache"), Path(tmp) / "repo"
        build(args.backbone, repo, cache, "db_on", args.threads, True, args.delay_us)
        build(args.backbone, repo, cache, "db_off", args.threads, False, args.delay_us)
        size = json.loads((repo / "db_on" / "bobench.json").read_text())["spec"]["input_size"]
        rng = np.random.default_rng(0)
        images = {b: rng.integers(0, 256, size=(b, 3, size, size), dtype=np.uint8) for b in BATCHES}
        session = ort_session(repo / "db_on" / "1" / "model.onnx", args.threads)
        with TritonServer(repo) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            for b in BATCHES:  # warm-up
                ort_ips(session, images[b], 1)
                for model in ("db_on", "db_off"):
                    offline_ips(client, model, images[b], 4 * b)
            rounds = []
            for _ in range(args.rounds):
                row = {}
                for b in BATCHES:
                    row[f"ort_b{b}"] = ort_ips(session, images[b], args.samples)
                    for model in ("db_on", "db_off"):
                        row[f"{model}_b{b}"] = offline_ips(client, model, images[b], args.samples)
                rounds.append(row)
            offline_b1 = float(np.median([r["db_on_b1"] for r in rounds]))
            target = round(args.server_fraction * offline_b1, 1)
            scenario = lg.ScenarioSettings(args.server_queries, 0.0, 600.0)
            server_run = lg.run_server(
                triton_issuer(client, "db_on", images[1], 60.0), target, scenario,
                lg.ServerSettings(target_qps=target, latency_bound_ms=1000.0, max_outstanding=4096),
            )  # fmt: skip
            emb = TritonEmbedder("db_on", url=server.grpc_url, batch_size=8, concurrency=4)
            stream_batches = [images[8]] * (args.samples // 8)
            emb.embed(images[8])
            t0 = time.perf_counter()
            for b in stream_batches:
                emb.embed(b)
            one_at_a_time_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in emb.embed_stream(iter(stream_batches)):
                pass
            stream_s = time.perf_counter() - t0
            emb.close()
            client.close()

    def med(key_a: str, key_b: str) -> float:
        return float(np.median([r[key_a] / r[key_b] for r in rounds]))

    out = {
        "backbone": args.backbone,
        "threads": args.threads,
        "rounds": rounds,
        "served_over_inprocess_db_on": {f"b{b}": med(f"db_on_b{b}", f"ort_b{b}") for b in BATCHES},
        "served_over_inprocess_db_off": {f"b{b}": med(f"db_off_b{b}", f"ort_b{b}") for b in BATCHES},
        "db_on_over_db_off": {f"b{b}": med(f"db_on_b{b}", f"db_off_b{b}") for b in BATCHES},
        "server_target_qps": target,
        "server_scheduled_qps": server_run.extra["scheduled_qps"],
        "server_issued_qps": server_run.issued_qps,
        "server_completed_qps": server_run.completed_qps,
        "server_issued_over_target": server_run.issued_qps / target,
        "server_interarrival_ks_d": server_run.extra["ks_d"],
        "server_interarrival_ks_p": server_run.extra["ks_p"],
        "server_latency_ms_p50": server_run.percentile_ms(50),
        "server_latency_ms_p99": server_run.percentile_ms(99),
        "server_queries": server_run.queries,
        "embed_stream_speedup": one_at_a_time_s / stream_s,
    }
    print(json.dumps(out, indent=2, default=float))
    for b in BATCHES:
        print(f"batch {b:>2}: served/in-process  db on {out['served_over_inprocess_db_on'][f'b{b}']:.2f}  "
              f"db off {out['served_over_inprocess_db_off'][f'b{b}']:.2f}  "
              f"on/off {out['db_on_over_db_off'][f'b{b}']:.2f}")  # fmt: skip
    print(f"Server: target {target} QPS, issued {out['server_issued_qps']:.2f} "
          f"({100 * (out['server_issued_over_target'] - 1):+.1f} %; within 5 %: "
          f"{abs(out['server_issued_over_target'] - 1) <= 0.05}), scheduled {out['server_scheduled_qps']:.2f}, "
          f"KS D={out['server_interarrival_ks_d']:.4f} p={out['server_interarrival_ks_p']:.3f}, "
          f"p99 {out['server_latency_ms_p99']:.1f} ms")  # fmt: skip
    print(f"embed_stream (4 in flight) vs one batch at a time: {out['embed_stream_speedup']:.2f}x")


if __name__ == "__main__":
    main()
