"""Online datasets through torchvision.datasets (download on first use; needs a network).

`{"type": "torchvision", "name": "CIFAR10", "root": DIR, "download": true, "splits": {...}?}`.
Datasets with a `train=` flag (CIFAR10/100, MNIST, FashionMNIST, KMNIST, ...) give train + test; those
with `split=` (SVHN, Flowers102, DTD, ...) use their "train" and "test" splits and "val" when the
dataset has one. When there is no official validation split, "val" is carved out of train with a
seeded stratified split (`val_fraction`, default 0.2). Offline, or when the files are absent with
`download: false`, this raises Unavailable with the dataset's own message.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
from typing import Any

import numpy as np

from bobench.data.base import Dataset
from bobench.data.fingerprint import LazyFingerprintDataset, arrays_digest, cached_digest, combine_fingerprint
from bobench.data.registry import check_ref_keys, register_source
from bobench.data.roots import check_path
from bobench.data.splits import stratified_split
from bobench.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)


class TorchvisionLoader:
    """`Dataset.load` over several torchvision datasets concatenated: index -> HxWx3 uint8 RGB."""

    def __init__(self, parts: list[Any], offsets: list[int]) -> None:
        self.parts = parts
        self.offsets = offsets

    def __call__(self, index: int) -> np.ndarray:
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        image = self.parts[k][index - self.offsets[k]][0]
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _open(cls: type, root: str, download: bool, **kwargs: Any) -> Any:
    try:
        return cls(root=root, download=download, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:  # urllib errors are OSErrors
        raise Unavailable(
            f"torchvision dataset {cls.__name__} ({kwargs}) under {root} is unavailable: {exc}. "
            "It needs a network for download=true, or the files already present under root."
        ) from exc


def _targets(ds: Any) -> np.ndarray:
    for attr in ("targets", "labels", "_labels"):
        values = getattr(ds, attr, None)
        if values is not None:
            return np.asarray(values, dtype=np.int64).reshape(-1)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)


def _official_parts(cls: type, root: str, download: bool) -> dict[str, Any]:
    params = inspect.signature(cls).parameters
    if "train" in params:
        return {
            "train": _open(cls, root, download, train=True),
            "test": _open(cls, root, download, train=False),
        }
    if "split" in params:
        parts = {
            "train": _open(cls, root, download, split="train"),
            "test": _open(cls, root, download, split="test"),
        }
        try:
            parts["val"] = cls(root=root, download=download, split="val")
        except (ValueError, RuntimeError, OSError) as exc:
            log.info("%s has no 'val' split (%s); carving it out of train", cls.__name__, exc)
        return parts
    raise InvalidArgument(f"torchvision dataset {cls.__name__}: neither a 'train' nor a 'split' argument")


def _content_digest(parts: list[Any]) -> str:
    """Pixels of every item (the in-memory `data` array when the dataset keeps one)."""
    arrays = []
    for part in parts:
        data = getattr(part, "data", None)
        if isinstance(data, np.ndarray):
            arrays.append(data)
        else:
            arrays += [np.asarray(part[i][0].convert("RGB")) for i in range(len(part))]
    return arrays_digest(arrays)


@register_source("torchvision")
def torchvision_dataset(ref: dict, *, seed: int = 0) -> Dataset:
    """A torchvision dataset as a bobench Dataset (train/val/test). Raises Unavailable offline."""
    check_ref_keys(ref, {"name", "root", "download", "val_fraction"}, "torchvision")
    if not ref.get("name"):
        raise InvalidArgument("torchvision: missing 'name' (a torchvision.datasets class, e.g. 'CIFAR10')")
    try:
        datasets = importlib.import_module("torchvision.datasets")
    except ImportError as exc:
        raise Unavailable(f"torchvision is not installed: {exc}") from exc
    cls = getattr(datasets, str(ref["name"]), None)
    if not isinstance(cls, type):
        raise InvalidArgument(f"torchvision: no dataset class {ref['name']!r} in torchvision.datasets")
    root = os.path.expanduser(str(ref.get("root", "~/.cache/bobench/torchvision")))
    if "root" in ref:  # a client-chosen folder torchvision reads and downloads into
        check_path(root, f"torchvision {ref['name']}: root {root}")
    parts = _official_parts(cls, root, bool(ref.get("download", True)))
    names = list(parts)
    offsets = np.cumsum([0] + [len(parts[n]) for n in names]).tolist()
    labels = np.concatenate([_targets(parts[n]) for n in names])
    splits = {n: np.arange(offsets[i], offsets[i + 1], dtype=np.int64) for i, n in enumerate(names)}
    if "val" not in splits:
        val_fraction = float(ref.get("val_fraction", 0.2))
        train = splits["train"]
        cut = stratified_split(labels[train], {"train": 1 - val_fraction, "val": val_fraction}, seed)
        splits = {"train": train[cut["train"]], "val": train[cut["val"]], "test": splits["test"]}
    classes = list(getattr(parts["train"], "classes", None) or [str(c) for c in range(int(labels.max()) + 1)])
    key = json.dumps({**ref, "root": os.path.abspath(root)}, sort_keys=True, default=str)
    part_list = [parts[n] for n in names]
    return LazyFingerprintDataset(
        name=str(ref["name"]),
        classes=classes,
        labels=labels,
        splits=splits,
        load=TorchvisionLoader(part_list, offsets[:-1]),
        sources=[],
        meta={
            "task": "classification",
            "source": f"torchvision.datasets.{ref['name']}",
            "seed": seed,
            "root": root,
        },
        fingerprint_fn=lambda: combine_fingerprint(
            cached_digest((key, "content"), lambda: _content_digest(part_list)), classes, labels, splits, seed
        ),
    )
