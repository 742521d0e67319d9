"""Optimiser pieces: layer-wise lr decay parameter groups and the warm-up + cosine schedule.

Layer-wise lr decay needs a depth for every parameter. Architectures name their blocks differently
(ViT `blocks.N`, ResNet `layerN`, ConvNeXt `stages.N`), so the grouping here uses one rule that
needs no per-architecture table: the backbone's *parameter-owning modules*, in registration order
(`named_modules()`, which runs input -> output for timm and torchvision networks; parameters held
directly by the root, such as a ViT's cls token and position embedding, come first), are split into
G nearly equal consecutive groups (G = min(`layer_decay_groups`, number of owners)). Group g
(0 = nearest the input) gets lr x decay^(G - g); the classification head is group G with the full lr.
Weight decay applies to matrices and kernels only, not to biases, norm weights or other 1-D
parameters (timm's convention).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def parameter_depths(backbone: nn.Module, n_groups: int) -> tuple[list[tuple[str, nn.Parameter, int]], int]:
    """[(name, parameter, group)] for the backbone's trainable parameters, and the number of groups G."""
    owners: list[list[tuple[str, nn.Parameter]]] = []
    for module_name, module in backbone.named_modules():
        direct = [
            (f"{module_name}.{name}" if module_name else name, p)
            for name, p in module.named_parameters(recurse=False)
            if p.requires_grad
        ]
        if direct:
            owners.append(direct)
    groups = max(1, min(n_groups, len(owners)))
    out = []
    for i, params in enumerate(owners):
        depth = i * groups // len(owners)
        out.extend((name, p, depth) for name, p in params)
    return out, groups


def param_groups(
    backbone: nn.Module, head: nn.Module, *, lr: float, weight_decay: float, layer_decay: float, n_groups: int
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay (module docstring) and no decay on 1-D params.

    Each group carries `lr`, `weight_decay`, `layer` (0..G) and `lr_scale`; empty groups are omitted.
    """
    depths, groups = parameter_depths(backbone, n_groups)
    depths += [(f"head.{name}", p, groups) for name, p in head.named_parameters() if p.requires_grad]
    buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for _, p, depth in depths:
        buckets.setdefault((depth, p.ndim > 1), []).append(p)
    out = []
    for (depth, decays), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        scale = layer_decay ** (groups - depth)
        out.append(
            {
                "params": params,
                "lr": lr * scale,
                "weight_decay": weight_decay if decays else 0.0,
                "layer": depth,
                "lr_scale": scale,
            }
        )
    return out


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """The lr multiplier at optimiser step `step` (0-based): linear warm-up from 1/warmup_steps to 1
    over `warmup_steps`, then a cosine from 1 down to `min_ratio` at the last step."""
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(1, total_steps - warmup_steps - 1)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
