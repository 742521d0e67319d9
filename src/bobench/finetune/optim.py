"""Optimiser pieces: layer-wise lr decay parameter groups, batch-scaled lr, warm-up + cosine schedule.

Layer-wise lr decay follows timm exactly where the backbone holds a timm network: the first module
with a `group_matcher` (the timm model, usually inside `PreprocessingWrapper`) is grouped by
`timm.optim.param_groups_layer_decay` itself, which numbers the model's layers with
`group_matcher(coarse=False)` and gives layer i of L the scale decay^(L - 1 - i); the classification
head is the last layer (scale 1), as in timm, so the head bobench adds gets the full lr. Weight decay
then follows timm too: none on 1-D parameters (biases, norm weights) nor on the names the model lists
in `no_weight_decay()` (ViT's `pos_embed`, `cls_token`, ...). Trainable parameters of the backbone
outside the timm network (a pooler or projection after a trunk) train at the head's full lr.

Backbones without a timm network (torchvision, hub, user modules) fall back to a rule that needs no
per-architecture table: the *parameter-owning modules*, in registration order, are split into G
nearly equal consecutive groups (G = min(`layer_decay_groups`, number of owners)); group g gets
lr x decay^(G - g) and the head G. No weight decay on 1-D parameters nor on parameters named like
ViT position embeddings and class/register/distillation tokens.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

from torch import nn

NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "dist_token", "*.pos_embed", "*.cls_token")
LR_SCALINGS = ("none", "linear", "sqrt")


def scaled_lr(lr: float, batch_size: int, base_batch_size: int, scaling: str) -> float:
    """The peak lr for `batch_size` when `lr` was set for `base_batch_size` (timm's `lr_base` rule):
    unchanged for "none", times batch/base for "linear", times sqrt(batch/base) for "sqrt"."""
    ratio = batch_size / base_batch_size
    return {"none": lr, "linear": lr * ratio, "sqrt": lr * math.sqrt(ratio)}[scaling]


def find_timm_network(backbone: nn.Module) -> tuple[str, nn.Module] | None:
    """(name, module) of the first module of `backbone` (itself included) with timm's `group_matcher`."""
    for name, module in backbone.named_modules():
        if callable(getattr(module, "group_matcher", None)):
            return name, module
    return None


def parameter_depths(backbone: nn.Module, n_groups: int) -> tuple[list[tuple[str, nn.Parameter, int]], int]:
    """Fallback rule: [(name, parameter, group)] for the trainable parameters, and the number of groups G."""
    owners: list[list[tuple[str, nn.Parameter]]] = []
    for module_name, module in backbone.named_modules():
        direct = [
            (f"{module_name}.{name}" if module_name else name, p)
            for name, p in module.named_parameters(recurse=False)
            if p.requires_grad
        ]
        if direct:
            owners.append(direct)
    groups = max(1, min(n_groups, len(owners)))
    out = []
    for i, params in enumerate(owners):
        depth = i * groups // len(owners)
        out.extend((name, p, depth) for name, p in params)
    return out, groups


class _NetworkWithHead(nn.Module):
    """The timm network's children and direct parameters under their own names, plus bobench's head as
    `bobench_head` — a name no `group_matcher` matches, so timm puts it in the last layer, exactly where
    it puts its own classifier. Shares the parameters; only used to build optimiser groups."""

    def __init__(self, network: nn.Module, head: nn.Module) -> None:
        super().__init__()
        for name, child in network.named_children():
            self.add_module(name, child)
        for name, p in network.named_parameters(recurse=False):
            self.register_parameter(name, p)
        self.add_module("bobench_head", head)
        self._network = [network]  # a list: not registered as a submodule

    def group_matcher(self, coarse: bool = False) -> Any:
        return self._network[0].group_matcher(coarse=coarse)


def _timm_groups(
    backbone: nn.Module, network: nn.Module, head: nn.Module, *, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """timm's own groups (`lr_scale`, `weight_decay`) for `network` + `head`, plus any trainable
    parameters of `backbone` outside the network (poolers, projections after a timm trunk) at the
    head's scale 1."""
    from timm.optim import param_groups_layer_decay

    no_decay = getattr(network, "no_weight_decay", None)
    groups = param_groups_layer_decay(
        _NetworkWithHead(network, head),
        weight_decay=weight_decay,
        no_weight_decay_list=tuple(no_decay()) if callable(no_decay) else (),
        layer_decay=layer_decay,
    )
    head_ids = {id(p) for p in head.parameters()}
    inside = {id(p) for p in network.parameters()}
    outside = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad and id(p) not in inside]
    for decays in (True, False):
        params = [p for n, p in outside if (p.ndim > 1 and not _no_decay_name(n)) == decays]
        if params:
            groups.append(
                {"params": params, "lr_scale": 1.0, "weight_decay": weight_decay if decays else 0.0}
            )
    groups.sort(key=lambda g: any(id(p) in head_ids for p in g["params"]))  # the head's groups last
    return groups


def _fallback_groups(
    backbone: nn.Module, *, weight_decay: float, layer_decay: float, n_groups: int
) -> list[dict[str, Any]]:
    depths, groups = parameter_depths(backbone, n_groups)
    buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, p, depth in depths:
        buckets.setdefault((depth, p.ndim > 1 and not _no_decay_name(name)), []).append(p)
    return [
        {
            "params": params,
            "lr_scale": layer_decay ** (groups - depth),
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (depth, decays), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], not kv[0][1]))
    ]


def _no_decay_name(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in NO_DECAY_NAMES)


def param_groups(
    backbone: nn.Module, head: nn.Module, *, lr: float, weight_decay: float, layer_decay: float, n_groups: int
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay and timm's weight-decay exclusions (module
    docstring). Each group carries `lr` (= lr x `lr_scale`), `weight_decay` and `lr_scale`; the head's
    groups come last, at scale 1; empty groups are omitted. `n_groups` applies to the fallback only."""
    found = find_timm_network(backbone)
    if found is not None:
        groups = _timm_groups(backbone, found[1], head, weight_decay=weight_decay, layer_decay=layer_decay)
    else:
        groups = _fallback_groups(
            backbone, weight_decay=weight_decay, layer_decay=layer_decay, n_groups=n_groups
        )
        for decays in (True, False):
            params = [p for p in head.parameters() if p.requires_grad and (p.ndim > 1) == decays]
            if params:
                groups.append(
                    {"params": params, "lr_scale": 1.0, "weight_decay": weight_decay if decays else 0.0}
                )
    return [{**g, "lr": lr * g["lr_scale"]} for g in groups if g["params"]]


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """The lr multiplier at optimiser step `step` (0-based): linear warm-up from 1/warmup_steps to 1
    over `warmup_steps`, then a cosine from 1 down to `min_ratio` at the last step."""
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(1, total_steps - warmup_steps - 1)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
