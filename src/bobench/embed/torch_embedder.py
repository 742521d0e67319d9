"""In-process torch (eager) embedder: the reference runtime and the one fine-tuning builds on."""

from __future__ import annotations

import numpy as np
import torch

from bobench.backbones import BackboneSpec, LoadedBackbone, create_backbone
from bobench.embed.base import Embedder
from bobench.errors import FailedPrecondition


def resolve_backbone(backbone: str | BackboneSpec | LoadedBackbone, **create_options) -> LoadedBackbone:
    """A LoadedBackbone from a registered name, a spec or an already loaded backbone."""
    return backbone if isinstance(backbone, LoadedBackbone) else create_backbone(backbone, **create_options)


class TorchEmbedder(Embedder):
    """Runs the backbone's PreprocessingWrapper module eagerly under no_grad.

    `threads` > 0 sets torch's intra-op thread count (process-wide, torch has no per-module setting).
    Raises FailedPrecondition for ONNX-source backbones, which have no torch module.
    """

    runtime = "torch"

    def __init__(
        self,
        backbone: str | BackboneSpec | LoadedBackbone,
        batch_size: int = 32,
        device: str = "cpu",
        threads: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        loaded = resolve_backbone(backbone, cache_dir=cache_dir)
        if loaded.module is None:
            raise FailedPrecondition(
                f"backbone {loaded.spec.name!r} is an ONNX source with no torch module; use runtime 'onnxruntime'"
            )
        super().__init__(loaded.spec, batch_size=batch_size)
        if threads > 0:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.device = device
        self.loaded = loaded
        self.module = loaded.module.to(device).eval()

    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.module(x).cpu().numpy()

    def describe(self) -> dict:
        return {
            **super().describe(),
            "threads": self.threads,
            "torch": torch.__version__,
            "batch_size": self.batch_size,
        }


def make_torch_embedder(backbone: str | BackboneSpec | LoadedBackbone, **options) -> TorchEmbedder:
    return TorchEmbedder(backbone, **options)
