"""The backbone registry: specs registered by decorator (timm-style), listed without importing torch.

Each entry is a small function returning a `BackboneSpec`; the decorator calls it once and files the
spec under `spec.name`. Looking specs up, listing them and checking whether their weights are present
locally touch only the standard library, so the scheduler and `bob backbones list` stay light.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bobench.backbones.spec import FAMILIES, PRETRAINING_METHODS, BackboneSpec
from bobench.errors import InvalidArgument
from bobench.registry import Registry

BACKBONES: Registry[BackboneSpec] = Registry("backbone", "bob backbones list")

SpecFn = Callable[[], BackboneSpec]


def register_backbone(fn: SpecFn) -> SpecFn:
    """Decorator: register the spec `fn()` returns under its name.

    Raises AlreadyExists for a duplicate name and InvalidArgument for a spec whose family or
    pretraining method is not one of the known categories (the analysis groups by them).
    """
    register_spec(fn())
    return fn


def register_spec(spec: BackboneSpec) -> BackboneSpec:
    """Register a ready-made spec (plugins, user-defined backbones). Same checks as the decorator."""
    validate_spec(spec)
    return BACKBONES.add(spec.name, spec)


def check_user_backbone(spec: BackboneSpec) -> None:
    """A user-defined backbone (battle spec, gRPC `spec_json`) may not run remote code: a `torchhub`
    source is PermissionDenied unless the allow_torchhub setting is on (`bobench.data.roots`)."""
    if spec.source == "torchhub":
        from bobench.data.roots import check_torchhub

        check_torchhub(spec.name)


def validate_spec(spec: BackboneSpec) -> None:
    """Raise InvalidArgument naming the backbone and field when a spec is malformed."""
    where = f"backbone {spec.name!r}"
    if spec.family not in FAMILIES:
        raise InvalidArgument(f"{where}: family {spec.family!r} is not one of {FAMILIES}")
    if spec.pretraining_method not in PRETRAINING_METHODS:
        raise InvalidArgument(
            f"{where}: pretraining_method {spec.pretraining_method!r} is not one of {PRETRAINING_METHODS}"
        )
    if spec.channel_order not in ("RGB", "BGR"):
        raise InvalidArgument(f"{where}: channel_order must be 'RGB' or 'BGR', got {spec.channel_order!r}")
    if spec.layout not in ("NCHW", "NHWC"):
        raise InvalidArgument(f"{where}: layout must be 'NCHW' or 'NHWC', got {spec.layout!r}")
    if len(spec.mean) != 3 or len(spec.std) != 3 or any(s <= 0 for s in spec.std):
        raise InvalidArgument(f"{where}: mean/std must be 3 values with std > 0, got {spec.mean}/{spec.std}")
    if spec.input_size <= 0 or not 0 < spec.crop_pct <= 1:
        raise InvalidArgument(f"{where}: input_size must be > 0 and crop_pct in (0, 1]")


def _load_builtin() -> None:
    # Importing these modules registers their specs (they import nothing heavy).
    import bobench.backbones.builtin  # noqa: F401
    import bobench.backbones.catalog  # noqa: F401


def get_spec(name: str) -> BackboneSpec:
    """The registered spec; an unknown name raises InvalidArgument with close matches."""
    _load_builtin()
    return BACKBONES.get(name)


def list_specs() -> list[BackboneSpec]:
    """Every registered spec, sorted by name."""
    _load_builtin()
    return [spec for _, spec in BACKBONES.items()]


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (timm ≥0.9 pulls its weights from there too)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "huggingface"
    )
    return Path(home) / "hub"


def hub_repo_id(spec: BackboneSpec) -> str | None:
    """The Hugging Face repo that holds a hub spec's weights, when known."""
    if "hf_hub_id" in spec.extra:
        return str(spec.extra["hf_hub_id"])
    if spec.source == "timm":
        arch, _, tag = spec.model_id.partition(".")
        return f"timm/{arch}.{tag}" if tag else f"timm/{arch}"
    if spec.source == "hf":
        return spec.model_id
    return None


def package_module(spec: BackboneSpec) -> str:
    """Import name of the package in `weights="package:<pip-name>"` (override: extra["package_module"])."""
    pip_name = spec.weights.removeprefix("package:")
    return str(spec.extra.get("package_module", pip_name.replace("-", "_")))


def weights_available(spec: BackboneSpec) -> bool:
    """Whether `create_backbone(spec)` can get the weights without a network.

    random → True; package → the package is importable; file → it exists; hub → found in the local
    Hugging Face / torch hub cache; s3 → False (needs the artifact store). Never touches the network.
    """
    w = spec.weights
    if w == "random":
        return True
    if w.startswith("package:"):
        return importlib.util.find_spec(package_module(spec)) is not None
    if w == "hub":
        repo = hub_repo_id(spec)
        snapshots = hf_cache_dir() / f"models--{(repo or '').replace('/', '--')}" / "snapshots"
        if repo and snapshots.is_dir() and any(snapshots.iterdir()):
            return True
        ckpt = spec.extra.get("checkpoint_file")
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        return bool(ckpt) and (torch_home / "hub" / "checkpoints" / str(ckpt)).is_file()
    if w.startswith("s3://"):
        return False
    return Path(w).expanduser().is_file()


def weights_source(spec: BackboneSpec) -> str:
    """Short label for where weights come from: random / hub / package / file / s3."""
    w = spec.weights
    if w in ("random", "hub"):
        return w
    if w.startswith("package:"):
        return "package"
    if w.startswith("s3://"):
        return "s3"
    return "file"


def backbone_table() -> list[dict[str, Any]]:
    """One row per backbone for `bob backbones list` (params and embed dim as declared; None if unknown)."""
    return [
        {
            "name": s.name,
            "family": s.family,
            "method": s.pretraining_method,
            "data": s.pretraining_data,
            "params": s.num_params,
            "input_size": s.input_size,
            "embed_dim": s.embed_dim,
            "weights": weights_source(s),
            "available": weights_available(s),
        }
        for s in list_specs()
    ]
