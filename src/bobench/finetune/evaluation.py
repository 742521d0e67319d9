"""Where and how fine-tuning computes: device and precision from the config, autocast, and scoring a
split (top-1, top-5, loss and the per-image top-1 hits the bootstrap interval resamples)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bobench.errors import InvalidArgument
from bobench.finetune.config import FinetuneConfig
from bobench.finetune.data import SplitTensors, eval_batches


def resolve_device(config: FinetuneConfig) -> tuple[torch.device, str]:
    """(device, precision) from the config: CUDA when asked/available; fp32 on CPU unless bf16 asked."""
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidArgument(
                f"finetune config: device {config.device!r} asked for, but CUDA is not available"
            )
    precision = config.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if device.type == "cpu" and precision == "fp16":
        raise InvalidArgument("finetune config: precision 'fp16' needs a GPU; use 'fp32' or 'bf16' on CPU")
    return device, precision


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def evaluate_split(
    model: nn.Module, data: SplitTensors, batch_size: int, device: torch.device, precision: str
) -> dict[str, float | None]:
    """top1, top5 (None with fewer than 5 classes), mean cross-entropy and per-item top-1 `hits` (bool
    numpy [N]) of `model` on `data`."""
    model.eval()
    correct1 = correct5 = 0
    hits1 = []
    loss_sum = 0.0
    num_classes = 0
    with torch.no_grad():
        for images, labels in eval_batches(data, batch_size):
            images, labels = images.to(device), labels.to(device)
            with autocast(device, precision):
                logits = model(images)
            logits = logits.float()
            num_classes = logits.shape[1]
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            ranked = logits.argsort(dim=1, descending=True, stable=True)
            hits = ranked[:, :5] == labels[:, None]
            correct1 += int(hits[:, 0].sum())
            hits1.append(hits[:, 0].cpu().numpy())
            correct5 += int(hits.any(dim=1).sum())
    n = len(data)
    return {
        "top1": correct1 / n,
        "top5": correct5 / n if num_classes >= 5 else None,
        "loss": loss_sum / n,
        "hits": np.concatenate(hits1),
    }
