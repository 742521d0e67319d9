"""Loaders for optional heavy sources: OpenCLIP and Hugging Face transformers.

Their packages are imported only here, when such a backbone is created; a missing package raises
Unavailable naming what to pip-install.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from bobench.backbones.factory import LoadedBackbone
from bobench.backbones.sources_torch import _finish, _hub_failure, _load_file_weights
from bobench.backbones.spec import BackboneSpec
from bobench.backbones.weights import perturb_constant_tensors, random_weights_digest, state_dict_digest
from bobench.errors import InvalidArgument, Unavailable


def _import_optional(module: str, pip_name: str, spec: BackboneSpec) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise Unavailable(
            f"backbone {spec.name!r} (source {spec.source!r}) needs the optional package {pip_name}; "
            f"`pip install {pip_name}`"
        ) from None


def load_open_clip(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """OpenCLIP image tower (`model.visual`); extra["pretrained"] is the open_clip pretrained tag."""
    open_clip = _import_optional("open_clip", "open_clip_torch", spec)
    torch.manual_seed(spec.seed)
    pretrained = spec.extra.get("pretrained") if spec.weights == "hub" else None
    try:
        model = open_clip.create_model(spec.model_id, pretrained=pretrained)
    except Exception as exc:
        if pretrained:
            raise _hub_failure(spec, exc) from exc
        raise InvalidArgument(f"backbone {spec.name!r}: {exc}") from exc
    visual = model.visual
    if spec.weights == "hub":
        digest = state_dict_digest(visual)
    elif spec.weights == "random":
        perturb_constant_tensors(visual, spec.seed)
        digest = random_weights_digest(spec)
    else:
        digest = _load_file_weights(visual, spec)
    return _finish(spec, visual, digest, None)


class HFPooler(nn.Module):
    """Adapts a transformers vision model to `pixel_values -> pooled features`.

    pool = "cls" (first token), "mean" (tokens, or spatial dims of a [N, C, H, W] map) or "pooler"
    (the model's own pooler_output).
    """

    def __init__(self, model: nn.Module, pool: str) -> None:
        super().__init__()
        if pool not in ("cls", "mean", "pooler"):
            raise InvalidArgument(f"hf pool must be 'cls', 'mean' or 'pooler', got {pool!r}")
        self.model, self.pool = model, pool

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        if self.pool == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pool == "cls":
            return hidden[:, 0]
        return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)


def load_hf(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """transformers AutoModel (optionally a submodule, extra["hf_submodule"]) with HFPooler."""
    transformers = _import_optional("transformers", "transformers", spec)
    if spec.weights == "hub":
        try:
            model = transformers.AutoModel.from_pretrained(spec.model_id)
        except Exception as exc:
            raise _hub_failure(spec, exc) from exc
    else:
        try:
            config = transformers.AutoConfig.from_pretrained(spec.model_id)
        except Exception as exc:
            raise _hub_failure(spec, exc) from exc
        torch.manual_seed(spec.seed)
        model = transformers.AutoModel.from_config(config)
    submodule = spec.extra.get("hf_submodule")
    if submodule:
        model = getattr(model, str(submodule))
    if spec.weights == "hub":
        digest = state_dict_digest(model)
    elif spec.weights == "random":
        perturb_constant_tensors(model, spec.seed)
        digest = random_weights_digest(spec)
    else:
        digest = _load_file_weights(model, spec)
    return _finish(spec, HFPooler(model, str(spec.extra.get("pool", "cls"))), digest, None)
