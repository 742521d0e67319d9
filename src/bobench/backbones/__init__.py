"""Backbones: the registry of specs (`registry`), the built-in specs (`builtin`: offline;
`builtin_hub`: the BoB catalog's hub-weight entries) and one factory for every weight source.

Importing this package imports neither torch nor timm nor onnx (the scheduler lists backbones
without them); `create_backbone` imports what the requested source needs.
"""

from bobench.backbones.factory import SOURCE_LOADERS, LoadedBackbone, create_backbone
from bobench.backbones.registry import (
    BACKBONES,
    check_user_backbone,
    get_spec,
    list_specs,
    register_backbone,
    register_spec,
)
from bobench.backbones.spec import BackboneSpec
from bobench.backbones.weights import weights_available

__all__ = [
    "BACKBONES",
    "SOURCE_LOADERS",
    "BackboneSpec",
    "LoadedBackbone",
    "check_user_backbone",
    "create_backbone",
    "get_spec",
    "list_specs",
    "register_backbone",
    "register_spec",
    "weights_available",
]
