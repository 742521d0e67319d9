"""Fine-tuning data: a dataset split as preprocessed uint8 tensors, and seeded epoch batches.

Images go through the same client preprocessing as every embedder (`resize_crop` with the backbone
spec), so fine-tuning sees exactly the pixels the frozen protocols see. A split is held in memory as
uint8 [N, 3, S, S] (3·S² bytes per image: 150 KB at 224 px), which suits the bundled and
ImageFolder-sized datasets this runs on.

Batch order and flips come from a generator seeded by (seed, epoch) alone, not from a stream that
runs across epochs, so a run resumed at epoch k draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from bobench.backbones.spec import BackboneSpec
from bobench.data.base import Dataset
from bobench.embed.preprocess import resize_crop
from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)


@dataclass
class SplitTensors:
    """One split: `images` uint8 [N, 3, S, S] RGB, `labels` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(dataset: Dataset, split: str, spec: BackboneSpec) -> SplitTensors:
    """Decode and preprocess every image of `split`. Raises InvalidArgument for an empty split, an
    undecodable image (the dataset's loader names the file) or a label outside the class list."""
    indices = dataset.split(split)
    if len(indices) == 0:
        raise InvalidArgument(f"dataset {dataset.name!r}: split {split!r} is empty; fine-tuning needs it")
    images = np.stack([resize_crop(dataset.load(int(i)), spec) for i in indices])
    labels = np.asarray(dataset.labels[indices], dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= len(dataset.classes)))
    if bad.size:
        item = int(indices[bad[0]])
        raise InvalidArgument(
            f"dataset {dataset.name!r}: item {dataset.describe(item)} has label {int(labels[bad[0]])}, "
            f"outside the {len(dataset.classes)} classes"
        )
    log.info("fine-tune data: %s/%s, %d images at %d px", dataset.name, split, len(labels), spec.input_size)
    return SplitTensors(torch.from_numpy(images), torch.from_numpy(labels))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's order and augmentation, a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) + 1)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of `train_batches` over n items."""
    return 1 if n <= batch_size else n // batch_size


def train_batches(
    data: SplitTensors, batch_size: int, seed: int, epoch: int, flip: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (images, labels) batches for one epoch, with random horizontal flips when `flip`.

    The last incomplete batch is dropped when there is more than one batch (timm's `drop_last`), so
    batch norm never sees a lone sample.
    """
    gen = epoch_generator(seed, epoch)
    n = len(data)
    order = torch.randperm(n, generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    usable = n if n <= batch_size else n - n % batch_size
    for start in range(0, usable, batch_size):
        idx = order[start : start + batch_size]
        images = data.images[idx]
        if flip:
            chosen = flips[start : start + batch_size]
            images[chosen] = images[chosen].flip(-1)
        yield images, data.labels[idx]


def eval_batches(data: SplitTensors, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) in dataset order, every item once."""
    for start in range(0, len(data), batch_size):
        yield data.images[start : start + batch_size], data.labels[start : start + batch_size]
