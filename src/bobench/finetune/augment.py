"""Optional timm augmentation for fine-tuning: RandAugment, mixup/cutmix and drop-path (stochastic depth).

All three are timm's own implementations. RandAugment (`timm.data.rand_augment_transform`) draws from
Python's `random`, mixup/cutmix (`timm.data.Mixup`) from NumPy's global generator: `seed_epoch`
reseeds both from (seed, epoch) alone at the start of every epoch, so a run resumed at epoch k draws
exactly what an uninterrupted run draws (the fine-tuning loop runs inside `isolated_rng`, so the
caller's generators are untouched). Drop-path draws from torch's generator, which the checkpoint saves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from bobench.errors import InvalidArgument

DROP_PATH_SLOTS = ("drop_path", "drop_path1", "drop_path2")


def seed_epoch(seed: int, epoch: int) -> None:
    """Reseed Python's and NumPy's global generators from (seed, epoch)."""
    value = (int(seed) * 1_000_003 + int(epoch) + 7) % 2**32
    random.seed(value)
    np.random.seed(value)


def set_drop_path(network: nn.Module, rate: float) -> int:
    """Put timm `DropPath` modules into the network's residual blocks with timm's stochastic-depth rule:
    block i of n gets rate * i / (n - 1), in registration order (input -> output). A block is a module
    with `drop_path`/`drop_path1`/`drop_path2` slots (timm ViT, ConvNeXt, ResNet, ...). Returns the number
    of blocks; raises InvalidArgument when rate > 0 and the network has none."""
    from timm.layers import DropPath

    blocks = [
        m
        for m in network.modules()
        if any(isinstance(getattr(m, s, None), nn.Module) for s in DROP_PATH_SLOTS)
    ]
    if rate > 0 and not blocks:
        raise InvalidArgument(
            "finetune config: 'drop_path' > 0, but the backbone has no drop-path slots (timm blocks)"
        )
    rates = np.linspace(0.0, rate, len(blocks)) if blocks else []
    for block, block_rate in zip(blocks, rates, strict=True):
        for slot in DROP_PATH_SLOTS:
            if isinstance(getattr(block, slot, None), nn.Module):
                setattr(block, slot, DropPath(float(block_rate)) if block_rate > 0 else nn.Identity())
    return len(blocks)


def rand_augment(config_str: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function applying timm's RandAugment `config_str` to each uint8 [N, 3, S, S] image of a batch."""
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    transform = rand_augment_transform(
        config_str, {"translate_const": int(image_size * 0.45), "img_mean": (124, 116, 104)}
    )

    def apply(images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images:
            pil = Image.fromarray(image.permute(1, 2, 0).numpy())
            out.append(torch.from_numpy(np.asarray(transform(pil), dtype=np.uint8).copy()).permute(2, 0, 1))
        return torch.stack(out)

    return apply


def mixup(mixup_alpha: float, cutmix_alpha: float, label_smoothing: float, num_classes: int) -> Any:
    """timm's Mixup (batch mode): (float images, int labels) -> (mixed images, soft targets)."""
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )
