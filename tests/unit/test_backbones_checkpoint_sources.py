"""MoCo v3 checkpoints, TorchScript (SSCD) and the Stable Diffusion encoder, all built offline from tiny
stand-ins saved in the official formats, then loaded through `create_backbone`."""

from __future__ import annotations

import hashlib
import sys
import tarfile
import types
import urllib.error

import numpy as np
import pytest
import timm
import torch
from torch import nn

from bobench.backbones import create_backbone, get_spec, weights_available
from bobench.backbones.sources_checkpoints import StableDiffusionEncoder
from bobench.errors import InvalidArgument, Unavailable
from bobench.hashing import sha256_file

torch.set_num_threads(1)


def _pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def _normalise(images: torch.Tensor, spec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


# ---------------------------------------------------------------- MoCo v3


def _moco_checkpoint(model: nn.Module, head_prefix: str, path, extra_keys=None) -> None:
    """Save `model` the way MoCo v3's DDP training does: base + momentum encoders, projector, predictor."""
    gen = torch.Generator().manual_seed(5)
    state = {}
    for key, value in model.state_dict().items():
        state[f"module.base_encoder.{key}"] = value.clone()
        state[f"module.momentum_encoder.{key}"] = value + 1.0  # must never be loaded
    for i, shape in enumerate([(64, 16), (64,), (32, 64)]):
        state[f"module.base_encoder.{head_prefix}{i}.weight"] = torch.randn(shape, generator=gen)
        state[f"module.momentum_encoder.{head_prefix}{i}.weight"] = torch.randn(shape, generator=gen)
        state[f"module.predictor.{i}.weight"] = torch.randn(shape, generator=gen)
    state.update(extra_keys or {})
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": state, "optimizer": {"lr": 1e-4}}, path)


def _moco_vit_spec(path, **changes):
    # mocov3_vits16's recipe on a 2-block, 192-wide ViT: same code path, milliseconds instead of seconds
    spec = get_spec("mocov3_vits16")
    extra = {**spec.extra, "timm_kwargs": {"num_heads": 12, "depth": 2}}
    return spec.replace(
        model_id="vit_tiny_patch16_224", embed_dim=192, weights=str(path), extra=extra, **changes
    )


def _timm_reference(arch: str, **kwargs) -> nn.Module:
    torch.manual_seed(3)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs).eval()
    with torch.no_grad():  # non-degenerate weights: random init has zero biases / unit norms
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def test_moco_v3_vit_loads_base_encoder_only_and_matches_the_original(tmp_path):
    original = _timm_reference("vit_tiny_patch16_224", num_heads=12, depth=2)
    path = tmp_path / "vit-s-300ep.pth.tar"
    _moco_checkpoint(original, "head.", path)
    loaded = create_backbone(_moco_vit_spec(path), cache_dir=tmp_path)
    images = _pixels(2, 224)
    with torch.no_grad():
        got, expected = loaded.module(images), original(_normalise(images, loaded.spec))
    torch.testing.assert_close(got, expected)  # wrapper folds normalisation: float rounding only
    assert loaded.spec.weights_sha256 == sha256_file(path)
    assert loaded.spec.embed_dim == 192
    assert loaded.spec.num_params == sum(p.numel() for p in original.parameters())


def test_moco_v3_vit_small_is_pinned_to_twelve_heads(tmp_path):
    assert get_spec("mocov3_vits16").extra["timm_kwargs"] == {"num_heads": 12}
    original = _timm_reference("vit_tiny_patch16_224", num_heads=12, depth=2)
    path = tmp_path / "ckpt.pth.tar"
    _moco_checkpoint(original, "head.", path)
    spec = _moco_vit_spec(path)
    six_heads = create_backbone(spec.replace(extra={**spec.extra, "timm_kwargs": {"depth": 2}}))
    images = _pixels(1, 224)
    with torch.no_grad():  # the weights fit either head count, the features do not
        assert not torch.allclose(six_heads.module(images), original(_normalise(images, spec)), atol=1e-3)


def test_moco_v3_resnet_drops_fc_projector(tmp_path):
    original = _timm_reference("resnet18")
    path = tmp_path / "r-50-300ep.pth.tar"
    _moco_checkpoint(original, "fc.", path)
    spec = get_spec("mocov3_resnet50").replace(
        model_id="resnet18", embed_dim=512, input_size=64, weights=str(path)
    )
    loaded = create_backbone(spec, cache_dir=tmp_path)
    images = _pixels(2, 64, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(images), original(_normalise(images, spec)))


def test_moco_v3_rejects_foreign_keys_missing_keys_and_linear_eval_checkpoints(tmp_path):
    original = _timm_reference("vit_tiny_patch16_224", num_heads=12, depth=2)
    foreign = tmp_path / "foreign.pth.tar"
    _moco_checkpoint(original, "head.", foreign, extra_keys={"module.queue": torch.zeros(3)})
    with pytest.raises(InvalidArgument, match=r"foreign\.pth\.tar key 'module\.queue'"):
        create_backbone(_moco_vit_spec(foreign))

    missing = tmp_path / "missing.pth.tar"
    _moco_checkpoint(original, "head.", missing)
    ckpt = torch.load(missing, weights_only=True)
    del ckpt["state_dict"]["module.base_encoder.norm.weight"]
    torch.save(ckpt, missing)
    with pytest.raises(InvalidArgument, match=r"(?s)missing\.pth\.tar does not match.*Missing.*norm\.weight"):
        create_backbone(_moco_vit_spec(missing))

    linear = tmp_path / "linear-vit-s-300ep.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, linear)
    with pytest.raises(InvalidArgument, match="neither the base encoder"):
        create_backbone(_moco_vit_spec(linear))


def test_moco_v3_hub_weights_use_the_torch_hub_cache_and_fail_offline_naming_url_and_path(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, progress=True):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    spec = _moco_vit_spec("hub").replace(weights="hub")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "vit-s-300ep.pth.tar"
    assert not weights_available(spec)
    with pytest.raises(Unavailable, match=r"vit-s-300ep/vit-s-300ep\.pth\.tar.*put it at .*checkpoints"):
        create_backbone(spec)
    original = _timm_reference("vit_tiny_patch16_224", num_heads=12, depth=2)
    assert not cached.exists()
    cached.parent.mkdir(parents=True, exist_ok=True)
    _moco_checkpoint(original, "head.", cached)
    assert weights_available(spec)
    loaded = create_backbone(spec, cache_dir=tmp_path)  # no download: the cached file is used
    assert loaded.spec.weights_sha256 == sha256_file(cached)


def test_pretrained_only_sources_refuse_random_weights():
    with pytest.raises(InvalidArgument, match="pretrained checkpoints only"):
        create_backbone("mocov3_resnet50", weights="random")


# ---------------------------------------------------------------- TorchScript (SSCD)


class _TinyDescriptor(nn.Module):
    """SSCD's shape in miniature: conv trunk, GeM pooling, linear projection, L2 normalisation."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2))
        self.proj = nn.Linear(16, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x).clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1.0 / 3)
        return nn.functional.normalize(self.proj(h), dim=1)


def _sscd_spec(path):
    return get_spec("sscd_resnet50").replace(weights=str(path), embed_dim=12, input_size=48)


def test_torchscript_loads_equal_to_the_scripted_module_and_exports_to_onnx(tmp_path):
    from bobench.export.onnx_export import export_onnx

    original = _TinyDescriptor().eval()
    path = tmp_path / "sscd_disc_mixup.torchscript.pt"
    torch.jit.script(original).save(str(path))
    loaded = create_backbone(_sscd_spec(path), cache_dir=tmp_path)
    images = _pixels(3, 48, seed=2)
    with torch.no_grad():
        got = loaded.module(images)
        torch.testing.assert_close(got, original(_normalise(images, loaded.spec)))
    torch.testing.assert_close(got.norm(dim=1), torch.ones(3))  # SSCD-style: already L2-normalised
    assert loaded.spec.weights_sha256 == sha256_file(path)
    assert loaded.spec.num_params == sum(p.numel() for p in original.parameters())
    report = export_onnx(loaded, tmp_path / "onnx" / "model.onnx")
    assert report.verified and report.max_abs_err <= 1e-4


def test_torchscript_rejects_a_file_that_is_not_torchscript(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(InvalidArgument, match=r"cannot read TorchScript file .*weights\.pt"):
        create_backbone(_sscd_spec(path))


def test_sscd_catalog_entry_points_at_the_official_torchscript_file():
    spec = get_spec("sscd_resnet50")
    assert spec.source == "torchscript" and spec.embed_dim == 512 and spec.input_size == 288
    assert spec.extra["checkpoint_url"].endswith("/sscd_disc_mixup.torchscript.pt")
    assert spec.mean == (0.485, 0.456, 0.406) and spec.crop_pct == 1.0


# ---------------------------------------------------------------- Stable Diffusion encoder

try:
    import diffusers
except ModuleNotFoundError:  # optional: the SD loader's own tests need it, the Unavailable test does not
    diffusers = None
needs_diffusers = pytest.mark.skipif(diffusers is None, reason="diffusers not installed")
TINY_TOKENS, TINY_TEXT_DIM = 7, 24


def _tiny_vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).eval()


def _tiny_unet():
    torch.manual_seed(1)
    return diffusers.UNet2DConditionModel(
        sample_size=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        cross_attention_dim=TINY_TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    ).eval()


def _text_embedding() -> torch.Tensor:
    return torch.randn(1, TINY_TOKENS, TINY_TEXT_DIM, generator=torch.Generator().manual_seed(2))


@needs_diffusers
def test_sd_encoder_equals_diffusers_own_encode_and_unet_mid_block():
    vae, unet, text = _tiny_vae(), _tiny_unet(), _text_embedding()
    encoder = StableDiffusionEncoder(vae, unet, text).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    seen = {}

    def record(module, inputs, output) -> None:  # returning None keeps the block's output unchanged
        seen["mid"] = output

    unet.mid_block.register_forward_hook(record)
    with torch.no_grad():
        latent = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        torch.testing.assert_close(encoder.latents(x), latent)
        unet(latent, 0, encoder_hidden_states=text.expand(2, -1, -1))
        features = encoder(x)
    assert features.shape == (2, 32)
    torch.testing.assert_close(features, seen["mid"].mean(dim=(2, 3)))
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), features, rtol=0, atol=0)  # deterministic
        assert not torch.allclose(encoder(x[:1]), encoder(x[1:]))  # depends on the image


@needs_diffusers
def test_sd_encoder_depends_on_the_fixed_prompt_embedding():
    vae, unet = _tiny_vae(), _tiny_unet()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = StableDiffusionEncoder(vae, unet, _text_embedding())(x)
        b = StableDiffusionEncoder(vae, unet, _text_embedding() + 1.0)(x)
    assert not torch.allclose(a, b)


@needs_diffusers
def test_sd_encoder_rejects_non_v1_unets():
    unet = _tiny_unet()
    unet.class_embedding = nn.Embedding(3, 64)
    with pytest.raises(InvalidArgument, match="class_embedding"):
        StableDiffusionEncoder(_tiny_vae(), unet, _text_embedding())


class _FakeTokenizer:
    """Stands in for transformers.CLIPTokenizer (not installed here): fixed ids, SD's padding call."""

    model_max_length = TINY_TOKENS

    @classmethod
    def from_pretrained(cls, root, subfolder):
        return cls()

    def __call__(self, texts, padding, max_length, truncation, return_tensors):
        assert padding == "max_length" and return_tensors == "pt"
        return types.SimpleNamespace(input_ids=torch.arange(max_length)[None] % 5)


class _FakeTextModel(nn.Module):
    @classmethod
    def from_pretrained(cls, root, subfolder):
        torch.manual_seed(4)
        return cls()

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, TINY_TEXT_DIM)

    def forward(self, ids):
        return (self.embed(ids),)


@pytest.fixture
def sd_directory(tmp_path, monkeypatch):
    fake = types.ModuleType("transformers")
    fake.CLIPTokenizer, fake.CLIPTextModel = _FakeTokenizer, _FakeTextModel
    monkeypatch.setitem(sys.modules, "transformers", fake)
    root = tmp_path / "sd-tiny"
    _tiny_vae().save_pretrained(root / "vae")
    _tiny_unet().save_pretrained(root / "unet")
    return root


def _sd_spec(weights):
    return get_spec("sd_v1_4_encoder").replace(weights=str(weights), input_size=32, embed_dim=32)


@needs_diffusers
def test_sd_loader_reads_a_local_directory_and_a_tar_of_it(sd_directory, tmp_path):
    loaded = create_backbone(_sd_spec(sd_directory), cache_dir=tmp_path / "cache")
    images = _pixels(2, 32, seed=3)
    prompt_ids = _FakeTokenizer()([""], "max_length", TINY_TOKENS, True, "pt").input_ids
    text = _FakeTextModel.from_pretrained("", "")(prompt_ids)[0]
    expected_net = StableDiffusionEncoder(_tiny_vae(), _tiny_unet(), text).eval()
    with torch.no_grad():
        features = loaded.module(images)
        torch.testing.assert_close(features, expected_net(_normalise(images, loaded.spec)))
    assert features.shape == (2, 32) and len(loaded.spec.weights_sha256) == 64

    archive = tmp_path / "sd-tiny.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(sd_directory, arcname="stable-diffusion-tiny")
    from_tar = create_backbone(_sd_spec(archive), cache_dir=tmp_path / "cache")
    assert from_tar.spec.weights_sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    with torch.no_grad():
        torch.testing.assert_close(from_tar.module(images), features)
    assert len(list((tmp_path / "cache" / "diffusers_sd").iterdir())) == 1


@needs_diffusers
def test_sd_encoder_exports_to_onnx_matching_torch(sd_directory, tmp_path):
    from bobench.export.onnx_export import export_onnx

    loaded = create_backbone(_sd_spec(sd_directory), cache_dir=tmp_path)
    report = export_onnx(loaded, tmp_path / "onnx" / "model.onnx")
    assert report.verified and report.max_abs_err <= 1e-4


@needs_diffusers
def test_sd_hub_weights_offline_are_unavailable_with_download_hint(sd_directory, tmp_path, monkeypatch):
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(Unavailable, match=r"hf download CompVis/stable-diffusion-v1-4 .*Hugging Face cache"):
        create_backbone("sd_v1_4_encoder", cache_dir=tmp_path)


@needs_diffusers
def test_sd_loader_rejects_a_file_that_is_not_a_diffusers_tar(sd_directory, tmp_path):
    not_tar = tmp_path / "sd.ckpt"
    not_tar.write_bytes(b"not an archive")
    with pytest.raises(InvalidArgument, match=r"sd\.ckpt is neither a diffusers directory nor a \.tar"):
        create_backbone(_sd_spec(not_tar), cache_dir=tmp_path)


@needs_diffusers
def test_sd_loader_names_the_missing_subfolder_of_a_local_directory(sd_directory, tmp_path):
    (sd_directory / "unet" / "config.json").unlink()
    with pytest.raises(InvalidArgument, match=r"cannot load unet/ from .*sd-tiny"):
        create_backbone(_sd_spec(sd_directory), cache_dir=tmp_path)


def test_sd_without_diffusers_or_transformers_is_unavailable_with_pip_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import fails even where it is installed
    with pytest.raises(Unavailable, match=r"`pip install diffusers transformers`"):
        create_backbone("sd_v1_4_encoder")
    monkeypatch.delitem(sys.modules, "diffusers")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(Unavailable, match=r"`pip install diffusers transformers`"):
        create_backbone("sd_v1_4_encoder")


def test_new_catalog_rows_are_listed_as_hub_weights_not_available_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    dims = {"mocov3_vits16": 384, "mocov3_vitb16": 768, "mocov3_resnet50": 2048}
    dims |= {"sscd_resnet50": 512, "sd_v1_4_encoder": 1280}
    for name, dim in dims.items():
        spec = get_spec(name)
        assert spec.weights == "hub" and spec.embed_dim == dim and not weights_available(spec)
    assert get_spec("sd_v1_4_encoder").num_params == 382_900_000
    assert get_spec("mocov3_vits16").license == "cc-by-nc-4.0"
