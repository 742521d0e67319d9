"""Instance segmentation protocol: the backbone under torchvision Mask R-CNN + FPN, BoB's three regimes.

Like `detection` (same recipe, regimes, splits and checkpoints) with Mask R-CNN's mask head; the
dataset needs instance masks (COCO polygons/RLE, e.g. `labelme_coco`). Reports COCO mask AP (primary,
`mask_AP`, with AP50/AP75/APs/m/l/AR100 as `mask_*`) and the box metrics, each AP and AP50 with a
bootstrap interval over test images. torchvision's Mask R-CNN, not BoB's Cascade Mask R-CNN: see
`bobench.protocols.detection`.
"""

from __future__ import annotations

from typing import Any

from bobench.data.detection import require_detection
from bobench.detection.run import run_detection
from bobench.errors import InvalidArgument
from bobench.protocols.base import RunContext, get_protocol


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train and score Mask R-CNN; InvalidArgument for a dataset without masks or a bad config."""
    ds = require_detection(ctx.dataset, "instance_segmentation")
    config = get_protocol("instance_segmentation").resolve_config(config)  # includes options.check_mask_head
    if not ds.has_masks:
        raise InvalidArgument(f"protocol 'instance_segmentation': dataset {ds.name!r} has no instance masks")
    return run_detection(
        ctx, ds, config, seed, protocol="instance_segmentation", train=ds.split("train").tolist(),
        val=ds.split("val").tolist(), tests={"": (ds, ds.split("test").tolist())}, iou_types=("bbox", "segm"),
    )  # fmt: skip
