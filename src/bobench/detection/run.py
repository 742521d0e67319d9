"""One detection run, shared by the `detection`, `instance_segmentation` and `ood_detection` protocols.

The flat protocol config (`DEFAULTS`) and its checks (`parse_config`) live in the torch-free
`bobench.detection.config`; the training recipe's `device` comes from the settings. `run_detection` builds the
detector on the run's backbone (`ctx.backbone_module().network`: the weights every other protocol
uses), trains it with checkpoints under `<cache_dir>/detection/<key>` (key: backbone digest, dataset
fingerprint, config, seed, splits), so a battle re-run after a kill resumes, and scores the best-val
weights on each requested test set.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bobench.data.detection import DetectionDataset
from bobench.detection.config import TrainConfig, parse_config
from bobench.detection.metrics import coco_metrics
from bobench.errors import InvalidArgument
from bobench.hashing import CHECKPOINT_DIR_HEX, json_digest

log = logging.getLogger(__name__)


def _device(ctx) -> str:
    import torch

    wanted = str(getattr(getattr(ctx, "settings", None), "device", "cpu") or "cpu")
    if not wanted.startswith("cuda"):
        return "cpu"
    if torch.cuda.is_available():
        return wanted
    log.warning("detection: device %r asked for but CUDA is not available here; training on the CPU", wanted)
    return "cpu"


def _cache_dir(ctx) -> Path:
    settings = getattr(ctx, "settings", None)
    if settings is None:  # a context without settings: the defaults (library code reads no environment)
        from bobench.config import Settings

        settings = Settings()
    return Path(settings.cache_dir)


def checkpoint_dir(cache_dir: Path, key_parts: dict[str, Any]) -> Path:
    return cache_dir / "detection" / json_digest(key_parts, CHECKPOINT_DIR_HEX)


def run_identity(
    protocol: str, spec: Any, ds: Any, config: dict[str, Any], seed: int, train: list[int], val: list[int]
) -> dict[str, Any]:
    """What a detection run's checkpoint directory is keyed by (`checkpoint_dir`): the protocol, the
    backbone digest, the dataset fingerprint, the detector config, the seed and the train/val images.
    A run Job computes it before the run to know which directory to sync
    (`bobench.protocols.job_checkpoints`), so both sides call this one function."""
    return {
        "protocol": protocol,
        "backbone": spec.digest(),
        "dataset": ds.fingerprint,
        "config": {k: config[k] for k in sorted(config)},
        "seed": int(seed),
        "train": [int(i) for i in train],
        "val": [int(i) for i in val],
    }


def run_detection(
    ctx,
    ds: DetectionDataset,
    config: dict[str, Any],
    seed: int,
    *,
    protocol: str,
    train: list[int],
    val: list[int],
    tests: dict[str, tuple[DetectionDataset, list[int]]],
    iou_types: tuple[str, ...] = ("bbox",),
) -> dict[str, Any]:
    """Train on `train` (select on `val`) and score each of `tests` ({prefix: (dataset, indices)}):
    metrics are `<prefix><metric>` (prefix "" for the plain test set). Returns the metrics dict."""
    from bobench.detection.model import build_detector
    from bobench.detection.train import predict, train_detector

    det_cfg, train_cfg, resamples = parse_config(config, protocol)
    if det_cfg.head == "mask_rcnn" and not ds.has_masks:
        raise InvalidArgument(
            f"protocol {protocol!r}: head mask_rcnn needs instance masks; {ds.name!r} has none"
        )
    train_cfg = TrainConfig(**{**asdict(train_cfg), "device": _device(ctx)})
    network = ctx.backbone_module().network
    spec = ctx.spec
    detector = build_detector(
        network,
        spec.model_id,
        num_classes=len(ds.classes),
        mean=spec.mean,
        std=spec.std,
        config=det_cfg,
        seed=seed,
    )
    identity = run_identity(protocol, spec, ds, config, seed, train, val)
    out = checkpoint_dir(_cache_dir(ctx), identity)
    primary = "mask_AP" if "segm" in iou_types else "AP"
    summary = train_detector(
        detector, ds, out, train_cfg, seed=seed, identity=identity, train_split=train, val_split=val,
        primary=primary, progress=ctx.progress,
    )  # fmt: skip
    metrics: dict[str, Any] = {
        "best_epoch": summary["best_epoch"],
        f"val_{primary}": summary[f"val_{primary}"],
    }
    for prefix, (test_ds, indices) in tests.items():
        if not indices:
            raise InvalidArgument(
                f"protocol {protocol!r}: the {prefix or 'test'} set of {test_ds.name!r} is empty"
            )
        dets = predict(detector, test_ds, indices, train_cfg.batch_size, train_cfg.device)
        for iou_type in iou_types:
            scored = coco_metrics(test_ds, indices, dets, iou_type=iou_type, resamples=resamples, seed=seed)
            metrics.update({f"{prefix}{k}": v for k, v in scored.items()})
    metrics["regime"] = det_cfg.regime
    metrics["device"] = train_cfg.device  # where it really trained (a cuda request falls back to the CPU)
    metrics["checkpoint_dir"] = str(out)
    return metrics
