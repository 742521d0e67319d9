"""Embedding throughput: ONNX Runtime vs torch eager for EfficientNet-Lite0, batch 1 and 32, same run.

timm benchmark.py style: random input prepared up front, warm-up steps, then timed steps; images/s =
images / timed wall time. Prints both runtimes and the ratio ORT / torch with the run's context.
Run: python bench/bench_embed.py [--threads N] [--backbone NAME]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch

from bobench.backbones import create_backbone
from bobench.embed.onnx_embedder import OrtEmbedder
from bobench.embed.torch_embedder import TorchEmbedder

WARMUP_STEPS = {1: 5, 32: 1}
TIMED_STEPS = {1: 30, 32: 3}


def images_per_s(embedder, images: np.ndarray, batch_size: int) -> float:
    embedder.batch_size = batch_size
    batch = images[:batch_size]
    for _ in range(WARMUP_STEPS[batch_size]):
        embedder.embed(batch)
    start = time.perf_counter()
    for _ in range(TIMED_STEPS[batch_size]):
        embedder.embed(batch)
    return TIMED_STEPS[batch_size] * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        loaded = create_backbone(args.backbone, cache_dir=cache_dir)
        eager = TorchEmbedder(loaded, threads=args.threads)
        ort = OrtEmbedder(loaded, threads=args.threads, cache_dir=cache_dir)
        size = loaded.spec.input_size
        images = np.random.default_rng(0).integers(0, 256, (32, 3, size, size), dtype=np.uint8)
        print(
            f"{args.backbone} {size}px, {args.threads} threads, CPU {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}, onnxruntime {ort.describe()['onnxruntime']}"
        )
        print(f"{'batch':>5} {'torch img/s':>12} {'ORT img/s':>10} {'ORT/torch':>9}")
        for batch_size in (1, 32):
            t = images_per_s(eager, images, batch_size)
            o = images_per_s(ort, images, batch_size)
            print(f"{batch_size:>5} {t:>12.1f} {o:>10.1f} {o / t:>9.2f}")


if __name__ == "__main__":
    main()
