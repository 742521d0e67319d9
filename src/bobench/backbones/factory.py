"""`create_backbone`: one factory that dispatches on `spec.source` through a registry of loaders.

Loaders are registered as `lazy("module:function")` references (`bobench.registry`) so that
registering (and listing) them imports nothing; torch, timm, onnx, open_clip or transformers are imported only when a backbone of that source
is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bobench.backbones.registry import get_spec, validate_spec
from bobench.backbones.spec import BackboneSpec, check_digest_field
from bobench.errors import InvalidArgument
from bobench.registry import Registry, lazy

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SOURCE_LOADERS: Registry[Callable[..., LoadedBackbone]] = Registry("backbone source")
for _source, _target in (
    ("timm", "bobench.backbones.sources_torch:load_timm"),
    ("torchvision", "bobench.backbones.sources_torch:load_torchvision"),
    ("toy", "bobench.backbones.sources_torch:load_toy"),
    ("torchhub", "bobench.backbones.sources_torch:load_torchhub"),
    ("open_clip", "bobench.backbones.sources_openclip_hf:load_open_clip"),
    ("hf", "bobench.backbones.sources_openclip_hf:load_hf"),
    ("onnx", "bobench.backbones.sources_onnx:load_onnx"),
    ("moco_v3", "bobench.backbones.sources_checkpoints:load_moco_v3"),
    ("torchscript", "bobench.backbones.sources_checkpoints:load_torchscript"),
    ("diffusers_sd", "bobench.backbones.sources_checkpoints:load_diffusers_sd"),
):
    SOURCE_LOADERS.add(_source, lazy(_target))


@dataclass
class LoadedBackbone:
    """A created backbone.

    `spec` comes back filled in (weights_sha256, num_params = feature-extractor parameters,
    embed_dim measured). `module` implements the tensor contract (uint8/float32 [N,3,H,W] 0..255 RGB
    -> float32 [N, D]) for torch sources; `onnx_path` is a composed ONNX file with the same contract
    (input "images", output "features") for ONNX sources, whose unmodified file is `raw_onnx_path`.
    `head` maps features to class logits when the source ships a classifier, else None.
    """

    spec: BackboneSpec
    module: torch.nn.Module | None = None
    onnx_path: Path | None = None
    raw_onnx_path: Path | None = None
    head: torch.nn.Module | None = None

    @property
    def name(self) -> str:
        return self.spec.name


Loader = Callable[..., LoadedBackbone]


def _loader(source: str) -> Loader:
    return SOURCE_LOADERS.get(source)


def create_backbone(
    name_or_spec: str | BackboneSpec, *, cache_dir: str | Path | None = None, **overrides: Any
) -> LoadedBackbone:
    """Build a backbone by registered name or from a spec, ready for inference (eval mode).

    `overrides` replace spec fields (e.g. seed=1, weights="/path/ckpt.safetensors"); `cache_dir`
    holds derived files (composed ONNX). Raises InvalidArgument (unknown name/source, bad checkpoint,
    declared embed_dim contradicted by the network), NotFound (missing file) or Unavailable (missing
    optional package, weights that need a network or the artifact store).
    """
    spec = get_spec(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    if overrides:
        spec = spec.replace(**overrides)
    validate_spec(spec)
    check_digest_field(spec.weights_sha256, f"backbone {spec.name!r}: weights_sha256")
    loaded = _loader(spec.source)(spec, cache_dir=_cache_dir(cache_dir))
    _check_digest(spec, loaded.spec)
    if loaded.module is not None:
        loaded = _fill_from_module(loaded)
    log.info(
        "created backbone %s (%s, weights %s, sha256 %s)",
        spec.name,
        spec.source,
        spec.weights,
        (loaded.spec.weights_sha256 or "")[:12],
    )
    return loaded


def _check_digest(declared: BackboneSpec, loaded: BackboneSpec) -> None:
    """A spec that names the sha256 of its weights gets exactly those weights, or an error (for an
    ONNX model, the digest of `weights.onnx_weights_digest`: external data included)."""
    expected = (declared.weights_sha256 or "").lower()
    if not expected or declared.weights in ("random", "hub"):
        return
    actual = (loaded.weights_sha256 or "").lower()
    if actual != expected:
        raise InvalidArgument(
            f"backbone {declared.name!r}: weights {declared.weights} have sha256 {actual or 'unknown'}, "
            f"but the spec declares weights_sha256 {expected}"
        )


def _cache_dir(cache_dir: str | Path | None) -> Path:
    """`cache_dir`, else the default one (`Settings.cache_dir`): library code reads no environment;
    processes pass their resolved settings' cache_dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    from bobench.config import Settings

    return Path(Settings().cache_dir)


def _fill_from_module(loaded: LoadedBackbone) -> LoadedBackbone:
    """Measure parameter count and feature dim with one dummy batch; check them against the spec."""
    import torch

    module, spec = loaded.module, loaded.spec
    module.eval()
    num_params = sum(p.numel() for p in module.parameters())
    with torch.no_grad():
        probe = torch.zeros(1, 3, spec.input_size, spec.input_size, dtype=torch.uint8)
        out = module(probe)
    if out.ndim != 2 or out.shape[0] != 1:
        raise InvalidArgument(
            f"backbone {spec.name!r}: expected pooled features [1, D], got {list(out.shape)}"
        )
    embed_dim = int(out.shape[1])
    if spec.embed_dim is not None and spec.embed_dim != embed_dim:
        raise InvalidArgument(
            f"backbone {spec.name!r}: spec says embed_dim={spec.embed_dim} but the network gives {embed_dim}"
        )
    loaded.spec = spec.replace(num_params=num_params, embed_dim=embed_dim)
    return loaded
