"""The fine-tuning recipe as one frozen, validated dataclass.

Defaults (recipe "bobench") follow the BoB / timm fine-tuning recipe where it makes sense at small
scale (AdamW, weight decay 0.05, layer-wise lr decay 0.75, cosine schedule with linear warm-up, label
smoothing 0.1), with fewer epochs, a smaller batch and a seeded horizontal flip as the only
augmentation. `recipe: bob` starts from the BoB paper's recipe instead (timm's: lr 1e-3 at effective
batch 1024, scaled linearly to the batch used, 100 epochs, 5 warm-up epochs, RandAugment m9, mixup
0.8, cutmix 1.0, drop-path 0.1); keys given beside `recipe` override it. RandAugment, mixup/cutmix
and drop-path are timm's own (`timm.data.rand_augment_transform`, `timm.data.Mixup`, `DropPath`).
`lr_grid`, when given, trains one run per lr and keeps the one with the best validation top-1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bobench.errors import InvalidArgument

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_SCALINGS = ("none", "linear", "sqrt")
RECIPES: dict[str, dict[str, Any]] = {
    "bobench": {},
    "bob": {
        "epochs": 100,
        "lr": 1e-3,
        "lr_scaling": "linear",
        "lr_base_batch_size": 1024,
        "weight_decay": 0.05,
        "layer_decay": 0.75,
        "warmup_epochs": 5.0,
        "label_smoothing": 0.1,
        "randaugment": "rand-m9-mstd0.5-inc1",
        "mixup": 0.8,
        "cutmix": 1.0,
        "drop_path": 0.1,
    },
}


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning run; every field is part of the run's identity.

    `lr` is the peak learning rate of the head at `lr_base_batch_size`; the lr used is scaled to
    `batch_size` by `lr_scaling` ("none", "linear", "sqrt"; timm's rule). Backbone layer i of L gets
    that lr * layer_decay ** (L - i) (see `bobench.finetune.optim.param_groups`). `warmup_epochs` may be
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
    recipe: str = "bobench"
    lr_grid: tuple[float, ...] = ()
    lr_scaling: str = "none"
    lr_base_batch_size: int = 256
    drop_path: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    randaugment: str = ""

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
        if self.min_lr > min((self.lr, *self.lr_grid)):
            raise InvalidArgument(
                f"finetune config: 'min_lr' ({self.min_lr}) must not exceed 'lr' ({self.lr}) nor any 'lr_grid' value"
            )
        self._check_recipe_fields()

    def _check_recipe_fields(self) -> None:
        if self.recipe not in RECIPES:
            raise InvalidArgument(
                f"finetune config: 'recipe' must be one of {sorted(RECIPES)}, got {self.recipe!r}"
            )
        if self.lr_scaling not in LR_SCALINGS:
            raise InvalidArgument(
                f"finetune config: 'lr_scaling' must be one of {LR_SCALINGS}, got {self.lr_scaling!r}"
            )
        self._check_int("lr_base_batch_size", 1)
        for name in ("drop_path",):
            self._check_float(name, low=0.0, high=1.0, high_open=True)
        for name in ("mixup", "cutmix"):
            self._check_float(name, low=0.0)
        if not isinstance(self.lr_grid, tuple) or any(
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0
            for v in self.lr_grid
        ):
            raise InvalidArgument(
                f"finetune config: 'lr_grid' must be a list of positive numbers, got {self.lr_grid!r}"
            )
        if not isinstance(self.randaugment, str) or (
            self.randaugment and not self.randaugment.startswith("rand")
        ):
            raise InvalidArgument(
                "finetune config: 'randaugment' must be '' or a timm RandAugment string such as "
                f"'rand-m9-mstd0.5-inc1', got {self.randaugment!r}"
            )
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise InvalidArgument(
                f"finetune config: mixup/cutmix need an even 'batch_size' (timm's Mixup), got {self.batch_size}"
            )

    def learning_rates(self) -> tuple[float, ...]:
        """The peak lr values to train: `lr_grid` when given, else (`lr`,) — before batch scaling."""
        return self.lr_grid or (self.lr,)

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
        out = dataclasses.asdict(self)
        out["lr_grid"] = list(self.lr_grid)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str = "finetune config") -> FinetuneConfig:
        """Build from a mapping: the named `recipe`'s values, overridden by the keys given. An unknown
        key or recipe is an InvalidArgument naming it and `where`."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgument(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        recipe = values.get("recipe", "bobench")
        if recipe not in RECIPES:
            raise InvalidArgument(f"{where}: unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
        values = {**RECIPES[recipe], **values}
        if isinstance(values.get("lr_grid"), list):
            values["lr_grid"] = tuple(
                float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values["lr_grid"]
            )
        floats = ("lr", "min_lr", "weight_decay", "warmup_epochs", "layer_decay", "label_smoothing")
        for name in (*floats, "drop_path", "mixup", "cutmix"):
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
