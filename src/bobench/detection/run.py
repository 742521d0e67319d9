"""One detection run, shared by the `detection`, `instance_segmentation` and `ood_detection` protocols.

`DEFAULTS` is the flat protocol config: the detector (`DetectorConfig` fields), the training recipe
(`TrainConfig` fields but `device`, which comes from the settings) and `resamples` for the bootstrap.
`parse_config` checks every value (InvalidArgument naming the key). `run_detection` builds the
detector on the run's backbone (`ctx.backbone_module().network`: the weights every other protocol
uses), trains it with checkpoints under `<cache_dir>/detection/<key>` (key: backbone digest, dataset
fingerprint, config, seed, splits), so a battle re-run after a kill resumes, and scores the best-val
weights on each requested test set.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from bobench.data.detection import DetectionDataset
from bobench.detection.metrics import DEFAULT_RESAMPLES, coco_metrics
from bobench.detection.model import HEADS, REGIMES, DetectorConfig
from bobench.detection.train import TrainConfig
from bobench.errors import InvalidArgument
from bobench.hashing import CHECKPOINT_DIR_HEX, json_digest

log = logging.getLogger(__name__)
_TRAIN_KEYS = [f.name for f in fields(TrainConfig) if f.name != "device"]
DEFAULTS: dict[str, Any] = {
    **asdict(DetectorConfig()),
    **{k: v for k, v in asdict(TrainConfig()).items() if k != "device"},
    "resamples": DEFAULT_RESAMPLES,
}
_INT_RANGES = {
    "fpn_channels": (8, 1024), "min_size": (32, 4096), "max_size": (32, 8192), "detections_per_image": (1, 1000),
    "epochs": (1, 1000), "batch_size": (1, 256), "warmup_steps": (0, 1_000_000), "resamples": (0, 10_000),
}  # fmt: skip
# (low, high, low allowed): lr and anchor_scale must be > low; no weight decay (0) is a valid recipe
_FLOAT_RANGES = {
    "lr": (0.0, 1.0, False),
    "weight_decay": (0.0, 10.0, True),
    "anchor_scale": (0.5, 64.0, False),
}
_CHOICES = {"head": HEADS, "regime": REGIMES, "schedule": ("cosine", "step")}


def parse_config(config: dict[str, Any], protocol: str) -> tuple[DetectorConfig, TrainConfig, int]:
    """(detector config, train config without device, resamples) from a resolved protocol config."""
    for key, (low, high) in _INT_RANGES.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidArgument(
                f"protocol {protocol!r}: {key} must be an integer in {low}..{high}, got {value!r}"
            )
    for key, (low, high, closed) in _FLOAT_RANGES.items():
        value = config[key]
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if not number or not (low <= value if closed else low < value) or not value <= high:
            interval = f"{'[' if closed else '('}{low}, {high}]"
            raise InvalidArgument(
                f"protocol {protocol!r}: {key} must be a number in {interval}, got {value!r}"
            )
    for key, choices in _CHOICES.items():
        if config[key] not in choices:
            raise InvalidArgument(
                f"protocol {protocol!r}: {key} must be one of {list(choices)}, got {config[key]!r}"
            )
    for key in ("hflip", "vflip"):
        if not isinstance(config[key], bool):
            raise InvalidArgument(f"protocol {protocol!r}: {key} must be true or false, got {config[key]!r}")
    if config["min_size"] > config["max_size"]:
        raise InvalidArgument(
            f"protocol {protocol!r}: min_size must be <= max_size, got {config['min_size']} > {config['max_size']}"
        )
    detector = DetectorConfig(**{f.name: config[f.name] for f in fields(DetectorConfig)})
    train = TrainConfig(**{k: config[k] for k in _TRAIN_KEYS})
    return detector, train, int(config["resamples"])


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
    (`bobench.battle.executors.job_checkpoints`), so both sides call this one function."""
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
