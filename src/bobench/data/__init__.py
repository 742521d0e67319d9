"""Datasets for the battle: named offline sets, ImageFolder/manifest/torchvision sources, stratified
splits, content fingerprints, and ImageNet-C corruptions (`bobench.data.corruptions`, imported on use).

    ds = load_dataset("toy", seed=0)                      # a registered name (see list_datasets())
    ds = load_dataset({"type": "imagefolder", "path": "photos/"})
    configure(settings)                                    # once per process, for s3:// refs
    ds = load_dataset({"type": "webdataset", "path": "s3://bucket/shards/"})
    validate_dataset(ds)                                   # decode everything before a run starts
    x = ds.load(ds.split("test")[0])                       # HxWx3 uint8 RGB
"""

from __future__ import annotations

from bobench.data.base import Dataset, fingerprint_arrays
from bobench.data.context import configure
from bobench.data.fingerprint import clear_fingerprint_cache
from bobench.data.registry import (
    DATASETS,
    SOURCES,
    RegisteredDataset,
    dataset_ref_key,
    list_datasets,
    load_dataset,
    normalize_ref,
    register_dataset,
    register_source,
)
from bobench.data.splits import DEFAULT_FRACTIONS, stratified_split
from bobench.data.validate import validate_dataset

__all__ = [
    "DATASETS",
    "DEFAULT_FRACTIONS",
    "SOURCES",
    "Dataset",
    "RegisteredDataset",
    "clear_fingerprint_cache",
    "configure",
    "dataset_ref_key",
    "fingerprint_arrays",
    "list_datasets",
    "load_dataset",
    "normalize_ref",
    "register_dataset",
    "register_source",
    "stratified_split",
    "validate_dataset",
]
