"""The Battle of the Backbones catalog (Goldblum et al., NeurIPS 2023): hub-weight entries.

These need a network (or a pre-staged Hugging Face / torch hub cache); offline they are listed with
available=False. Parameter counts are approximate feature-extractor sizes as published; the exact
count and embedding dim are measured when a backbone is created. Not yet catalogued (no loader for
their checkpoint formats): MoCo v3 (tar checkpoints), SSCD (TorchScript), Stable Diffusion encoder
(diffusers).
"""

from __future__ import annotations

from typing import Any

from bobench.backbones._registry import register_spec
from bobench.backbones.builtin import HALF, IMAGENET_MEAN, IMAGENET_STD, RANDOM_NOTE
from bobench.backbones.spec import BackboneSpec

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# name, source, model_id, family, method, data, input_size, embed_dim, params (M), licence, overrides
_Row = tuple[str, str, str, str, str, str, int, int | None, float, str, dict[str, Any]]
_VIT = {"mean": HALF, "std": HALF, "crop_pct": 0.9}
_CLIP = {"mean": CLIP_MEAN, "std": CLIP_STD, "crop_pct": 1.0}
_IN1K, _IN21K, _IN21K_FT = "ImageNet-1k", "ImageNet-21k", "ImageNet-21k -> ImageNet-1k"

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
    # vision-language
    ("clip_rn50_openai", "open_clip", "RN50", "cnn", "vision-language", "OpenAI WIT-400M", 224, 1024, 38.3, "mit", {**_CLIP, "extra": {"pretrained": "openai", "hf_hub_id": "timm/resnet50_clip.openai"}}),
    ("clip_rn101_openai", "open_clip", "RN101", "cnn", "vision-language", "OpenAI WIT-400M", 224, 512, 56.3, "mit", {**_CLIP, "extra": {"pretrained": "openai", "hf_hub_id": "timm/resnet101_clip.openai"}}),
    ("clip_rn50x64_openai", "open_clip", "RN50x64", "cnn", "vision-language", "OpenAI WIT-400M", 448, 1024, 420.4, "mit", {**_CLIP, "extra": {"pretrained": "openai", "hf_hub_id": "timm/resnet50x64_clip.openai"}}),
    ("clip_vitb16_laion2b", "open_clip", "ViT-B-16", "vit", "vision-language", "LAION-2B", 224, 512, 86.2, "mit", {**_CLIP, "extra": {"pretrained": "laion2b_s34b_b88k", "hf_hub_id": "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"}}),
    ("clip_vitl14_laion2b", "open_clip", "ViT-L-14", "vit", "vision-language", "LAION-2B", 224, 768, 304.0, "mit", {**_CLIP, "extra": {"pretrained": "laion2b_s32b_b82k", "hf_hub_id": "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"}}),
    # other objectives
    ("sam_vitb_encoder", "hf", "facebook/sam-vit-base", "vit", "other", "SA-1B (segmentation)", 1024, 256, 89.7, "apache-2.0", {"crop_pct": 1.0, "extra": {"hf_submodule": "vision_encoder", "pool": "mean"}}),
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
                notes="Battle of the Backbones catalog entry",
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
