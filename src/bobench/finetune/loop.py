"""End-to-end fine-tuning of a backbone + linear head, resumable and validation-selected.

One call, `finetune(...)`, serves the `finetune` protocol, `bob finetune` and the Kubernetes Job.
Each epoch: train on "train" (AdamW, layer-wise lr decay, warm-up + cosine per step, label smoothing,
seeded flips, optional timm RandAugment / mixup / cutmix / drop-path, autocast on GPU), score "val",
save `best.pt` when val top-1 improves (ties keep the earlier epoch) and then `last.pt` (model,
optimiser, scheduler, grad scaler, RNG states, epoch, best so far, history) atomically. With an
`lr_grid`, each lr trains in its own `lr-<i>` sub-directory and the lr with the best val top-1 (ties:
the earlier in the grid) is kept. At the end the selected best-val checkpoint is scored on "test" —
test is never looked at before — and test top-1 gets a bootstrap interval over the test images
(seeded by the run seed). With `resume`, a run restarts after the last completed epoch of `last.pt`
and, on CPU, ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bobench.backbones.spec import BackboneSpec
from bobench.bootstrap_ci import bootstrap_mean_ci, ci_fields
from bobench.data.base import Dataset
from bobench.errors import InvalidArgument
from bobench.finetune.augment import mixup, rand_augment, seed_epoch, set_drop_path
from bobench.finetune.checkpoint import (
    BEST,
    LAST,
    check_identity,
    isolated_rng,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from bobench.finetune.config import FinetuneConfig
from bobench.finetune.data import SplitTensors, load_split, steps_per_epoch, train_batches
from bobench.finetune.evaluation import autocast, evaluate_split, resolve_device
from bobench.finetune.optim import find_timm_network, param_groups, scaled_lr, warmup_cosine

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]


class Classifier(nn.Module):
    """Backbone (uint8/float32 0..255 NCHW -> features) followed by a linear head."""

    def __init__(self, backbone: nn.Module, embed_dim: int, num_classes: int, seed: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(embed_dim, num_classes)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # small seeded init: the head starts near uniform predictions
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=gen) * 0.01)
            self.head.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class _Trainer:
    """The objects of one run and the per-epoch step; separate from `finetune` to keep both short."""

    def __init__(
        self,
        model: Classifier,
        config: FinetuneConfig,
        steps_per_epoch: int,
        device: torch.device,
        precision: str,
        lr: float,
    ) -> None:
        self.model, self.config, self.device, self.precision = model, config, device, precision
        self.lr = scaled_lr(lr, config.batch_size, config.lr_base_batch_size, config.lr_scaling)
        groups = param_groups(
            model.backbone,
            model.head,
            lr=self.lr,
            weight_decay=config.weight_decay,
            layer_decay=config.layer_decay,
            n_groups=config.layer_decay_groups,
        )
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=config.weight_decay)
        factor = warmup_cosine(
            config.epochs * steps_per_epoch,
            round(config.warmup_epochs * steps_per_epoch),
            min(1.0, config.min_lr / self.lr),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.augment: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.mix = (
            mixup(config.mixup, config.cutmix, config.label_smoothing, model.head.out_features)
            if config.mixup or config.cutmix
            else None
        )

    def train_epoch(self, data: SplitTensors, seed: int, epoch: int) -> float:
        """One pass over `data`; returns the mean training loss."""
        self.model.train()
        seed_epoch(seed, epoch)
        if self.config.randaugment and self.augment is None:
            self.augment = rand_augment(self.config.randaugment, int(data.images.shape[-1]))
        total, count = 0.0, 0
        for images, labels in train_batches(data, self.config.batch_size, seed, epoch, self.config.flip):
            if self.augment is not None:
                images = self.augment(images)
            images, labels = images.to(self.device), labels.to(self.device)
            targets = None
            if self.mix is not None and len(labels) % 2 == 0:
                images, targets = self.mix(images.float(), labels)
            with autocast(self.device, self.precision):
                logits = self.model(images)
            if targets is None:
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
            else:  # mixup/cutmix: soft targets (label smoothing already folded in by timm's Mixup)
                loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            if not torch.isfinite(loss):
                raise InvalidArgument(
                    f"fine-tuning diverged at epoch {epoch + 1} (loss {float(loss)}); lower 'lr'"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total += float(loss.detach()) * len(labels)
            count += len(labels)
        return total / max(count, 1)

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])


def _resolve_inputs(
    spec_or_name: Any, dataset: Any, module_factory: Callable[[], nn.Module] | None, cache_dir: str | None
) -> tuple[BackboneSpec, nn.Module, Dataset]:
    if module_factory is not None:
        if not isinstance(spec_or_name, BackboneSpec):
            raise InvalidArgument("finetune: a module_factory needs a BackboneSpec, not a name")
        spec, module = spec_or_name, module_factory()
    else:
        from bobench.backbones import create_backbone

        loaded = create_backbone(spec_or_name, cache_dir=cache_dir)
        if loaded.module is None:
            raise InvalidArgument(
                f"backbone {loaded.spec.name!r} has no torch module (ONNX source); it cannot be fine-tuned"
            )
        spec, module = loaded.spec, loaded.module
    if not isinstance(dataset, Dataset):
        from bobench.data import load_dataset

        dataset = load_dataset(dataset)
    return spec, module, dataset


def _embed_dim(module: nn.Module, spec: BackboneSpec) -> int:
    if spec.embed_dim:
        return int(spec.embed_dim)
    with torch.no_grad():
        probe = torch.zeros(2, 3, spec.input_size, spec.input_size, dtype=torch.uint8)
        return int(module.eval()(probe).shape[1])


def finetune(
    spec_or_name: str | BackboneSpec,
    dataset: str | dict | Dataset,
    out_dir: str | Path,
    config: FinetuneConfig | dict[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    *,
    resume: bool = True,
    module_factory: Callable[[], nn.Module] | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Fine-tune backbone + linear head on the dataset's train split; return test metrics of the
    best-val epoch (`top1`, `top5`, `val_top1`, `best_epoch`, `history`, ...; module docstring).

    `dataset` is a Dataset or a dataset ref; the backbone is created from `spec_or_name` unless
    `module_factory` (with a spec) supplies the module. Checkpoints go to `out_dir`. `progress` is
    called as (epochs done, epochs, message) after each epoch's checkpoint is on disk. The global RNGs
    (torch, numpy, random) are seeded from `seed` inside and restored on return. Raises
    InvalidArgument (bad config, data, divergence) or FailedPrecondition (a checkpoint in `out_dir`
    from a different run, or an unreadable one).
    """
    cfg = config if isinstance(config, FinetuneConfig) else FinetuneConfig.from_dict(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with isolated_rng():
        _seed_all(seed)
        spec, module, ds = _resolve_inputs(spec_or_name, dataset, module_factory, cache_dir)
        device, precision = resolve_device(cfg)
        splits = {name: load_split(ds, name, spec) for name in ("train", "val", "test")}
        if cfg.drop_path:
            found = find_timm_network(module)
            set_drop_path(found[1] if found else module, cfg.drop_path)
        shape = (_embed_dim(module, spec), len(ds.classes))
        initial = copy.deepcopy(module.state_dict())  # every lr of the grid starts from these weights
        lrs, runs = cfg.learning_rates(), []
        t0 = time.perf_counter()
        for i, lr in enumerate(lrs):
            job = _LrRun(out if len(lrs) == 1 else out / f"lr-{i}", lr, i, len(lrs))
            runs.append(_train_lr(job, module, initial, shape, spec, ds.fingerprint, splits, cfg, seed, device,
                                  precision, resume, progress))  # fmt: skip
        train_s = time.perf_counter() - t0
        best = max(range(len(runs)), key=lambda i: (runs[i]["run"]["best_val_top1"], -i))
        chosen = runs[best]
        model = Classifier(module, *shape, seed).to(device)
        model.load_state_dict(load_checkpoint(chosen["dir"] / BEST)["model"])
        test = evaluate_split(model, splits["test"], cfg.eval_batch_size, device, precision)
    run = chosen["run"]
    return {
        "top1": test["top1"],
        **ci_fields("top1", bootstrap_mean_ci(test["hits"].astype(np.float64), seed=seed)),
        "top5": test["top5"],
        "test_loss": test["loss"],
        "val_top1": run["best_val_top1"],
        "best_epoch": run["best_epoch"],
        "lr": lrs[best],
        "effective_lr": chosen["effective_lr"],
        **(
            {f"val_top1_lr{i}": r["run"]["best_val_top1"] for i, r in enumerate(runs)} if len(lrs) > 1 else {}
        ),
        "epochs": cfg.epochs,
        "final_train_loss": run["history"][-1]["train_loss"] if run["history"] else None,
        "n_train": len(splits["train"]),
        "n_val": len(splits["val"]),
        "n_test": len(splits["test"]),
        "device": device.type,
        "precision": precision,
        "resumed_from_epoch": chosen["resumed_from"],
        "train_time_s": train_s,
        "history": run["history"],
    }


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@dataclass(frozen=True)
class _LrRun:
    """One lr of the grid: its checkpoint directory, peak lr (before batch scaling), index and grid size."""

    out: Path
    lr: float
    index: int
    count: int


def _train_lr(
    job: _LrRun,
    module: nn.Module,
    initial: dict[str, torch.Tensor],
    shape: tuple[int, int],
    spec: BackboneSpec,
    dataset_fingerprint: str,
    splits: dict[str, SplitTensors],
    cfg: FinetuneConfig,
    seed: int,
    device: torch.device,
    precision: str,
    resume: bool,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """Train (or resume, or find finished) the run of one lr from the initial weights; returns its run
    state, directory, batch-scaled lr and the epoch it resumed from."""
    _seed_all(seed)  # every lr's run is the run a grid of that lr alone would make
    module.load_state_dict(initial)
    model = Classifier(module, *shape, seed).to(device)
    trainer = _Trainer(
        model, cfg, steps_per_epoch(len(splits["train"]), cfg.batch_size), device, precision, job.lr
    )
    identity = {
        "backbone": spec.digest(),
        "dataset": dataset_fingerprint,
        "config": cfg.to_dict(),
        "seed": seed,
    }
    if job.count > 1:
        identity["lr"] = job.lr
    job.out.mkdir(parents=True, exist_ok=True)
    run = _start_or_resume(trainer, job.out, identity, resume)
    resumed_from = run["epoch"]
    report = progress
    if progress is not None and job.count > 1:

        def report(done: int, total: int, message: str) -> None:
            progress(job.index * total + done, job.count * total, f"lr {job.lr:g}: {message}")

    _train_epochs(trainer, splits, run, job.out, seed, identity, report, spec.name)
    return {"run": run, "dir": job.out, "effective_lr": trainer.lr, "resumed_from": resumed_from}


def _start_or_resume(trainer: _Trainer, out: Path, identity: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The run state: restored from `out/last.pt` when resuming, else fresh (old checkpoints removed)."""
    if resume and (out / LAST).exists():
        ckpt = load_checkpoint(out / LAST)
        check_identity(ckpt["identity"], identity, out / LAST)
        trainer.restore(ckpt)
        log.info("resuming from %s after epoch %d", out / LAST, ckpt["run"]["epoch"])
        return ckpt["run"]
    for name in (LAST, BEST):
        (out / name).unlink(missing_ok=True)
    return {"epoch": 0, "best_val_top1": None, "best_epoch": None, "history": []}


def _train_epochs(
    trainer: _Trainer,
    splits: dict[str, SplitTensors],
    run: dict[str, Any],
    out: Path,
    seed: int,
    identity: dict[str, Any],
    progress: ProgressFn | None,
    name: str,
) -> None:
    """Train the remaining epochs; after each, checkpoint best (if val improved) and last, then report."""
    cfg, model = trainer.config, trainer.model
    for epoch in range(run["epoch"], cfg.epochs):
        train_loss = trainer.train_epoch(splits["train"], seed, epoch)
        val = evaluate_split(model, splits["val"], cfg.eval_batch_size, trainer.device, trainer.precision)
        lr = trainer.optimizer.param_groups[-1]["lr"]
        run["history"].append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_top1": val["top1"],
                "val_loss": val["loss"],
                "lr": lr,
            }
        )
        if run["best_val_top1"] is None or val["top1"] > run["best_val_top1"]:
            run["best_val_top1"], run["best_epoch"] = val["top1"], epoch + 1
            save_checkpoint(
                out / BEST, {"model": model.state_dict(), "epoch": epoch + 1, "val_top1": val["top1"]}
            )
        run["epoch"] = epoch + 1
        save_checkpoint(out / LAST, {**trainer.state(), "run": run, "identity": identity})
        log.info(
            "epoch %d/%d: train loss %.4f, val top1 %.4f", epoch + 1, cfg.epochs, train_loss, val["top1"]
        )
        if progress is not None:
            progress(
                epoch + 1, cfg.epochs, f"fine-tune {name}: epoch {epoch + 1}, val top1 {val['top1']:.3f}"
            )
