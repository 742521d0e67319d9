"""One interface for every embedder: in-process torch, in-process ONNX Runtime, Triton over gRPC.

Every embedder speaks the tensor contract of `bobench.tensors` (uint8 [N, 3, H, W] RGB in, float32
[N, embed_dim] features out; normalisation happens inside the model).
"""

from __future__ import annotations

import abc

import numpy as np

from bobench.backbones.spec import BackboneSpec

PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # what `Embedder.precision` may say; part of the feature key


class Embedder(abc.ABC):
    """Turns preprocessed uint8 image batches into features. Counts forward passes (cache tests)."""

    runtime: str = "unknown"  # "torch" | "onnxruntime" | "triton"
    device: str = "cpu"
    precision: str = "fp32"  # the arithmetic the network runs in (one of PRECISIONS), as recorded

    def __init__(self, spec: BackboneSpec, batch_size: int = 32) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.forward_passes = 0  # batches run through the network
        self.images_embedded = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features for `images` (uint8 or float32, [N, 3, H, W]), computed in batches of `batch_size`."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != 3:
            from bobench.errors import InvalidArgument

            raise InvalidArgument(f"expected images of shape [N, 3, H, W], got {list(images.shape)}")
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size]
            out.append(np.asarray(self._embed_batch(batch), dtype=np.float32))
            self.forward_passes += 1
            self.images_embedded += batch.shape[0]
        if not out:
            return np.zeros((0, self.spec.embed_dim or 0), dtype=np.float32)
        return np.concatenate(out, axis=0)

    @abc.abstractmethod
    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch through the network."""

    def describe(self) -> dict:
        """Runtime context recorded with every figure this embedder produces."""
        return {"runtime": self.runtime, "device": self.device, "precision": self.precision}

    def unwrap(self) -> Embedder:
        """The embedder doing the work (wrappers that add timing or metrics return their inner one)."""
        return self

    def close(self) -> None:
        """Release resources (sessions, connections)."""


def unwrap(embedder: object) -> object:
    """The embedder doing the work behind wrappers (see Embedder.unwrap); any object without it is itself."""
    inner = getattr(embedder, "unwrap", None)
    return inner() if callable(inner) else embedder
