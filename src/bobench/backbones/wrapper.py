"""The tensor contract as a torch module: raw pixel batches in, pooled features out."""

from __future__ import annotations

import torch
from torch import nn

from bobench.backbones.spec import BackboneSpec


class PreprocessingWrapper(nn.Module):
    """Wraps a feature network so that it takes what every bobench embedder takes.

    Input: uint8 or float32 [N, 3, H, W] RGB pixel values 0..255. The wrapper casts to float32,
    computes (x / 255 - mean) / std with the spec's RGB mean/std (folded into one multiply-add),
    reorders to BGR and/or NHWC when the spec says the network wants that, runs the network and
    returns float32 [N, D] features. Exported to ONNX as one graph, so the served model needs no
    client-side normalisation.
    """

    def __init__(self, network: nn.Module, spec: BackboneSpec) -> None:
        super().__init__()
        self.network = network
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", mean / std, persistent=False)
        self.bgr = spec.channel_order == "BGR"
        self.nhwc = spec.layout == "NHWC"
        self.register_buffer("bgr_index", torch.tensor([2, 1, 0], dtype=torch.int64), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32) * self.scale - self.shift
        if self.bgr:
            x = torch.index_select(x, 1, self.bgr_index)
        if self.nhwc:
            x = x.permute(0, 2, 3, 1)
        features = self.network(x)
        if isinstance(features, (tuple, list)):  # some hub models return (features, extras)
            features = features[0]
        return features.reshape(features.shape[0], -1).to(torch.float32)
