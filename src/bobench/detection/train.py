"""Training a detector: AdamW, warm-up + cosine/step schedule, flips, checkpoints every epoch, resume.

Recipe: AdamW with lr = `lr` x batch_size / 16 (`lr` is the rate at a batch of 16 images, the usual
batch-scaling rule), linear warm-up over `warmup_steps`, then cosine decay to 0 or a x0.1 step at 2/3
and 8/9 of training (`schedule`); horizontal (and, for aerial images, optional vertical) flips with
probability 0.5. Crowd/ignore boxes are not training targets. The epoch with the best validation AP
(box AP; mask AP for Mask R-CNN) is kept (`best.pt`) and scored on the test split; without a val
split the last epoch is (and `best.pt` is not written: it would repeat `last.pt`'s weights).

Determinism and resume: epoch e's image order and flips come from numpy's generator seeded (seed,
e), and torch's generator (RPN/ROI sampling) is reseeded with (seed, e) at its start, so an epoch's
updates depend only on the weights and optimizer state it starts from. `last.pt` (model, optimizer,
epoch, best so far) is written atomically after every epoch (`bobench.finetune.checkpoint`); a run
killed at any instant and started again with the same arguments resumes after the last completed
epoch and ends with the same weights as an uninterrupted run (on the same device and thread count).
The last epoch's `last.pt` holds no optimizer state (two thirds of the file under AdamW): training is
complete, nothing resumes from it, and a rerun reads its weights and skips training.
A checkpoint of another run (backbone, data, config, seed differ) is refused (FailedPrecondition).
Mixed precision (bf16 autocast) is used on CUDA only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bobench.data.detection import DetectionDataset
from bobench.detection.config import TrainConfig
from bobench.detection.metrics import ImageDetections, coco_metrics
from bobench.errors import InvalidArgument
from bobench.finetune.checkpoint import check_identity, load_checkpoint, save_checkpoint, write_json_atomic

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"
REFERENCE_BATCH = 16
ProgressFn = Callable[[int, int, str], None]


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total`."""
    peak = cfg.lr * cfg.batch_size / REFERENCE_BATCH
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.schedule == "step":
        decay = 0.1 ** sum(step >= total * f for f in (2 / 3, 8 / 9))
    elif cfg.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))
    else:
        raise InvalidArgument(f"detection: schedule must be 'cosine' or 'step', got {cfg.schedule!r}")
    return peak * warm * decay


def sample(ds: DetectionDataset, i: int, hflip: bool, vflip: bool, masks: bool) -> tuple[torch.Tensor, dict]:
    """Image i as float [3, H, W] in 0..1 and its training target (crowd boxes left out), flipped."""
    image = torch.from_numpy(np.array(ds.load(i), dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    t = ds.targets[i]
    keep = ~t.iscrowd
    boxes = torch.from_numpy(t.boxes[keep].astype(np.float32)).reshape(-1, 4)
    target = {"boxes": boxes, "labels": torch.from_numpy(t.labels[keep] + 1).long()}
    if masks:
        m = t.masks() if len(t) else np.zeros((0, *image.shape[1:]), np.uint8)
        target["masks"] = torch.from_numpy(m[keep].astype(np.uint8))
    h, w = image.shape[1:]
    if hflip:
        image = image.flip(-1)
        target["boxes"] = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        if masks:
            target["masks"] = target["masks"].flip(-1)
    if vflip:
        b = target["boxes"]
        image = image.flip(-2)
        target["boxes"] = torch.stack([b[:, 0], h - b[:, 3], b[:, 2], h - b[:, 1]], 1)
        if masks:
            target["masks"] = target["masks"].flip(-2)
    return image, target


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict(
    detector: torch.nn.Module, ds: DetectionDataset, indices: Sequence[int], batch_size: int, device: str
) -> list[ImageDetections]:
    """Detections of images `indices` (labels back to dataset class indices, masks binarised at 0.5)."""
    dev = torch.device(device)
    detector.eval()
    out: list[ImageDetections] = []
    for start in range(0, len(indices), batch_size):
        chunk = [int(i) for i in indices[start : start + batch_size]]
        images = [sample(ds, i, False, False, False)[0].to(dev) for i in chunk]
        with _autocast(dev):
            results = detector(images)
        for r in results:
            masks = r.get("masks")
            out.append(
                ImageDetections(
                    boxes=r["boxes"].float().cpu().numpy(),
                    scores=r["scores"].float().cpu().numpy(),
                    labels=r["labels"].cpu().numpy().astype(np.int64) - 1,
                    masks=None if masks is None else (masks[:, 0] > 0.5).cpu().numpy().astype(np.uint8),
                )  # fmt: skip
            )
    return out


def _param_groups(detector: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in detector.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _train_epoch(detector, optimizer, ds, order, flips, cfg, step, total, masks, dev) -> tuple[int, float]:
    detector.train()
    losses = []
    for start in range(0, len(order), cfg.batch_size):
        batch = [sample(ds, int(i), bool(fh), bool(fv), masks) for i, fh, fv in zip(
            order[start : start + cfg.batch_size], flips[0][start:], flips[1][start:], strict=False)]  # fmt: skip
        images = [b[0].to(dev) for b in batch]
        targets = [{k: v.to(dev) for k, v in b[1].items()} for b in batch]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg)
        with _autocast(dev):
            loss = sum(detector(images, targets).values())
        if not torch.isfinite(loss):
            raise InvalidArgument(
                f"detection training diverged at step {step} (loss {float(loss)}); lower lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
    return step, float(np.mean(losses)) if losses else float("nan")


def train_detector(
    detector: torch.nn.Module,
    ds: DetectionDataset,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    seed: int,
    identity: dict[str, Any],
    train_split: Sequence[int],
    val_split: Sequence[int],
    primary: str = "AP",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train (resuming from `out_dir/last.pt` when present), leave the best-val weights loaded in
    `detector`, and return {"best_epoch", "val_<primary>", "history"}."""
    out = Path(out_dir)
    dev = torch.device(cfg.device)
    detector.to(dev)
    masks = primary.startswith("mask_")
    iou_type = "segm" if masks else "bbox"
    optimizer = torch.optim.AdamW(_param_groups(detector, cfg.weight_decay), lr=lr_at(0, 1, cfg))
    train_idx = np.asarray(train_split, dtype=np.int64)
    if train_idx.size == 0:
        raise InvalidArgument(f"dataset {ds.name!r}: the train split is empty")
    steps_per_epoch = math.ceil(train_idx.size / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    state = {"epoch": 0, "step": 0, "best_val": None, "best_epoch": 0, "history": []}
    last = out / LAST
    if last.exists():
        saved = load_checkpoint(last)
        check_identity(saved["identity"], identity, last)
        detector.load_state_dict(saved["model"])
        if "optimizer" in saved:  # absent once training is complete
            optimizer.load_state_dict(saved["optimizer"])
        state = {k: saved[k] for k in state}
        log.info("resuming detection training from %s after epoch %d", last, state["epoch"])
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(train_idx)
        flips = (rng.random(order.size) < (0.5 if cfg.hflip else 0.0),
                 rng.random(order.size) < (0.5 if cfg.vflip else 0.0))  # fmt: skip
        torch.manual_seed(int(seed) * 1_000_003 + epoch)
        state["step"], loss = _train_epoch(
            detector, optimizer, ds, order, flips, cfg, state["step"], total, masks, dev
        )
        val = None
        if len(val_split):
            dets = predict(detector, ds, val_split, cfg.batch_size, cfg.device)
            val = coco_metrics(ds, val_split, dets, iou_type=iou_type, resamples=0)[primary]
        improved = state["best_val"] is None or (val is not None and val > state["best_val"])
        if improved or not len(val_split):
            state["best_val"], state["best_epoch"] = val, epoch
            if len(val_split):  # without one the best epoch is the last: last.pt holds its weights
                save_checkpoint(out / BEST, {"model": detector.state_dict(), "epoch": epoch})
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "train_loss": loss, f"val_{primary}": val})
        resumable = {"optimizer": optimizer.state_dict()} if epoch < cfg.epochs else {}
        save_checkpoint(last, {**state, "identity": identity, "model": detector.state_dict(), **resumable})
        write_json_atomic(out / "history.json", {"config": asdict(cfg), "history": state["history"]})
        if progress is not None:
            progress(epoch, cfg.epochs, f"epoch {epoch}/{cfg.epochs} loss {loss:.3f} val {primary} {val}")
    if len(val_split) and (out / BEST).exists():
        detector.load_state_dict(load_checkpoint(out / BEST)["model"])
    return {
        "best_epoch": state["best_epoch"],
        f"val_{primary}": state["best_val"],
        "history": state["history"],
    }
