"""The fine-tuning recipe as one frozen, validated dataclass.

Defaults follow the BoB / timm fine-tuning recipe where it makes sense at small scale (AdamW, weight
decay 0.05, layer-wise lr decay 0.75, cosine schedule with linear warm-up, label smoothing 0.1), with
fewer epochs and a smaller batch. Mixup/cutmix/RandAugment are not implemented; the augmentation is a
seeded random horizontal flip.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bobench.errors import InvalidArgument

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning run; every field is part of the run's identity.

    `lr` is the peak learning rate of the head; backbone depth group g of G gets
    lr * layer_decay ** (G - g) (see `bobench.finetune.optim.param_groups`). `warmup_epochs` may be
    fractional. `precision` "auto" means bf16 autocast on a GPU that supports it, else fp16 with a
    gradient scaler, and fp32 on CPU. `device` "auto" picks CUDA when available.
    """

    epochs: int = 10
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    batch_size: int = 32
    eval_batch_size: int = 64
    warmup_epochs: float = 1.0
    layer_decay: float = 0.75
    layer_decay_groups: int = 12
    label_smoothing: float = 0.1
    flip: bool = True
    precision: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        self._check_int("epochs", 1)
        self._check_int("batch_size", 1)
        self._check_int("eval_batch_size", 1)
        self._check_int("layer_decay_groups", 1)
        self._check_float("lr", low=0.0, low_open=True)
        self._check_float("min_lr", low=0.0)
        self._check_float("weight_decay", low=0.0)
        self._check_float("warmup_epochs", low=0.0)
        self._check_float("layer_decay", low=0.0, low_open=True, high=1.0)
        self._check_float("label_smoothing", low=0.0, high=1.0, high_open=True)
        if not isinstance(self.flip, bool):
            raise InvalidArgument(f"finetune config: 'flip' must be true or false, got {self.flip!r}")
        if self.precision not in PRECISIONS:
            raise InvalidArgument(
                f"finetune config: 'precision' must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu") or self.device.startswith("cuda")
        ):
            raise InvalidArgument(
                f"finetune config: 'device' must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}"
            )
        if self.min_lr > self.lr:
            raise InvalidArgument(
                f"finetune config: 'min_lr' ({self.min_lr}) must not exceed 'lr' ({self.lr})"
            )

    def _check_int(self, name: str, low: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidArgument(f"finetune config: {name!r} must be an integer >= {low}, got {value!r}")

    def _check_float(
        self,
        name: str,
        *,
        low: float,
        high: float = math.inf,
        low_open: bool = False,
        high_open: bool = False,
    ) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidArgument(f"finetune config: {name!r} must be a finite number, got {value!r}")
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            raise InvalidArgument(
                f"finetune config: {name!r} must be in {left}{low}, {high}{right}, got {value!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str = "finetune config") -> FinetuneConfig:
        """Build from a mapping; an unknown key is an InvalidArgument naming it and `where`."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgument(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "layer_decay", "label_smoothing"):
            if isinstance(values.get(name), int) and not isinstance(values[name], bool):
                values[name] = float(values[name])
        try:
            return cls(**values)
        except InvalidArgument as exc:
            raise InvalidArgument(str(exc).replace("finetune config", where, 1)) from None

    def merged(self, **overrides: Any) -> FinetuneConfig:
        """A copy with the non-None `overrides` applied (CLI flags over file values)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return FinetuneConfig.from_dict({**self.to_dict(), **changes})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML/JSON fine-tune config file; InvalidArgument naming the file if malformed."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InvalidArgument(f"finetune config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"finetune config file {p}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgument(f"finetune config file {p}: expected a mapping at the top level")
    return data
