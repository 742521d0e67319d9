"""Precision is recorded truthfully and is part of the feature-cache key.

TensorRT runs cannot happen on this machine, so the TensorRT part is the metadata: which precision a
published `embedder_variant` computes at (what the Triton embedder serving it reports is checked
against the real tritonserver in tests/integration/test_triton_precision.py). fp16 and
fp32 features never share a cache entry, checked with the CPU embedders and a real LocalContext.
"""

from __future__ import annotations

import numpy as np
import pytest

from bobench.battle.context import LocalContext
from bobench.data import load_dataset
from bobench.embed import make_embedder
from bobench.embed.base import PRECISIONS
from bobench.embed.cache import FeatureCache, feature_key
from bobench.errors import InvalidArgument
from bobench.export.tensorrt import precision_of_variant


@pytest.mark.parametrize(
    ("variant", "precision"), [("onnx", "fp32"), ("trt-fp16", "fp16"), ("trt-fp32", "fp32")]
)
def test_each_embedder_variant_names_its_precision(variant, precision):
    assert precision_of_variant(variant) == precision


def test_unknown_variant_is_refused_by_name():
    with pytest.raises(InvalidArgument, match="'trt-int4'"):
        precision_of_variant("trt-int4")


def test_every_published_variant_has_a_precision():
    from bobench.export.triton_repo import EMBEDDER_VARIANTS

    assert {precision_of_variant(v) for v in EMBEDDER_VARIANTS} <= set(PRECISIONS)


def test_key_differs_by_precision_and_refuses_unknown_ones():
    fp32 = feature_key("digest", "fingerprint", "train", precision="fp32")
    fp16 = feature_key("digest", "fingerprint", "train", precision="fp16")
    assert fp32.hexdigest() != fp16.hexdigest()
    assert feature_key("digest", "fingerprint", "train") == fp32  # fp32 unless said otherwise
    with pytest.raises(InvalidArgument, match="precision 'half'"):
        feature_key("digest", "fingerprint", "train", precision="half")


class _Scaled:
    """A CPU embedder whose features depend on the precision it claims (as fp16 ones would)."""

    def __init__(self, inner, precision: str, scale: float) -> None:
        self.inner, self.precision, self.scale = inner, precision, scale
        self.batch_size, self.spec = inner.batch_size, inner.spec

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.inner.embed(images) * self.scale

    def describe(self) -> dict:
        return {**self.inner.describe(), "precision": self.precision}


def _context(tmp_path, embedder, precision: str) -> LocalContext:
    return LocalContext(
        embedder.spec, load_dataset("toy"), cache=FeatureCache(tmp_path), embedder_factory=lambda: embedder,
        dataset_loader=load_dataset, precision=precision,
    )  # fmt: skip


def test_fp16_and_fp32_features_never_share_an_entry(tmp_path):
    inner = make_embedder("onnxruntime", "toy", batch_size=8, cache_dir=str(tmp_path), threads=1)
    fp32_feats, _ = _context(tmp_path, _Scaled(inner, "fp32", 1.0), "fp32").features("train")
    fp16_ctx = _context(tmp_path, _Scaled(inner, "fp16", 2.0), "fp16")
    fp16_feats, _ = fp16_ctx.features("train")
    assert fp16_ctx.cache.hits == 0  # computed afresh, not the fp32 entry
    np.testing.assert_allclose(fp16_feats, 2.0 * fp32_feats, rtol=1e-5)
    again = _context(tmp_path, _Scaled(inner, "fp32", 5.0), "fp32")
    np.testing.assert_allclose(again.features("train")[0], fp32_feats)  # the fp32 entry, untouched
    assert again.cache.hits == 1
    inner.close()


def test_a_context_refuses_an_embedder_whose_precision_differs_from_its_key(tmp_path):
    inner = make_embedder("onnxruntime", "toy", batch_size=8, cache_dir=str(tmp_path), threads=1)
    ctx = _context(tmp_path, _Scaled(inner, "fp16", 1.0), "fp32")
    with pytest.raises(InvalidArgument, match="precision fp16.*fp32"):
        ctx.features("train")
    inner.close()


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_cpu_embedders_record_fp32(tmp_path, runtime):
    emb = make_embedder(runtime, "toy", batch_size=2, cache_dir=str(tmp_path), threads=1)
    assert emb.describe()["precision"] == "fp32" == emb.precision
    emb.close()
