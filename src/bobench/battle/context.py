"""LocalContext: what a protocol sees of a run — cached features, datasets, the embedder, the model."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from bobench.backbones.spec import BackboneSpec
from bobench.data.base import Dataset
from bobench.data.corruptions import cache_variant
from bobench.embed.base import Embedder
from bobench.embed.cache import FeatureCache, feature_key
from bobench.embed.input_cache import PreparedInputs, preprocess_key
from bobench.embed.preprocess import resize_crop
from bobench.errors import InvalidArgument
from bobench.stage_timer import add_count, stage

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]


class LocalContext:
    """Serves features from the cache, computing (and caching) missing ones with a lazily built embedder.

    The embedder factory is only called on a cache miss, so a fully cached re-run never loads a model.
    `precision` is the precision the run's embedder computes in (part of the feature key, known
    before the embedder is built); an embedder that reports another one is refused (InvalidArgument).
    """

    def __init__(
        self,
        spec: BackboneSpec,
        dataset: Dataset,
        *,
        cache: FeatureCache,
        embedder_factory: Callable[[], Embedder],
        dataset_loader: Callable[[Any], Dataset],
        module_factory: Callable[[], Any] | None = None,
        progress: ProgressFn | None = None,
        settings: Any = None,
        precision: str = "fp32",
        runtime: str = "onnx",
        inputs: PreparedInputs | None = None,
    ) -> None:
        self.spec = spec
        self.precision = precision
        self.runtime = runtime  # the feature-key runtime (`embed.cache.feature_runtime`)
        self.inputs = inputs  # model inputs shared with other runs (`embed.input_cache`), if any
        self._input_key = preprocess_key(spec)  # what those inputs are keyed by, besides the image
        self.dataset = dataset
        self.cache = cache
        self.settings = settings
        self._embedder_factory = embedder_factory
        self._dataset_loader = dataset_loader
        self._module_factory = module_factory
        self._progress = progress
        self.runtime_info: dict[str, Any] = {}
        self.feature_runtimes: set[str] = set()  # runtimes that computed the features this run read

    def embedder(self) -> Embedder:
        with stage("embedder_load"):
            emb = self._embedder_factory()
        self.runtime_info = emb.describe()
        return emb

    def backbone_module(self):
        from bobench.errors import FailedPrecondition

        if self._module_factory is None:
            raise FailedPrecondition(f"backbone {self.spec.name!r} has no trainable torch module here")
        return self._module_factory()

    def dataset_by_ref(self, ref: str | dict) -> Dataset:
        return self._dataset_loader(ref)

    def progress(self, done: int, total: int, message: str = "") -> None:
        if self._progress is not None:
            self._progress(done, total, message)

    def features(
        self, split: str, dataset: Dataset | None = None, variant: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ds = dataset or self.dataset
        indices = ds.split(split)
        if len(indices) == 0:
            raise InvalidArgument(f"dataset {ds.name!r}: split {split!r} is empty")
        key = feature_key(
            self.spec.digest(),
            ds.fingerprint,
            split,
            cache_variant(variant),
            precision=self.precision,
            runtime=self.runtime,
        )
        with stage("feature_cache"):
            cached = self.cache.get_with_meta(key)
        if cached is not None:
            self.feature_runtimes.add(str(cached[2].get("runtime", "unknown")))
            return cached[0], cached[1]
        feats = self._compute(
            ds, indices, variant, f"{self.spec.name} · {ds.name}/{split}{'·' + variant if variant else ''}"
        )
        self.feature_runtimes.add(str(self.runtime_info.get("runtime", "unknown")))
        labels = ds.labels[indices].astype(np.int64)
        with stage("feature_cache"):
            self.cache.put(
                key, feats, labels, meta={"backbone": self.spec.name, "dataset": ds.name, **self.runtime_info}
            )
        return feats, labels

    def _compute(self, ds: Dataset, indices: np.ndarray, variant: str | None, label: str) -> np.ndarray:
        embedder = self.embedder()
        computed_in = self.runtime_info.get("precision", "fp32")
        if computed_in != self.precision:
            raise InvalidArgument(
                f"{self.spec.name!r}: the embedder computes in precision {computed_in}, but this run's "
                f"features are keyed as {self.precision}"
            )
        chunk = max(1, embedder.batch_size)
        out: list[np.ndarray] = []
        total = len(indices)
        stream = getattr(embedder, "embed_stream", None)
        if stream is not None and total > chunk:  # a served embedder: several batches in flight
            starts = range(0, total, chunk)
            batches = (
                np.stack([self._prepare(ds, int(i), variant) for i in indices[start : start + chunk]])
                for start in starts
            )
            # the wait for answers counts as embedding; preparing the next batches (inside the
            # generator) as decode/resize, stages nested in this one
            with stage("embedding"):
                for start, features in zip(starts, stream(batches), strict=True):
                    out.append(np.asarray(features, dtype=np.float32))
                    done = min(start + chunk, total)
                    add_count("images_embedded", done - start)
                    self.progress(done, total, label)
            return np.concatenate(out, axis=0)
        for start in range(0, total, chunk):
            batch_idx = indices[start : start + chunk]
            batch = np.stack([self._prepare(ds, int(i), variant) for i in batch_idx])
            with stage("embedding"):
                out.append(embedder.embed(batch))
            add_count("images_embedded", len(batch_idx))
            self.progress(min(start + chunk, total), total, label)
        return np.concatenate(out, axis=0)

    def _prepare(self, ds: Dataset, i: int, variant: str | None) -> np.ndarray:
        """Item i as the model's uint8 [3, S, S] input; a variant is applied to that input (ImageNet-C
        corrupts the resized, cropped image, so a severity means the same for every photo size).
        With `inputs`, the decoded, resized input is shared: by later backbones with the same
        preprocessing, and within this run by the other variants of a corruption sweep."""
        if self.inputs is None:
            image = self._decode_resize(ds, i)
        else:
            image = self.inputs.get(
                self.spec.name,
                self._input_key,
                ds.fingerprint,
                i,
                lambda: self._decode_resize(ds, i),
                reuse_in_run=bool(variant),
            )
        if not variant:
            return image
        from bobench.data.corruptions import apply_variant

        # the seed depends on the item and the variant only, so every backbone sees the same corruption
        seed = zlib.crc32(f"{ds.fingerprint}:{i}:{variant}".encode())
        with stage("corruption"):
            out = apply_variant(image.transpose(1, 2, 0), variant, seed)
            size = self.spec.input_size
            if out.shape[:2] != (size, size):  # inputs under 32 px come back upscaled: back to the input size
                out = np.asarray(Image.fromarray(out).resize((size, size), Image.Resampling.BICUBIC))
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def _decode_resize(self, ds: Dataset, i: int) -> np.ndarray:
        with stage("decode"):
            raw = ds.load(i)
        with stage("resize_crop"):
            return resize_crop(raw, self.spec)
