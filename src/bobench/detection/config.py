"""The detection protocols' config, torch-free: the detector and training dataclasses, the flat
protocol `DEFAULTS` and `parse_config`, which checks every value.

`bobench.protocols.config_checks` runs `parse_config` while a battle is planned (in the scheduler,
which has no torch), `bobench.detection.run` runs it again before training; `model.py` and `train.py`
take their configs from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from bobench.detection.metrics import DEFAULT_RESAMPLES
from bobench.errors import InvalidArgument

REGIMES = ("finetune", "frozen", "random")
HEADS = ("faster_rcnn", "mask_rcnn", "retinanet", "fcos")


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture choices (the protocol config's model part)."""

    head: str = "faster_rcnn"
    regime: str = "finetune"
    fpn_channels: int = 256
    min_size: int = 512
    max_size: int = 800
    anchor_scale: float = 8.0
    detections_per_image: int = 100


@dataclass(frozen=True)
class TrainConfig:
    """The protocol config's training part."""

    epochs: int = 12
    batch_size: int = 2
    lr: float = 2e-4  # at a batch of train.REFERENCE_BATCH images; scaled linearly with batch_size
    weight_decay: float = 0.05
    warmup_steps: int = 50
    schedule: str = "cosine"  # "cosine" | "step"
    hflip: bool = True
    vflip: bool = False
    device: str = "cpu"


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
