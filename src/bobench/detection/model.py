"""Any timm backbone under torchvision's detection heads: multi-scale features, an FPN, a detector.

The backbone is the run's own network (the same weights the classification protocols embed with:
`ctx.backbone_module().network`, a timm model) or, for the `random` regime, the same architecture with
seeded random init. Its multi-scale maps come from timm's `forward_intermediates`, and which maps and
their strides/channels from its `feature_info`; nothing is hard-coded per family:

* a hierarchical backbone (ResNet, EfficientNet, ConvNeXt, ...) gives the last map of each stride
  >= 4 (at most the four deepest strides) to torchvision's FeaturePyramidNetwork (+ a max-pooled
  extra level);
* a plain backbone whose maps all share one stride (a ViT) gives its last block to a ViTDet-style
  simple feature pyramid (Li et al. 2022): deconvolutions to 1/4 and 1/8, identity at 1/16, max-pool
  to 1/32, each projected to the pyramid width; ViTs are rebuilt with `dynamic_img_size` (same
  weights) so any padded input size works.

Heads (`head`): "faster_rcnn" (default), "mask_rcnn", "retinanet", "fcos" from torchvision. Anchors
are `anchor_scale` x stride per level, three aspect ratios; FCOS's anchor points are one stride wide
whatever `anchor_scale` (torchvision's FCOS assigns an object to the level whose anchor size x 4..8
spans it and samples centres within 1.5 anchor sizes, so a wider "anchor" would move every object to
the wrong level). Regimes: "finetune" (everything trains;
the backbone's BatchNorm statistics are frozen, as in torchvision's and Detectron's detectors: small
detection batches make batch statistics noise), "frozen" (backbone parameters `requires_grad=False`,
run under no_grad and kept in eval mode: only neck and heads change), "random" (same architecture,
random init, trained end to end with live BatchNorm).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from torch import nn

from bobench.detection.config import HEADS, REGIMES, DetectorConfig
from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)


def pick_levels(feature_info: list[dict]) -> tuple[list[int], bool]:
    """(feature_info indices to use, plain): the last entry of each stride >= 4, deepest four; `plain`
    when every entry has the same stride (a ViT), then only the last entry is used."""
    reductions = [int(f["reduction"]) for f in feature_info]
    if len(set(reductions)) == 1:
        return [len(feature_info) - 1], True
    last_of: dict[int, int] = {}
    for i, r in enumerate(reductions):
        if r >= 4:
            last_of[r] = i
    if not last_of:
        raise InvalidArgument("detector: the backbone has no feature map with stride >= 4")
    return [last_of[r] for r in sorted(last_of)][-4:], False


class TimmFeatures(nn.Module):
    """timm network -> the chosen intermediate maps (NCHW), via `forward_intermediates`."""

    def __init__(self, network: nn.Module, indices: list[int], frozen: bool) -> None:
        super().__init__()
        self.network, self.indices, self.frozen = network, indices, frozen
        if frozen:
            for p in self.network.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> TimmFeatures:
        super().train(mode)
        if self.frozen:
            self.network.eval()  # a frozen backbone keeps its statistics, even while the heads train
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.network.forward_intermediates(
                x, indices=self.indices, intermediates_only=True, stop_early=True
            )


def _norm(channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels)  # LayerNorm over channels, as ViTDet's pyramid uses


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's pyramid from one stride-s map: strides s/4, s/2, s, 2s, then a max-pooled 4s level."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        c = in_channels
        self.scales = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(c, c // 2, 2, stride=2),
                    _norm(c // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2),
                ),  # fmt: skip
                nn.ConvTranspose2d(c, c // 2, 2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(2),
            ]
        )
        widths = [c // 4, c // 2, c, c]
        self.project = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(w, out_channels, 1, bias=False),
                _norm(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                _norm(out_channels),
            )  # fmt: skip
            for w in widths
        )

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = [proj(scale(x)) for scale, proj in zip(self.scales, self.project, strict=True)]
        out = OrderedDict((str(i), m) for i, m in enumerate(maps))
        out["pool"] = nn.functional.max_pool2d(maps[-1], 1, stride=2)
        return out


class BackboneWithPyramid(nn.Module):
    """Backbone + FPN (or simple pyramid): images -> OrderedDict of `out_channels`-wide maps."""

    def __init__(self, network: nn.Module, out_channels: int, frozen: bool) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        info = [dict(f) for f in network.feature_info]
        indices, self.plain = pick_levels(info)
        self.body = TimmFeatures(network, indices, frozen)
        channels = [int(info[i]["num_chs"]) for i in indices]
        base = int(info[indices[-1]]["reduction"])
        if self.plain:
            self.fpn: nn.Module = SimpleFeaturePyramid(channels[0], out_channels)
            self.strides = [base // 4, base // 2, base, base * 2, base * 4]
        else:
            self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelMaxPool())
            self.strides = [int(info[i]["reduction"]) for i in indices] + [base * 2]
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(x)
        if self.plain:
            return self.fpn(maps[-1])
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def prepare_network(network: nn.Module, model_id: str, regime: str, seed: int) -> nn.Module:
    """The timm network the detector wraps: for `random`, a seeded fresh instance of the same
    architecture; ViTs rebuilt with dynamic_img_size (same weights); BatchNorm frozen when pretrained."""
    import timm
    from timm.layers import freeze_batch_norm_2d

    if regime not in REGIMES:
        raise InvalidArgument(f"detector: regime must be one of {list(REGIMES)}, got {regime!r}")
    if not hasattr(network, "forward_intermediates") or not hasattr(network, "feature_info"):
        raise InvalidArgument(
            f"detector: backbone {model_id!r} has no timm feature_info / forward_intermediates; "
            "detection needs a timm backbone"
        )
    rebuild = regime == "random" or getattr(network, "dynamic_img_size", True) is False
    if rebuild:
        torch.manual_seed(seed)
        kwargs = {"dynamic_img_size": True} if hasattr(network, "dynamic_img_size") else {}
        fresh = timm.create_model(model_id, pretrained=False, num_classes=0, **kwargs)
        if regime != "random":
            fresh.load_state_dict(network.state_dict(), strict=True)
        network = fresh
    if regime != "random":
        network = freeze_batch_norm_2d(network)
    return network


def _anchors(strides: list[int], scale: float, one_size: bool):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = tuple((int(round(scale * s)),) for s in strides)
    ratios = ((1.0,),) * len(strides) if one_size else ((0.5, 1.0, 2.0),) * len(strides)
    return AnchorGenerator(sizes, ratios)


def build_detector(
    network: nn.Module,
    model_id: str,
    *,
    num_classes: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    config: DetectorConfig,
    seed: int = 0,
) -> nn.Module:
    """A torchvision detector over `network` (see the module docstring). Its forward takes a list of
    float [3, H, W] images in 0..1 (normalised with `mean`/`std` inside) and, in training, targets
    with `boxes` (xyxy) and `labels` (1..num_classes; 0 is the background) (and `masks`)."""
    from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
    from torchvision.ops import MultiScaleRoIAlign

    if config.head not in HEADS:
        raise InvalidArgument(f"detector: head must be one of {list(HEADS)}, got {config.head!r}")
    torch.manual_seed(seed)
    body = prepare_network(network, model_id, config.regime, seed)
    backbone = BackboneWithPyramid(body, config.fpn_channels, frozen=config.regime == "frozen")
    names = [*(str(i) for i in range(len(backbone.strides) - 1))]
    common = dict(
        min_size=config.min_size, max_size=config.max_size, image_mean=list(mean), image_std=list(std),
    )  # fmt: skip
    n = num_classes + 1
    if config.head in ("faster_rcnn", "mask_rcnn"):
        box_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
        anchors = _anchors(backbone.strides, config.anchor_scale, one_size=False)
        kwargs = dict(rpn_anchor_generator=anchors, box_roi_pool=box_pool,
                      box_detections_per_img=config.detections_per_image, **common)  # fmt: skip
        if config.head == "mask_rcnn":
            mask_pool = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
            return MaskRCNN(backbone, num_classes=n, mask_roi_pool=mask_pool, **kwargs)
        return FasterRCNN(backbone, num_classes=n, **kwargs)
    if config.head == "fcos":  # FCOS's anchor is a point one stride wide: its scale ranges are 4-8 x that
        anchors = _anchors(backbone.strides, 1.0, one_size=True)
    else:
        anchors = _anchors(backbone.strides, config.anchor_scale, one_size=False)
    head_cls = RetinaNet if config.head == "retinanet" else FCOS
    return head_cls(backbone, num_classes=n, anchor_generator=anchors,
                    detections_per_img=config.detections_per_image, **common)  # fmt: skip


def backbone_of(detector: nn.Module) -> nn.Module:
    """The timm network inside a detector built by `build_detector`."""
    return detector.backbone.body.network
