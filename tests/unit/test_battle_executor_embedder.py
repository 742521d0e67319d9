"""LocalExecutor's warm embedder: a failed `make_embedder` must not leave the closed previous embedder
under its key (the next run of that backbone used to fail "Cannot invoke RPC on closed channel!"),
and a TensorRT embedder_variant is refused by in-process runtimes."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.backbones import get_spec
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.plan import register_custom_backbones
from bobench.config import Settings
from bobench.errors import BobenchError, FailedPrecondition

BROKEN = {
    "name": "test-missing-onnx",
    "source": "onnx",
    "model_id": "/nonexistent/bobench-test/model.onnx",
    "weights": "/nonexistent/bobench-test/model.onnx",
    "family": "cnn",
    "pretraining_method": "other",
    "pretraining_data": "unknown",
    "input_size": 32,
    "embed_dim": 8,
}


def test_failed_embedder_creation_does_not_leave_a_closed_embedder_under_the_old_key(tmp_path):
    register_custom_backbones((BROKEN,))
    executor = LocalExecutor(Settings(cache_dir=str(tmp_path), threads=1, batch_size=4))
    toy = get_spec("toy")
    images = np.zeros((2, 3, toy.input_size, toy.input_size), dtype=np.uint8)
    before = executor.embedder(toy)
    first = before.embed(images)
    with pytest.raises(BobenchError):
        executor.embedder(get_spec(BROKEN["name"]))
    again = executor.embedder(toy)
    assert again is not before  # the one closed before the failed creation is never handed out again
    np.testing.assert_allclose(again.embed(images), first, atol=1e-6)
    executor.close()


def test_tensorrt_variant_needs_the_triton_runtime(tmp_path):
    executor = LocalExecutor(Settings(cache_dir=str(tmp_path), threads=1))
    with pytest.raises(FailedPrecondition, match="trt-fp16.*Triton only"):
        executor.embedder(get_spec("toy"), "trt-fp16")


def test_each_tensorrt_variant_has_its_own_feature_cache(tmp_path):
    executor = LocalExecutor(Settings(cache_dir=str(tmp_path), threads=1))
    roots = {v: executor.feature_cache(v).root for v in ("onnx", "trt-fp16", "trt-fp32")}
    assert roots["onnx"] == executor.cache.root
    assert len(set(roots.values())) == 3
