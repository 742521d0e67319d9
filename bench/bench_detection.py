"""Detection training and inference images/s: bobench's loop vs torchvision's plain reference loop.

Same detector (bobench's Faster R-CNN + FPN over the backbone, `bobench.detection.model`; each side
gets its own copy of the same initial weights), same real images (the bundled tree-crown tiles, cut
from the deepforest wheel), same batch size, input size and thread count, measured in the same run.

- bobench: `train_detector` for `--epochs` epochs (lr schedule, flips, an atomic checkpoint and
  history after every epoch, no validation split, so no evaluation inside the timing) and `predict`
  (detections back as numpy per image).
- reference: the loop of torchvision's detection reference (`references/detection/engine.py`
  `train_one_epoch` / `evaluate`, without its logging): images as float tensors, `sum(model(images,
  targets).values())`, zero_grad / backward / step with AdamW; eval: `model.eval()`, `no_grad`,
  `model(images)`.

Images/s = images processed / wall seconds, after one untimed warm-up batch of each kind (first calls
allocate memory and pick kernels). The sides alternate (order swapped each round) and the
median per-round ratio bobench / reference is printed per backbone (target: >= 0.9, i.e. bobench's
loop costs at most 10 % over the plain one). CPU always; CUDA too when a GPU is present (bf16
autocast on both sides, as the protocol trains), else that part is skipped and says so.

    python bench/bench_detection.py [--backbones resnet18-random,...] [--images 8] [--size 128]
                                    [--batch-size 4] [--epochs 1] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bobench.backbones import create_backbone, get_spec
from bobench.data import load_dataset
from bobench.detection.model import DetectorConfig, build_detector
from bobench.detection.train import TrainConfig, predict, train_detector

DEFAULT_BACKBONES = "resnet18-random,efficientnet_lite0,convnext_atto-random,vit_tiny_patch16_224-random"


def tensors(ds, indices: list[int]) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """The reference's inputs, loaded as torchvision's reference loader does (float 0..1, xyxy, 1-based)."""
    out = []
    for i in indices:
        image = torch.from_numpy(np.array(ds.load(i), dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        t = ds.targets[i]
        boxes = torch.from_numpy(t.boxes.astype(np.float32)).reshape(-1, 4)
        out.append((image, {"boxes": boxes, "labels": torch.from_numpy(t.labels + 1).long()}))
    return out


def _autocast(device: torch.device):
    return (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_train(model, ds, indices, batch_size, epochs, lr, device) -> float:
    """torchvision reference `train_one_epoch`, `epochs` times; returns images/s (loading included)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05
    )
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        data = tensors(ds, indices)
        for b in range(0, len(data), batch_size):
            images = [img.to(device) for img, _ in data[b : b + batch_size]]
            targets = [{k: v.to(device) for k, v in t.items()} for _, t in data[b : b + batch_size]]
            with _autocast(device):
                loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    _sync(device)
    return epochs * len(indices) / (time.perf_counter() - start)


@torch.no_grad()
def reference_infer(model, ds, indices, batch_size, device) -> float:
    """torchvision reference `evaluate` without the COCO scoring; returns images/s."""
    model.to(device).eval()
    _sync(device)
    start = time.perf_counter()
    data = tensors(ds, indices)
    for b in range(0, len(data), batch_size):
        with _autocast(device):
            outputs = model([img.to(device) for img, _ in data[b : b + batch_size]])
        for o in outputs:  # to host memory, as the reference's evaluate hands results to the COCO API
            {k: v.cpu() for k, v in o.items()}
    _sync(device)
    return len(indices) / (time.perf_counter() - start)


def bobench_train(model, ds, indices, cfg: TrainConfig) -> float:
    with tempfile.TemporaryDirectory() as out:
        _sync(torch.device(cfg.device))
        start = time.perf_counter()
        train_detector(model, ds, Path(out), cfg, seed=0, identity={"bench": True}, train_split=indices,
                       val_split=[])  # fmt: skip
        _sync(torch.device(cfg.device))
        return cfg.epochs * len(indices) / (time.perf_counter() - start)


def bobench_infer(model, ds, indices, batch_size, device) -> float:
    _sync(torch.device(device))
    start = time.perf_counter()
    predict(model, ds, indices, batch_size, device)
    _sync(torch.device(device))
    return len(indices) / (time.perf_counter() - start)


def measure(name: str, ds, indices, args, device: str) -> dict[str, float]:
    spec = get_spec(name)
    det_cfg = DetectorConfig(min_size=args.size, max_size=args.size)
    network = create_backbone(name).module.network
    template = build_detector(network, spec.model_id, num_classes=len(ds.classes), mean=spec.mean,
                              std=spec.std, config=det_cfg, seed=0)  # fmt: skip
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, warmup_steps=1, device=device)
    lr = cfg.lr * cfg.batch_size / 16
    dev = torch.device(device)
    ratios: dict[str, list[float]] = {"train": [], "infer": []}
    ips: dict[str, list[float]] = {"train_bob": [], "train_ref": [], "infer_bob": [], "infer_ref": []}
    warm = copy.deepcopy(template)  # first calls allocate and pick kernels: not timed on either side
    reference_train(warm, ds, indices[: args.batch_size], args.batch_size, 1, lr, dev)
    reference_infer(warm, ds, indices[: args.batch_size], args.batch_size, dev)
    for rnd in range(args.rounds):
        first_bobench = rnd % 2 == 0
        for side in ("bob", "ref") if first_bobench else ("ref", "bob"):
            model = copy.deepcopy(template)
            if side == "bob":
                ips["train_bob"].append(bobench_train(model, ds, indices, cfg))
                ips["infer_bob"].append(bobench_infer(model, ds, indices, args.batch_size, device))
            else:
                ips["train_ref"].append(
                    reference_train(model, ds, indices, args.batch_size, args.epochs, lr, dev)
                )
                ips["infer_ref"].append(reference_infer(model, ds, indices, args.batch_size, dev))
        ratios["train"].append(ips["train_bob"][-1] / ips["train_ref"][-1])
        ratios["infer"].append(ips["infer_bob"][-1] / ips["infer_ref"][-1])
    out = {k: statistics.median(v) for k, v in ips.items()}
    out.update({f"ratio_{k}": statistics.median(v) for k, v in ratios.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=DEFAULT_BACKBONES)
    parser.add_argument("--images", type=int, default=8, help="tree-crown tiles trained on and inferred")
    parser.add_argument("--size", type=int, default=128, help="detector input size (min_size = max_size)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("tree_crowns")
    indices = [int(i) for i in ds.split("train")[: args.images]]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" not in devices:
        print("GPU: skipped (no CUDA device here)")
    print(f"tree_crowns: {len(indices)} tiles, input {args.size} px, batch {args.batch_size}, "
          f"{args.epochs} epoch(s), {args.rounds} rounds, {args.threads} threads; torch {torch.__version__}")  # fmt: skip
    header = f"{'device':6} {'backbone':30} {'train bob':>10} {'train ref':>10} {'ratio':>6} {'infer bob':>10} {'infer ref':>10} {'ratio':>6}"
    print(header)
    for device in devices:
        for name in args.backbones.split(","):
            m = measure(name, ds, indices, args, device)
            print(f"{device:6} {name:30} {m['train_bob']:10.2f} {m['train_ref']:10.2f} {m['ratio_train']:6.3f} "
                  f"{m['infer_bob']:10.2f} {m['infer_ref']:10.2f} {m['ratio_infer']:6.3f}", flush=True)  # fmt: skip
    print("images/s; ratio = bobench / torchvision reference loop (median over rounds; target >= 0.9)")


if __name__ == "__main__":
    main()
