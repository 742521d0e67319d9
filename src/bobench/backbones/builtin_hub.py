"""The Battle of the Backbones catalog (Goldblum et al., NeurIPS 2023): hub-weight entries.

These need a network (or a pre-staged Hugging Face / torch hub cache); offline they are listed with
available=False. Parameter counts are feature-extractor sizes (heads and projectors excluded); the
exact count and embedding dim are measured when a backbone is created.

MoCo v3, SSCD and the Stable Diffusion encoder have their own loaders (sources `moco_v3`,
`torchscript`, `diffusers_sd` in sources_checkpoints.py): their hub weights are the official checkpoint
files (extra["checkpoint_url"], cached under torch hub's `checkpoints/` as extra["checkpoint_file"])
or the diffusers layout on the Hugging Face hub. MoCo v3's ViT-S uses 12 attention heads (DeiT/timm
use 6): the weights load into either, so the head count is pinned in extra["timm_kwargs"].
"""

from __future__ import annotations

from typing import Any

from bobench.backbones.builtin import HALF, IMAGENET_MEAN, IMAGENET_STD, RANDOM_NOTE
from bobench.backbones.registry import register_spec
from bobench.backbones.spec import BackboneSpec

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# name, source, model_id, family, method, data, input_size, embed_dim, params (M), license, overrides
_Row = tuple[str, str, str, str, str, str, int, int | None, float, str, dict[str, Any]]
_VIT = {"mean": HALF, "std": HALF, "crop_pct": 0.9}
_CLIP = {"mean": CLIP_MEAN, "std": CLIP_STD, "crop_pct": 1.0}
_IN1K, _IN21K, _IN21K_FT = "ImageNet-1k", "ImageNet-21k", "ImageNet-21k -> ImageNet-1k"
_MOCO_URL = "https://dl.fbaipublicfiles.com/moco-v3"
_SSCD_URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection"


def _ckpt(url: str, **extra: Any) -> dict[str, Any]:
    """Extra fields for a checkpoint downloaded from `url` into torch hub's checkpoint folder."""
    return {"checkpoint_url": url, "checkpoint_file": url.rsplit("/", 1)[1], **extra}


# MoCo v3 linear eval: Resize(256) bilinear + CentreCrop(224), ImageNet mean/std.
_MOCO = {"interpolation": "bilinear", "notes": "MoCo v3 300-epoch pretraining checkpoint, base encoder"}
_SSCD = {
    "interpolation": "bilinear",
    "crop_pct": 1.0,
    "notes": "SSCD disc_mixup (TorchScript); output is already L2-normalised. SSCD's README resizes the "
    "short side to 288 without cropping; the square contract here centre-crops at 288",
}
_SD = {
    "mean": HALF,
    "std": HALF,
    "crop_pct": 1.0,
    "notes": "VAE encoder latent mean x 0.18215, U-Net conv_in + down blocks + mid block at timestep 0 with "
    "the CLIP text embedding of the empty prompt; feature = mid-block output averaged over space. "
    "512 px is SD v1's training resolution",
}

# fmt: off
CATALOG: tuple[_Row, ...] = (
    # supervised
    ("resnet50", "timm", "resnet50.a1_in1k", "cnn", "supervised", _IN1K, 224, 2048, 23.5, "apache-2.0", {"crop_pct": 0.95}),
    ("resnet101", "timm", "resnet101.a1h_in1k", "cnn", "supervised", _IN1K, 224, 2048, 42.5, "apache-2.0", {"crop_pct": 0.95}),
    ("convnext_tiny", "timm", "convnext_tiny.fb_in1k", "cnn", "supervised", _IN1K, 224, 768, 27.8, "apache-2.0", {}),
    ("convnext_small", "timm", "convnext_small.fb_in1k", "cnn", "supervised", _IN1K, 224, 768, 49.5, "apache-2.0", {}),
    ("convnext_base", "timm", "convnext_base.fb_in1k", "cnn", "supervised", _IN1K, 224, 1024, 87.6, "apache-2.0", {}),
    ("convnext_base_in22k", "timm", "convnext_base.fb_in22k", "cnn", "supervised", _IN21K, 224, 1024, 87.6, "apache-2.0", {}),
    ("convnext_base_in22ft1k", "timm", "convnext_base.fb_in22k_ft_in1k", "cnn", "supervised", _IN21K_FT, 224, 1024, 87.6, "apache-2.0", {}),
    ("convnext_xlarge_in22ft1k", "timm", "convnext_xlarge.fb_in22k_ft_in1k", "cnn", "supervised", _IN21K_FT, 224, 2048, 348.1, "apache-2.0", {}),
    ("vit_small_augreg_in1k", "timm", "vit_small_patch16_224.augreg_in1k", "vit", "supervised", _IN1K, 224, 384, 21.7, "apache-2.0", _VIT),
    ("vit_small_augreg_in21k_ft_in1k", "timm", "vit_small_patch16_224.augreg_in21k_ft_in1k", "vit", "supervised", _IN21K_FT, 224, 384, 21.7, "apache-2.0", _VIT),
    ("vit_base_augreg_in1k", "timm", "vit_base_patch16_224.augreg_in1k", "vit", "supervised", _IN1K, 224, 768, 85.8, "apache-2.0", _VIT),
    ("vit_base_augreg_in21k_ft_in1k", "timm", "vit_base_patch16_224.augreg_in21k_ft_in1k", "vit", "supervised", _IN21K_FT, 224, 768, 85.8, "apache-2.0", _VIT),
    ("vit_large_augreg_in21k_ft_in1k", "timm", "vit_large_patch16_224.augreg_in21k_ft_in1k", "vit", "supervised", _IN21K_FT, 224, 1024, 303.3, "apache-2.0", _VIT),
    ("swinv2_tiny", "timm", "swinv2_tiny_window8_256.ms_in1k", "hierarchical-vit", "supervised", _IN1K, 256, 768, 27.6, "mit", {"crop_pct": 0.9}),
    ("swinv2_base", "timm", "swinv2_base_window8_256.ms_in1k", "hierarchical-vit", "supervised", _IN1K, 256, 1024, 86.9, "mit", {"crop_pct": 0.9}),
    ("swinv2_base_in22ft1k", "timm", "swinv2_base_window12to16_192to256.ms_in22k_ft_in1k", "hierarchical-vit", "supervised", _IN21K_FT, 256, 1024, 86.9, "mit", {"crop_pct": 0.9}),
    ("swinv2_large_in22ft1k", "timm", "swinv2_large_window12to16_192to256.ms_in22k_ft_in1k", "hierarchical-vit", "supervised", _IN21K_FT, 256, 1536, 195.2, "mit", {"crop_pct": 0.9}),
    # self-supervised
    ("dino_vits16", "timm", "vit_small_patch16_224.dino", "vit", "ssl", _IN1K + " (no labels)", 224, 384, 21.7, "apache-2.0", {}),
    ("dino_vitb16", "timm", "vit_base_patch16_224.dino", "vit", "ssl", _IN1K + " (no labels)", 224, 768, 85.8, "apache-2.0", {}),
    ("dino_resnet50", "torchhub", "facebookresearch/dino:main/dino_resnet50", "cnn", "ssl", _IN1K + " (no labels)", 224, 2048, 23.5, "apache-2.0", {}),
    ("vicreg_resnet50", "torchhub", "facebookresearch/vicreg:main/resnet50", "cnn", "ssl", _IN1K + " (no labels)", 224, 2048, 23.5, "mit", {}),
    ("vicregl_convnext_xlarge", "torchhub", "facebookresearch/vicregl:main/convnext_xlarge_alpha0p75", "cnn", "ssl", "ImageNet-22k (no labels)", 224, None, 348.1, "cc-by-nc-4.0", {}),
    ("mae_vitb16", "timm", "vit_base_patch16_224.mae", "vit", "ssl", _IN1K + " (no labels, masked image modelling)", 224, 768, 85.8, "cc-by-nc-4.0", {}),
    ("mae_vitl16", "timm", "vit_large_patch16_224.mae", "vit", "ssl", _IN1K + " (no labels, masked image modelling)", 224, 1024, 303.3, "cc-by-nc-4.0", {}),
    ("mocov3_vits16", "moco_v3", "vit_small_patch16_224", "vit", "ssl", _IN1K + " (no labels)", 224, 384, 21.7, "cc-by-nc-4.0", {**_MOCO, "extra": _ckpt(f"{_MOCO_URL}/vit-s-300ep/vit-s-300ep.pth.tar", timm_kwargs={"num_heads": 12})}),
    ("mocov3_vitb16", "moco_v3", "vit_base_patch16_224", "vit", "ssl", _IN1K + " (no labels)", 224, 768, 85.8, "cc-by-nc-4.0", {**_MOCO, "extra": _ckpt(f"{_MOCO_URL}/vit-b-300ep/vit-b-300ep.pth.tar")}),
    ("mocov3_resnet50", "moco_v3", "resnet50", "cnn", "ssl", _IN1K + " (no labels)", 224, 2048, 23.5, "cc-by-nc-4.0", {**_MOCO, "extra": _ckpt(f"{_MOCO_URL}/r-50-300ep/r-50-300ep.pth.tar")}),
    # generative
    ("sd_v1_4_encoder", "diffusers_sd", "CompVis/stable-diffusion-v1-4", "hybrid", "generative", "LAION (SD v1.4 training data)", 512, 1280, 382.9, "creativeml-openrail-m", {**_SD, "extra": {"hf_hub_id": "CompVis/stable-diffusion-v1-4", "prompt": "", "timestep": 0}}),
    # vision-language
    ("clip_rn50_openai", "open_clip", "RN50", "cnn", "vision-language", "OpenAI WIT-400M", 224, 1024, 38.3, "mit", {**_CLIP, "extra": {"pretrained": "openai", "hf_hub_id": "timm/resnet50_clip.openai"}}),
    ("clip_rn101_openai", "open_clip", "RN101", "cnn", "vision-language", "OpenAI WIT-400M", 224, 512, 56.3, "mit", {**_CLIP, "extra": {"pretrained": "openai", "hf_hub_id": "timm/resnet101_clip.openai"}}),
    ("clip_rn50x64_openai", "open_clip", "RN50x64", "cnn", "vision-language", "OpenAI WIT-400M", 448, 1024, 420.4, "mit", {**_CLIP, "extra": {"pretrained": "openai", "hf_hub_id": "timm/resnet50x64_clip.openai"}}),
    ("clip_vitb16_laion2b", "open_clip", "ViT-B-16", "vit", "vision-language", "LAION-2B", 224, 512, 86.2, "mit", {**_CLIP, "extra": {"pretrained": "laion2b_s34b_b88k", "hf_hub_id": "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"}}),
    ("clip_vitl14_laion2b", "open_clip", "ViT-L-14", "vit", "vision-language", "LAION-2B", 224, 768, 304.0, "mit", {**_CLIP, "extra": {"pretrained": "laion2b_s32b_b82k", "hf_hub_id": "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"}}),
    # other objectives
    ("sam_vitb_encoder", "hf", "facebook/sam-vit-base", "vit", "other", "SA-1B (segmentation)", 1024, 256, 89.7, "apache-2.0", {"crop_pct": 1.0, "extra": {"hf_submodule": "vision_encoder", "pool": "mean"}}),
    ("sscd_resnet50", "torchscript", "sscd_disc_mixup", "cnn", "other", "DISC2021 (copy detection)", 288, 512, 24.6, "mit", {**_SSCD, "extra": _ckpt(f"{_SSCD_URL}/sscd_disc_mixup.torchscript.pt")}),
    ("midas_swinv2_tiny", "hf", "Intel/dpt-swinv2-tiny-256", "hierarchical-vit", "other", "MiDaS MIX-6 (depth)", 256, None, 41.0, "mit", {"mean": HALF, "std": HALF, "crop_pct": 1.0, "extra": {"pool": "mean"}}),
)

RANDOM_BASELINES: tuple[tuple[str, str, int, float, dict[str, Any]], ...] = (
    ("resnet50", "cnn", 2048, 23.5, {}),
    ("convnext_tiny", "cnn", 768, 27.8, {}),
    ("vit_small_patch16_224", "vit", 384, 21.7, _VIT),
    ("swinv2_tiny_window8_256", "hierarchical-vit", 768, 27.6, {"input_size": 256, "crop_pct": 0.9}),
)
# fmt: on


def _register_catalog() -> None:
    for name, source, model_id, family, method, data, size, dim, params_m, lic, over in CATALOG:
        fields: dict[str, Any] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, **over}
        note = fields.pop("notes", "")
        register_spec(
            BackboneSpec(
                name=name,
                source=source,
                model_id=model_id,
                family=family,
                pretraining_method=method,
                pretraining_data=data,
                input_size=size,
                embed_dim=dim,
                num_params=int(params_m * 1e6),
                weights="hub",
                license=lic,
                notes="Battle of the Backbones catalog entry" + (f"; {note}" if note else ""),
                **fields,
            )
        )
    for arch, family, dim, params_m, over in RANDOM_BASELINES:
        fields = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, **over}
        register_spec(
            BackboneSpec(
                name=f"{arch}-random",
                source="timm",
                model_id=arch,
                family=family,
                pretraining_method="random",
                pretraining_data="none",
                embed_dim=dim,
                num_params=int(params_m * 1e6),
                weights="random",
                license="apache-2.0",
                notes=RANDOM_NOTE,
                **fields,
            )
        )


_register_catalog()
