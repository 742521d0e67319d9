"""BackboneSpec: the metadata that travels with a backbone's weights (timm's PretrainedCfg idea).

Preprocessing, export and the Triton model config are all derived from it, never restated.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from bobench.errors import InvalidArgument
from bobench.hashing import BACKBONE_DIGEST_HEX, json_digest

FAMILIES = ("cnn", "vit", "hierarchical-vit", "hybrid")
PRETRAINING_METHODS = ("supervised", "ssl", "vision-language", "generative", "random", "other")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def check_digest_field(value: object, where: str) -> None:
    """A declared weights_sha256 is None or a 64-character hex string; else InvalidArgument naming
    `where` (the field, e.g. "battle spec: backbones[0].weights_sha256").

    An all-digit digest left unquoted in YAML arrives as an int: it is refused, never skipped."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidArgument(
            f"{where}: must be a string of 64 hex digits, got a {type(value).__name__} ({value!r}); "
            "quote it in YAML"
        )
    if not _SHA256_HEX.fullmatch(value):
        raise InvalidArgument(f"{where}: must be 64 hex digits (a sha256), got {value!r}")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build, preprocess for, export and describe one backbone.

    Image contract (same for every embedder): a batch of uint8 RGB images, NCHW, already resized and
    centre-cropped to `input_size` on the client; the served model casts, scales by 1/255, subtracts
    `mean` and divides by `std` (both RGB, 0..1 scale), reorders channels/layout if the network wants
    BGR or NHWC, and returns the pooled feature of length `embed_dim`.
    """

    name: str
    source: str  # "timm" | "torchvision" | "onnx" | "open_clip" | "hf" | "toy"
    model_id: str  # the source's own model name (timm arch, torchvision fn, onnx file path, ...)
    family: str  # one of FAMILIES
    pretraining_method: str  # one of PRETRAINING_METHODS
    pretraining_data: str  # e.g. "ImageNet-1k", "LAION-2B", "none"
    input_size: int = 224  # square input side in pixels
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"  # "bilinear" | "bicubic" | "nearest"
    crop_pct: float = 0.875  # resize shorter side to input_size / crop_pct, then centre-crop
    embed_dim: int | None = None
    num_params: int | None = None
    weights: str = "random"  # "random" | "hub" | "package:<name>" | a file path | "s3://bucket/key"
    weights_sha256: str | None = None  # digest of the weights file; for random init, of (arch, seed)
    license: str = "unknown"
    channel_order: str = "RGB"  # what the network expects: "RGB" | "BGR"
    layout: str = "NCHW"  # what the network expects: "NCHW" | "NHWC"
    output_name: str | None = None  # ONNX sources: the graph tensor used as the feature
    seed: int = 0  # random-init seed
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing descriptor: part of every feature-cache key."""
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "channel_order": self.channel_order,
            "layout": self.layout,
        }

    def identity(self) -> dict[str, Any]:
        """Fields that determine the backbone's outputs (for run keys)."""
        return {
            "name": self.name,
            "source": self.source,
            "model_id": self.model_id,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "seed": self.seed if self.weights == "random" else None,
            "output_name": self.output_name,
            "preprocessing": self.preprocessing(),
            # pooling, prompt, timm kwargs, checkpoint file...: they change the outputs too. Left out
            # when empty, so the keys of specs without extras stay what they were.
            **({"extra": self.extra} if self.extra else {}),
        }

    def digest(self) -> str:
        """Stable short digest of `identity()` (extra included): run keys, feature-cache keys and
        export/publish names all derive from it."""
        return json_digest(self.identity(), BACKBONE_DIGEST_HEX)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        d = dict(d)
        check_digest_field(d.get("weights_sha256"), f"backbone {d.get('name')!r}: weights_sha256")
        # numbers arrive as ints from YAML ("crop_pct: 1") or gRPC Structs; normalise so digests agree
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        if "crop_pct" in d:
            d["crop_pct"] = float(d["crop_pct"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> BackboneSpec:
        return dataclasses.replace(self, **changes)
