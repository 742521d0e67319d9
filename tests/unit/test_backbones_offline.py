"""Offline pretrained backbones: EfficientNet-Lite0/1/2 from pip packages, open_nsfw from ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bobench.backbones import create_backbone, get_spec
from bobench.backbones.sources_onnx import manual_preprocess
from bobench.embed.preprocess import resize_crop
from bobench.errors import InvalidArgument
from bobench.export.onnx_export import _raw_with_feature_output, ort_session
from bobench.tensors import INPUT_NAME, OUTPUT_NAME

torch.set_num_threads(1)
ESPRESSO = 967  # ImageNet-1k class index


def test_lite0_classifies_coffee_as_espresso_through_our_preprocessing(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    loaded = create_backbone("efficientnet_lite0", cache_dir=tmp_path)
    image = torch.from_numpy(resize_crop(skimage_data.coffee(), loaded.spec))[None]
    with torch.no_grad():
        probs = loaded.head(loaded.module(image)).softmax(dim=-1)[0]
    assert int(probs.argmax()) == ESPRESSO
    assert float(probs[ESPRESSO]) > 0.8
    assert loaded.spec.embed_dim == 1280 and loaded.spec.num_params == 3_371_008


@pytest.mark.parametrize(
    "name,size,params", [("efficientnet_lite1", 240, 4_135_680), ("efficientnet_lite2", 260, 4_811_072)]
)
def test_lite1_lite2_load_strictly_with_their_input_sizes(tmp_path, name, size, params):
    loaded = create_backbone(name, cache_dir=tmp_path)
    assert (
        loaded.spec.input_size == size and loaded.spec.embed_dim == 1280 and loaded.spec.num_params == params
    )
    assert loaded.spec.weights_sha256 and len(loaded.spec.weights_sha256) == 64
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, size, size), dtype=np.uint8))
    with torch.no_grad():
        assert loaded.module(x).shape == (2, 1280)


def test_ordered_key_map_rejects_a_checkpoint_of_another_architecture(tmp_path):
    lite0_weights = get_spec("efficientnet_lite0")
    wrong = lite0_weights.replace(name="lite1-with-lite0-weights", model_id="tf_efficientnet_lite1")
    with pytest.raises(InvalidArgument, match="does not fit|tensors, model"):
        create_backbone(wrong, cache_dir=tmp_path)


def test_open_nsfw_composed_graph_equals_manual_bgr_preprocessing_on_raw_onnx(tmp_path):
    loaded = create_backbone("open_nsfw", cache_dir=tmp_path)
    assert loaded.module is None and loaded.spec.embed_dim == 1024
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 224, 224), dtype=np.uint8)
    features = ort_session(loaded.onnx_path).run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    assert features.shape == (3, 1024) and features.dtype == np.float32
    raw = _raw_with_feature_output(loaded)
    nhwc_bgr = images.transpose(0, 2, 3, 1)[..., ::-1].astype(np.float32) - np.array(
        [104, 117, 123], np.float32
    )
    np.testing.assert_allclose(manual_preprocess(images, loaded.spec), nhwc_bgr, atol=1e-3)
    expected = raw.run(["Reshape:0"], {raw.get_inputs()[0].name: np.ascontiguousarray(nhwc_bgr)})[0]
    np.testing.assert_allclose(features, expected, atol=1e-4, rtol=1e-4)
    assert features.std(axis=0).mean() > 0  # not a constant output


def test_open_nsfw_composed_file_is_cached_by_content(tmp_path):
    first = create_backbone("open_nsfw", cache_dir=tmp_path)
    mtime = first.onnx_path.stat().st_mtime_ns
    second = create_backbone("open_nsfw", cache_dir=tmp_path)
    assert second.onnx_path == first.onnx_path and second.onnx_path.stat().st_mtime_ns == mtime
