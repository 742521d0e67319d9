"""Loaders for torch sources: timm, torchvision, torch.hub and the `toy` test double.

Each returns a LoadedBackbone whose module is wrapped in PreprocessingWrapper and whose spec carries
the weights digest. Hub downloads are the real online path; offline they fail with Unavailable.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from bobench.backbones.factory import LoadedBackbone
from bobench.backbones.spec import BackboneSpec
from bobench.backbones.toy import ToyNet
from bobench.backbones.weights import (
    load_state_dict_strict,
    perturb_constant_tensors,
    random_weights_digest,
    read_state_dict,
    resolve_weights_file,
    state_dict_digest,
    verify_declared_digest,
)
from bobench.backbones.wrapper import PreprocessingWrapper
from bobench.data.roots import check_torchhub
from bobench.errors import InvalidArgument, Unavailable
from bobench.hashing import sha256_file


def _hub_failure(spec: BackboneSpec, exc: Exception) -> Unavailable:
    return Unavailable(
        f"backbone {spec.name!r}: could not get hub weights for {spec.source} model {spec.model_id!r} "
        f"(no network or not in the local cache?): {type(exc).__name__}: {exc}"
    )


def _load_file_weights(model: nn.Module, spec: BackboneSpec) -> str:
    """Strictly load package/file/s3 weights into `model`; return the file's sha256."""
    path = resolve_weights_file(spec)
    digest = sha256_file(path)
    verify_declared_digest(spec, digest)
    load_state_dict_strict(model, read_state_dict(path, spec), spec, origin=str(path))
    return digest


def _finish(spec: BackboneSpec, network: nn.Module, digest: str, head: nn.Module | None) -> LoadedBackbone:
    module = PreprocessingWrapper(network, spec).eval()
    return LoadedBackbone(
        spec=spec.replace(weights_sha256=digest),
        module=module,
        head=head.eval() if head is not None else None,
    )


def load_timm(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """timm model; the classifier is split off into `head` and the network returns pooled features."""
    import timm

    num_classes = spec.extra.get("num_classes")
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    if spec.weights == "hub":
        try:
            model = timm.create_model(spec.model_id, pretrained=True, **kwargs)
        except Exception as exc:  # hub errors come from requests, huggingface_hub, urllib, ...
            raise _hub_failure(spec, exc) from exc
        digest = state_dict_digest(model)
    else:
        torch.manual_seed(spec.seed)
        try:
            model = timm.create_model(spec.model_id, pretrained=False, **kwargs)
        except RuntimeError as exc:  # timm: "Unknown model"
            raise InvalidArgument(f"backbone {spec.name!r}: {exc}") from exc
        if spec.weights == "random":
            perturb_constant_tensors(model, spec.seed)
            digest = random_weights_digest(spec)
        else:
            digest = _load_file_weights(model, spec)
    head = None
    if getattr(model, "num_classes", 0):
        head = copy.deepcopy(model.get_classifier())
        model.reset_classifier(0)
    return _finish(spec, model, digest, head)


def _split_torchvision_head(model: nn.Module) -> nn.Module | None:
    for attr in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(model, attr, None), nn.Module):
            head = getattr(model, attr)
            setattr(model, attr, nn.Identity())
            return head
    return None


def load_torchvision(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """torchvision model by builder name; `extra["weights_enum"]` picks hub weights (default DEFAULT)."""
    import torchvision

    if spec.weights == "hub":
        try:
            model = torchvision.models.get_model(
                spec.model_id, weights=spec.extra.get("weights_enum", "DEFAULT")
            )
        except Exception as exc:
            raise _hub_failure(spec, exc) from exc
        digest = state_dict_digest(model)
    else:
        torch.manual_seed(spec.seed)
        try:
            model = torchvision.models.get_model(spec.model_id, weights=None)
        except ValueError as exc:
            raise InvalidArgument(f"backbone {spec.name!r}: {exc}") from exc
        if spec.weights == "random":
            perturb_constant_tensors(model, spec.seed)
            digest = random_weights_digest(spec)
        else:
            digest = _load_file_weights(model, spec)
    head = _split_torchvision_head(model)
    return _finish(spec, model, digest, head)


def load_torchhub(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """`torch.hub.load(repo, entry)` with model_id "owner/repo:ref/entry" (pretrained weights only)."""
    repo, _, entry = spec.model_id.rpartition("/")
    if not repo or not entry:
        raise InvalidArgument(f"backbone {spec.name!r}: torchhub model_id must be 'owner/repo:ref/entry'")
    if spec.weights != "hub":
        raise InvalidArgument(f"backbone {spec.name!r}: torchhub backbones only support weights='hub'")
    check_torchhub(spec.name)  # trust_repo=True runs the repository's hubconf.py: an explicit opt-in
    try:
        model = torch.hub.load(repo, entry, trust_repo=True)
    except Exception as exc:
        raise _hub_failure(spec, exc) from exc
    head = _split_torchvision_head(model)
    return _finish(spec, model, state_dict_digest(model), head)


def load_toy(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """The seeded ToyNet (random weights only, or a checkpoint of it)."""
    model = ToyNet(width=spec.embed_dim or 32, seed=spec.seed)
    digest = random_weights_digest(spec) if spec.weights == "random" else _load_file_weights(model, spec)
    return _finish(spec, model, digest, None)
