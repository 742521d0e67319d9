"""Object detection protocol: any registered timm backbone under Faster R-CNN + FPN, BoB's three regimes.

The run's detection dataset (COCO, VOC, `tree_crowns`, ...) is split by image: the detector trains on
"train", the epoch with the best "val" box AP is kept, and its "test" figures are reported: COCO box
AP (primary), AP50, AP75, APs/APm/APl and AR100, with bootstrap intervals over test images for AP and
AP50 (`bobench.detection.metrics`). `regime` is BoB's: "finetune" (end to end), "frozen" (only the
FPN and heads train) or "random" (same architecture, random init). `head` selects torchvision's
Faster R-CNN (default), RetinaNet or FCOS (`mask_rcnn` is the instance_segmentation protocol's).

This is torchvision's detector with an FPN (ViTDet's simple pyramid for plain ViTs), not BoB's
Cascade Mask R-CNN in mmdetection: torchvision ships with torch here and runs on CPU and GPU without
mmcv's compiled ops, and every backbone gets the same detector, so rankings compare backbones.
Checkpoints: `<cache_dir>/detection/<key>`; an interrupted run resumes from its last epoch.
"""

from __future__ import annotations

from typing import Any

from bobench.data.detection import require_detection
from bobench.detection.run import run_detection
from bobench.protocols.base import RunContext, get_protocol


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train and score a detector; InvalidArgument for a non-detection dataset or a bad config,
    FailedPrecondition for a backbone without a torch module."""
    ds = require_detection(ctx.dataset, "detection")
    config = get_protocol("detection").resolve_config(config)
    return run_detection(
        ctx, ds, config, seed, protocol="detection", train=ds.split("train").tolist(),
        val=ds.split("val").tolist(), tests={"": (ds, ds.split("test").tolist())},
    )  # fmt: skip
