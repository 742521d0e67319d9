"""On-disk feature cache keyed by (backbone digest, preprocessing, dataset fingerprint, split, variant,
precision, runtime). Keys are made by `feature_key` only, so every caller keys the same way.

The runtime is the engine that runs the network: "onnx" (the exported graph, run by ONNX Runtime in
process or inside Triton) or "torch" (the eager module): `--embedder torch` never reads ONNX Runtime
features. "onnx" is left out of the hash, so entries written before the runtime was keyed stay valid.

Every protocol reads features through it, so a re-run battle performs zero forward passes. Entries are
written atomically (temp file + rename): a crash never leaves a half-written entry that looks valid.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bobench.hashing import FEATURE_KEY_HEX, json_digest

log = logging.getLogger(__name__)


DEFAULT_RUNTIME = "onnx"


@dataclass(frozen=True)
class FeatureKey:
    backbone_digest: str  # BackboneSpec.digest(): weights, preprocessing, extra
    dataset_fingerprint: str
    split: str
    variant: str = ""  # deterministic image transform, e.g. "corrupt:fog:3"
    precision: str = "fp32"
    runtime: str = DEFAULT_RUNTIME  # what ran the network: "onnx" or "torch" (`feature_runtime`)

    def hexdigest(self) -> str:
        doc = dict(self.__dict__)
        if doc["runtime"] == DEFAULT_RUNTIME:
            del doc["runtime"]
        return json_digest(doc, FEATURE_KEY_HEX)


def feature_runtime(embedder: str) -> str:
    """The feature-key runtime of an embedder setting: "torch" for torch, "onnx" for onnxruntime and
    Triton (both run the exported ONNX graph; TensorRT variants have caches of their own)."""
    return "torch" if embedder == "torch" else DEFAULT_RUNTIME


def feature_key(
    backbone_digest: str,
    dataset_fingerprint: str,
    split: str,
    variant: str | None = None,
    *,
    precision: str = "fp32",
    runtime: str = DEFAULT_RUNTIME,
) -> FeatureKey:
    """The cache key of one split's features. `precision` is the embedder's (fp16 and fp32 features
    never share an entry), `runtime` what ran the network (`feature_runtime`). Raises InvalidArgument
    for a precision outside `embed.base.PRECISIONS` or an unknown runtime.
    """
    from bobench.embed.base import PRECISIONS
    from bobench.errors import InvalidArgument

    if precision not in PRECISIONS:
        raise InvalidArgument(f"feature key: precision {precision!r} is not one of {list(PRECISIONS)}")
    if runtime not in (DEFAULT_RUNTIME, "torch"):
        raise InvalidArgument(f"feature key: runtime {runtime!r} is not one of ['onnx', 'torch']")
    return FeatureKey(backbone_digest, dataset_fingerprint, split, variant or "", precision, runtime)


class FeatureCache:
    """Features as .npz files under `root/features/`; counts hits and misses for tests and logs.

    With `recompute` (`--recompute`), an entry this object has not written itself is a miss: every
    feature is computed again once, then served from what was written.
    """

    def __init__(self, root: str | os.PathLike, recompute: bool = False) -> None:
        self.root = Path(root) / "features"
        self.recompute = recompute
        self._written: set[str] = set()
        self.hits = 0
        self.misses = 0

    def _path(self, key: FeatureKey) -> Path:
        h = key.hexdigest()
        return self.root / h[:2] / f"{h}.npz"

    def get(self, key: FeatureKey) -> tuple[np.ndarray, np.ndarray] | None:
        hit = self.get_with_meta(key)
        return None if hit is None else hit[:2]

    def get_with_meta(self, key: FeatureKey) -> tuple[np.ndarray, np.ndarray, dict] | None:
        """(features, labels, meta) — meta says which backbone/runtime computed them — or None."""
        path = self._path(key)
        if not path.exists() or (self.recompute and key.hexdigest() not in self._written):
            self.misses += 1
            return None
        try:
            with np.load(path) as z:
                feats, labels = z["features"], z["labels"]
                meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        except (OSError, ValueError, KeyError) as exc:  # unreadable entry: recompute, never trust
            log.warning("feature cache entry %s is unreadable (%s); recomputing", path, exc)
            self.misses += 1
            return None
        self.hits += 1
        return feats, labels, meta

    def put(
        self, key: FeatureKey, features: np.ndarray, labels: np.ndarray, meta: dict | None = None
    ) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    features=features.astype(np.float32),
                    labels=labels.astype(np.int64),
                    meta=np.array(json.dumps({**key.__dict__, **(meta or {})})),
                )
            os.replace(tmp, path)
            self._written.add(key.hexdigest())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
