"""In-memory datasets (bundled and synthetic sets): pixel arrays held in RAM, fingerprinted by content."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bobench.data.base import Dataset
from bobench.data.fingerprint import LazyFingerprintDataset, array_fingerprint_fn
from bobench.errors import InvalidArgument


class ArrayLoader:
    """`Dataset.load` over a list/stack of uint8 images; gray (HxW) images are expanded to RGB."""

    def __init__(self, images: Sequence[np.ndarray], name: str) -> None:
        self.images = images
        self.name = name

    def __call__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.images):
            raise InvalidArgument(
                f"dataset {self.name!r}: item {index} out of range (size {len(self.images)})"
            )
        image = np.asarray(self.images[index], dtype=np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        return image.copy()


def array_dataset(
    *,
    name: str,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    classes: list[str],
    splits: dict[str, np.ndarray],
    seed: int,
    cache_key: str,
    meta: dict,
) -> Dataset:
    """Wrap in-memory uint8 images (HxW gray or HxWx3 RGB) as a Dataset with a content fingerprint.

    `cache_key` identifies the content (ref key plus whatever options change the pixels); the split
    seed is added here.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != labels.shape[0]:
        raise InvalidArgument(f"dataset {name!r}: {len(images)} images but {labels.shape[0]} labels")
    return LazyFingerprintDataset(
        name=name,
        classes=list(classes),
        labels=labels,
        splits=splits,
        load=ArrayLoader(images, name),
        sources=[f"{meta.get('source', name)}:{name}[{i}]" for i in range(len(images))],
        meta={"seed": seed, **meta},
        fingerprint_fn=array_fingerprint_fn((cache_key, seed), images, classes, labels, splits, seed),
    )
