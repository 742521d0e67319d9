"""The `toy` backbone: a few seeded conv layers, fast enough for any unit test that needs features."""

from __future__ import annotations

import torch
from torch import nn


class ToyNet(nn.Module):
    """3 strided conv + ReLU layers and a global average pool: [N, 3, 32, 32] -> [N, width]."""

    def __init__(self, width: int = 32, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        with torch.no_grad():
            for p in self.parameters():
                std = (2.0 / p[0].numel()) ** 0.5 if p.ndim > 1 else 0.1  # He init; small biases
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        self.num_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).mean(dim=(2, 3))
