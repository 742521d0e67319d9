"""Backbones: the registry of specs, the BoB catalog and one factory for every weight source.

Importing this package imports neither torch nor timm nor onnx (the scheduler lists backbones
without them); `create_backbone` imports what the requested source needs.
"""

from bobench.backbones._registry import (
    BACKBONES,
    backbone_table,
    check_user_backbone,
    get_spec,
    list_specs,
    register_backbone,
    register_spec,
    weights_available,
)
from bobench.backbones.factory import SOURCE_LOADERS, LoadedBackbone, create_backbone
from bobench.backbones.spec import BackboneSpec

__all__ = [
    "BACKBONES",
    "SOURCE_LOADERS",
    "BackboneSpec",
    "LoadedBackbone",
    "backbone_table",
    "check_user_backbone",
    "create_backbone",
    "get_spec",
    "list_specs",
    "register_backbone",
    "register_spec",
    "weights_available",
]
