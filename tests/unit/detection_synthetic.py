"""Test helpers for the detection tests: a *synthetic* box dataset, small detectors on the project's
offline backbones, and a real LocalContext for the protocols.

`synthetic_boxes` is synthetic (flat red/green rectangles on dark noise, one to three per image, masks
= the rectangles' visible pixels): it only feeds the model, training-loop and resume tests, which need
images of a chosen size and count; real-data checks use the bundled tree crowns and labelme sample.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import replace

import numpy as np

from bobench.data.base import fingerprint_arrays
from bobench.data.detection import DetectionDataset, DetectionTarget, detection_dataset, split_images

# one registered offline backbone per timm family (bobench.backbones.builtin); EfficientNet-Lite0 is
# the pretrained one (weights from its pip package), the others random-init of the real architecture
FAMILIES = {
    "efficientnet": "efficientnet_lite0",
    "resnet": "resnet18-random",
    "convnext": "convnext_atto-random",
    "vit": "vit_tiny_patch16_224-random",
}
COLOURS = ((220, 40, 40), (40, 220, 40))


def synthetic_boxes(n: int = 10, size: int = 64, seed: int = 0, masks: bool = False) -> DetectionDataset:
    """n synthetic size x size images with 1-3 rectangles each (classes "red", "green"), 60/20/20 split."""
    rng = np.random.default_rng(seed)
    images, targets, all_masks = [], [], []
    for i in range(n):
        image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        owner = np.full((size, size), -1, np.int64)
        boxes, labels = [], []
        for k in range(1 + i % 3):
            w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
            x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            label = int(rng.integers(0, 2))
            image[y0 : y0 + h, x0 : x0 + w] = COLOURS[label]
            owner[y0 : y0 + h, x0 : x0 + w] = k
            boxes.append([x0, y0, x0 + w, y0 + h])
            labels.append(label)
        m = np.stack([(owner == k).astype(np.uint8) for k in range(len(boxes))])
        # a rectangle painted over by a later one keeps only its visible pixels: its box shrinks to them
        for k in range(len(boxes)):
            ys, xs = np.nonzero(m[k])
            boxes[k] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        images.append(image)
        all_masks.append(m)
        targets.append(
            DetectionTarget(
                boxes=np.asarray(boxes, np.float32),
                labels=np.asarray(labels, np.int64),
                iscrowd=np.zeros(len(boxes), bool),
                ann_ids=list(range(len(boxes))),
                masks=(lambda m=m: m) if masks else None,
            )
        )
    return detection_dataset(
        name="synthetic_boxes",
        classes=["red", "green"],
        targets=targets,
        sizes=[(size, size)] * n,
        splits=split_images(n, seed),
        load=images.__getitem__,
        fingerprint=fingerprint_arrays("synthetic_boxes", str(seed), *images),
        has_masks=masks,
        meta={"synthetic": True},
    )


@functools.cache
def loaded_backbone(name: str):
    """The registered backbone (spec + module), built once per process; callers deep-copy its network."""
    from bobench.backbones import create_backbone

    return create_backbone(name)


def network_of(name: str):
    return copy.deepcopy(loaded_backbone(name).module.network)


SMALL = dict(fpn_channels=32, min_size=64, max_size=64, detections_per_image=20)


def small_detector(name: str, *, num_classes: int = 2, seed: int = 0, network=None, **config):
    """A detector on backbone `name` sized for CPU tests (64 px, a 32-wide pyramid); `config` overrides
    DetectorConfig fields (head, regime, ...)."""
    from bobench.detection.model import DetectorConfig, build_detector

    spec = loaded_backbone(name).spec
    cfg = replace(DetectorConfig(), **{**SMALL, **config})
    return build_detector(
        network if network is not None else network_of(name), spec.model_id, num_classes=num_classes,
        mean=spec.mean, std=spec.std, config=cfg, seed=seed,
    )  # fmt: skip


def context(root, dataset, backbone: str = "efficientnet_lite0"):
    """A real LocalContext for the detection protocols: cache and checkpoints under `root`, the
    backbone's module from the registry, no embedder (detection trains the module)."""
    from bobench.backbones import create_backbone, get_spec
    from bobench.battle.context import LocalContext
    from bobench.config import Settings
    from bobench.data import load_dataset
    from bobench.embed.cache import FeatureCache

    def no_embedder():
        raise AssertionError("detection trains the backbone module; it must not ask for an embedder")

    return LocalContext(
        get_spec(backbone), dataset, cache=FeatureCache(root), embedder_factory=no_embedder,
        dataset_loader=load_dataset, module_factory=lambda: create_backbone(backbone).module,
        settings=Settings(cache_dir=str(root)),
    )  # fmt: skip
