"""In-process embedders: torch and ONNX Runtime agree, registry wiring, input handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bobench.backbones import create_backbone
from bobench.embed import EMBEDDERS, make_embedder
from bobench.embed.onnx_embedder import OrtEmbedder
from bobench.embed.torch_embedder import TorchEmbedder
from bobench.errors import FailedPrecondition, InvalidArgument

torch.set_num_threads(1)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


@pytest.mark.parametrize("name", ["toy", "efficientnet_lite0"])
def test_torch_and_onnxruntime_embedders_agree(tmp_path, name):
    loaded = create_backbone(name, cache_dir=tmp_path)
    images = _images(5, loaded.spec.input_size)
    eager = make_embedder("torch", loaded, batch_size=2)
    ort = make_embedder("onnxruntime", loaded, batch_size=4, threads=1, cache_dir=tmp_path)
    a, b = eager.embed(images), ort.embed(images)
    assert a.shape == b.shape == (5, loaded.spec.embed_dim)
    assert float(np.max(np.abs(a - b))) <= 1e-4
    assert (eager.forward_passes, ort.forward_passes) == (3, 2)
    assert ort.export_report is not None and ort.export_report.verified


def test_embedders_are_registered_and_describe_their_runtime(tmp_path):
    assert {"torch", "onnxruntime"} <= set(EMBEDDERS)
    eager = make_embedder("torch", "toy", threads=1)
    ort = make_embedder("onnxruntime", "toy", cache_dir=tmp_path, threads=1)
    assert isinstance(eager, TorchEmbedder) and isinstance(ort, OrtEmbedder)
    assert eager.spec.embed_dim == 32 and eager.spec.weights_sha256
    assert eager.describe()["runtime"] == "torch" and eager.describe()["threads"] == 1
    d = ort.describe()
    assert (d["runtime"], d["device"], d["precision"], d["threads"], d["input_dtype"]) == (
        "onnxruntime",
        "cpu",
        "fp32",
        1,
        "uint8",
    )


def test_onnx_source_runs_in_ort_and_is_refused_by_torch(tmp_path):
    ort = OrtEmbedder("open_nsfw", cache_dir=tmp_path, batch_size=2)
    assert ort.embed(_images(3, 224)).shape == (3, 1024)
    assert ort.export_report is None  # ran the composed file directly
    with pytest.raises(FailedPrecondition, match="use runtime 'onnxruntime'"):
        TorchEmbedder("open_nsfw", cache_dir=str(tmp_path))


def test_float_pixels_accepted_only_when_they_are_whole_values(tmp_path):
    ort = OrtEmbedder("toy", cache_dir=tmp_path)
    images = _images(2, 32)
    np.testing.assert_array_equal(ort.embed(images.astype(np.float32)), ort.embed(images))
    np.testing.assert_allclose(
        TorchEmbedder("toy").embed(images.astype(np.float32)), ort.embed(images), atol=1e-5
    )
    with pytest.raises(InvalidArgument, match="not whole numbers in 0..255"):
        ort.embed(images.astype(np.float32) / 255.0 + 0.25)


def test_explicit_onnx_path_is_used(tmp_path):
    from bobench.export import export_onnx

    loaded = create_backbone("toy")
    report = export_onnx(loaded, tmp_path / "f32" / "model.onnx", input_dtype="float32")
    ort = OrtEmbedder(loaded, onnx_path=report.path, cache_dir=tmp_path)
    assert ort.input_dtype == "float32" and ort.onnx_path == report.path
    assert not (tmp_path / "onnx").exists()  # no cached export was built
    np.testing.assert_allclose(
        ort.embed(_images(2, 32)), TorchEmbedder(loaded).embed(_images(2, 32)), atol=1e-5
    )


def test_bad_image_shape_is_invalid_argument():
    with pytest.raises(InvalidArgument, match=r"\[N, 3, H, W\]"):
        TorchEmbedder("toy").embed(np.zeros((2, 32, 32, 3), np.uint8))
