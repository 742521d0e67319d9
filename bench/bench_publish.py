"""Publish: wall time of one backbone's publish (export + upload + Triton load), cold vs re-publish,
and a battle's time from submit to its first served run on the local stack path.

All real services on loopback: SeaweedFS S3, the tritonserver of nvidia-pytriton reading its model
repository from S3, and (for the battle figure) the whole local stack (`bobench.stack.up`), whose
scheduler publishes the never-served backbone before dispatching the run. The re-publish must upload
nothing (target ratio re-publish / cold <= 0.1).
Run: python bench/bench_publish.py [--backbone resnet18-random] [--skip-stack]
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from pathlib import Path

from bobench.config import Settings
from bobench.serving.publish import publish
from bobench.serving.triton import TritonServer
from bobench.stack.procs import stop_pid
from bobench.stack.seaweedfs import S3Identity, start_seaweedfs
from bobench.store.s3 import S3Store


def publish_figures(backbone: str, root: Path) -> dict[str, float]:
    """Cold and no-op publish wall times of `backbone` against fresh SeaweedFS + Triton."""
    admin = S3Identity("admin", "bench", secrets.token_hex(16))
    s3 = start_seaweedfs(root / "seaweedfs", [admin])
    try:
        settings = Settings(cache_dir=str(root / "cache"), s3_endpoint=f"http://{s3.address}",
                            s3_access_key=admin.access_key, s3_secret_key=admin.secret_key)  # fmt: skip
        store = S3Store(settings.s3_endpoint, "bobench", "triton-models", admin.access_key, admin.secret_key,
                        create_bucket=True)  # fmt: skip
        with TritonServer("s3://bobench/triton-models", settings=settings, log_dir=root / "triton") as server:
            t0 = time.perf_counter()
            cold = publish(backbone, store, cache_dir=settings.cache_dir, triton_url=server.grpc_url)
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = publish(backbone, store, cache_dir=settings.cache_dir, triton_url=server.grpc_url)
            again_s = time.perf_counter() - t0
        assert cold.uploaded and not again.uploaded, "re-publish uploaded again"
        size_mb = sum(store.stat(k).size_bytes for k in store.list(f"{cold.model_name}/")) / 2**20
    finally:
        stop_pid(s3.pid)
    return {"cold_s": cold_s, "republish_s": again_s, "ratio": again_s / cold_s, "entry_mb": size_mb}


def first_served_run_s(backbone: str, root: Path) -> float:
    """Submit -> first finished run of a battle whose backbone the stack has never served."""
    from bobench.battle.spec import parse_spec
    from bobench.client import SchedulerClient
    from bobench.stack import down, up
    from bobench.v1 import common_pb2

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["BOBENCH_CACHE_DIR"] = str(root / "stack-cache")
    state = up(root / ".bobench", evaluators=1, embedder=True, embedder_backbones=())
    try:
        scheduler = next(s for s in state["services"] if s["name"] == "scheduler")
        spec = parse_spec({"name": "bench-publish", "backbones": [backbone], "datasets": ["toy"],
                           "protocols": [{"name": "knn", "config": {"ks": [5]}}]})  # fmt: skip
        with SchedulerClient(scheduler["address"]) as client:
            client.wait_ready()
            t0 = time.perf_counter()
            battle_id = client.submit(spec).battle_id
            for event in client.watch(battle_id, timeout_s=300):
                if event.run_key and event.state == common_pb2.RUN_STATUS_FINISHED:
                    return time.perf_counter() - t0
                if event.run_key and event.state == common_pb2.RUN_STATUS_FAILED:
                    raise SystemExit(f"run failed: {event.error}")
        raise SystemExit("the battle ended without a finished run")
    finally:
        down(root / ".bobench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18-random")
    parser.add_argument("--skip-stack", action="store_true", help="only the publish figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = publish_figures(args.backbone, Path(tmp))
        print(f"publish {args.backbone}: cold {figures['cold_s']:.2f} s (export + upload "
              f"{figures['entry_mb']:.1f} MiB + Triton load), re-publish {figures['republish_s']:.3f} s, "
              f"ratio {figures['ratio']:.4f} (target <= 0.1)")  # fmt: skip
        if not args.skip_stack:
            served_s = first_served_run_s(args.backbone, Path(tmp))
            print(
                f"local stack: submit -> first served run of never-published {args.backbone}: {served_s:.2f} s"
            )


if __name__ == "__main__":
    main()
