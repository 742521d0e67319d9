"""The backbone registry: specs registered by decorator (timm-style), listed without importing torch.

Each entry is a small function returning a `BackboneSpec`; the decorator calls it once and files the
spec under `spec.name`. Looking specs up and listing them touch only the standard library, so the
scheduler and `bob backbones list` stay light. Where weights are found (`weights_available`) lives in
`bobench.backbones.weights`, the listing table in `bobench.cli.backbones`.
"""

from __future__ import annotations

from collections.abc import Callable

from bobench.backbones.spec import FAMILIES, PRETRAINING_METHODS, BackboneSpec
from bobench.errors import InvalidArgument
from bobench.registry import Registry

# The built-in specs register themselves when these modules load (on the first lookup); they import
# nothing heavy and import this module, never the other way round.
BACKBONES: Registry[BackboneSpec] = Registry(
    "backbone",
    "bob backbones list",
    builtins=("bobench.backbones.builtin", "bobench.backbones.builtin_hub"),
)

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


def get_spec(name: str) -> BackboneSpec:
    """The registered spec; an unknown name raises InvalidArgument with close matches."""
    return BACKBONES.get(name)


def list_specs() -> list[BackboneSpec]:
    """Every registered spec, sorted by name."""
    return [spec for _, spec in BACKBONES.items()]
