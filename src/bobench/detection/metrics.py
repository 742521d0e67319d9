"""COCO detection metrics through pycocotools, with bootstrap intervals over images.

`coco_metrics(dataset, indices, detections, iou_type)` builds COCO ground truth from a
DetectionDataset's images `indices` and scores `detections` (one `ImageDetections` per image, same
order) with `pycocotools.cocoeval.COCOeval`: AP (IoU .50:.95), AP50, AP75, APs/APm/APl (COCO's
32² / 96² area ranges) and AR100, all in [0, 1], for boxes ("bbox") or masks ("segm", keys prefixed
"mask_"). A figure COCO leaves undefined (-1: no ground truth in that range) is None, never 0.
Crowd regions (`iscrowd`) are COCO's: a detection that falls on one is ignored.

Bootstrap: the images are resampled with replacement (seeded, `resamples` times) and AP / AP50
recomputed on each resample. COCOeval's per-image matching (`evaluate`) does not depend on which
other images are in the set, so it runs once; each resample then re-accumulates the per-image
matches with each image counted as often as it was drawn (`weighted_summary`, which reproduces
COCOeval's `accumulate` + `summarize` exactly at unit weights: a test checks it). 200 resamples is
the default: re-accumulation is numpy-cheap but COCO's 101-point interpolation per (IoU, class,
area) is still Python-bound, and 200 keeps the interval's endpoints stable to about ±0.01 AP on the
tree crowns while costing well under a second per metric.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bobench.bootstrap_ci import ci_fields
from bobench.data.detection import DetectionDataset
from bobench.errors import InvalidArgument

DEFAULT_RESAMPLES = 200
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
AREA_NAMES = ("all", "small", "medium", "large")


@dataclass
class ImageDetections:
    """Detections of one image: xyxy `boxes` float [D, 4], `scores` [D], `labels` [D] (class indices
    of the dataset, no background), optional `masks` uint8 [D, H, W] (binary)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None

    @classmethod
    def empty(cls) -> ImageDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def ground_truth(dataset: DetectionDataset, indices: Sequence[int], iou_type: str = "bbox") -> dict:
    """A COCO instances dict of images `indices` (image id = position in `indices`, category id = class
    index + 1); with iou_type "segm" every annotation carries its mask as RLE."""
    images, annotations = [], []
    for pos, i in enumerate(indices):
        h, w = dataset.image_size(int(i))
        images.append({"id": pos, "height": h, "width": w})
        target = dataset.targets[int(i)]
        masks = target.masks() if iou_type == "segm" and len(target) else None
        for k, (box, label, crowd) in enumerate(
            zip(_xywh(target.boxes), target.labels, target.iscrowd, strict=True)
        ):
            ann = {"id": len(annotations) + 1, "image_id": pos, "category_id": int(label) + 1, "bbox": box,
                   "iscrowd": int(crowd), "area": float(box[2] * box[3])}  # fmt: skip
            if masks is not None:
                ann["segmentation"] = _rle(masks[k])
                ann["area"] = float(masks[k].sum())
            annotations.append(ann)
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(dataset.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detection_results(detections: Sequence[ImageDetections], iou_type: str = "bbox") -> list[dict]:
    """COCO results list (image id = position in `detections`)."""
    out = []
    for pos, det in enumerate(detections):
        masks = det.masks if iou_type == "segm" else None
        if iou_type == "segm" and masks is None and len(det.scores):
            raise InvalidArgument("mask metrics need detections with masks")
        for k, (box, score, label) in enumerate(zip(_xywh(det.boxes), det.scores, det.labels, strict=True)):
            row = {"image_id": pos, "category_id": int(label) + 1, "bbox": box, "score": float(score)}
            if masks is not None:
                row["segmentation"] = _rle(masks[k])
            out.append(row)
    return out


def run_cocoeval(gt: dict, results: list[dict], iou_type: str):
    """An evaluated COCOeval (evaluate + accumulate + summarize, its printing silenced); None when
    there are no detections at all (pycocotools cannot load an empty result list)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _stats_dict(stats: Sequence[float], prefix: str) -> dict[str, float | None]:
    picked = [stats[i] for i in (0, 1, 2, 3, 4, 5, 8)]
    return {f"{prefix}{n}": (None if v < 0 else float(v)) for n, v in zip(METRIC_NAMES, picked, strict=True)}


def _no_detection_stats(gt: dict) -> list[float]:
    """COCO's stats when nothing was detected: 0 where there is ground truth, -1 where there is none."""
    counted = [a for a in gt["annotations"] if not a["iscrowd"]]
    areas = [a["area"] for a in counted]
    has = [bool(areas), any(a < 32**2 for a in areas), any(32**2 <= a < 96**2 for a in areas),
           any(a >= 96**2 for a in areas)]  # fmt: skip
    value = [0.0 if h else -1.0 for h in has]
    return [value[0], value[0], value[0], value[1], value[2], value[3], value[0], value[0], value[0]] + value[
        1:
    ]


class _Matches:
    """Per-(class, area, image) COCO matches at maxDets=100, regrouped for weighted re-accumulation."""

    def __init__(self, ev) -> None:
        p = ev.params
        self.iou_thrs, self.rec_thrs = p.iouThrs, p.recThrs
        self.n_images, self.n_cats, self.n_areas = len(p.imgIds), len(p.catIds), len(p.areaRng)
        max_det = p.maxDets[-1]
        self.cells: dict[tuple[int, int], list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]]] = {}
        for k in range(self.n_cats):
            for a in range(self.n_areas):
                rows = []
                for i in range(self.n_images):
                    e = ev.evalImgs[(k * self.n_areas + a) * self.n_images + i]
                    if e is None:
                        continue
                    rows.append((i, np.asarray(e["dtScores"][:max_det], dtype=np.float64),
                                 e["dtMatches"][:, :max_det] > 0, e["dtIgnore"][:, :max_det].astype(bool),
                                 int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))))  # fmt: skip
                self.cells[(k, a)] = rows


def _precision_recall(rows, weights: np.ndarray, iou_thrs, rec_thrs) -> tuple[np.ndarray, np.ndarray] | None:
    """(precision [T, R], recall [T]) of one (class, area) cell with image i counted weights[i] times;
    None when the cell has no counted ground truth (COCO's -1)."""
    kept = [r for r in rows if weights[r[0]] > 0]
    npig = sum(int(weights[r[0]]) * r[4] for r in kept)
    if not kept or npig == 0:
        return None
    reps = [int(weights[r[0]]) for r in kept]
    scores = np.concatenate([np.tile(r[1], n) for r, n in zip(kept, reps, strict=True)])
    dtm = np.concatenate([np.tile(r[2], (1, n)) for r, n in zip(kept, reps, strict=True)], axis=1)
    dti = np.concatenate([np.tile(r[3], (1, n)) for r, n in zip(kept, reps, strict=True)], axis=1)
    order = np.argsort(-scores, kind="mergesort")
    dtm, dti = dtm[:, order], dti[:, order]
    tp = np.cumsum(dtm & ~dti, axis=1, dtype=np.float64)
    fp = np.cumsum(~dtm & ~dti, axis=1, dtype=np.float64)
    precision = np.zeros((len(iou_thrs), len(rec_thrs)))
    recall = np.zeros(len(iou_thrs))
    for t in range(len(iou_thrs)):
        nd = tp.shape[1]
        if nd == 0:
            continue
        rc = tp[t] / npig
        pr = tp[t] / (tp[t] + fp[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # COCO's monotone envelope
        recall[t] = rc[-1]
        idx = np.searchsorted(rc, rec_thrs, side="left")
        valid = idx < nd
        precision[t, valid] = pr[idx[valid]]
    return precision, recall


def weighted_summary(matches: _Matches, weights: np.ndarray) -> list[float]:
    """COCO's AP, AP50, AP75, APs, APm, APl, AR100 with image i counted `weights[i]` times (-1 when
    undefined)."""
    t50 = int(np.argmin(np.abs(matches.iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(matches.iou_thrs - 0.75)))
    per_area: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
    for a in range(matches.n_areas):
        precisions, recalls = [], []
        for k in range(matches.n_cats):
            out = _precision_recall(matches.cells[(k, a)], weights, matches.iou_thrs, matches.rec_thrs)
            if out is not None:
                precisions.append(out[0])
                recalls.append(out[1])
        per_area.append((precisions, recalls))

    def mean(arrays: list[np.ndarray], t: int | None = None) -> float:
        if not arrays:
            return -1.0
        stacked = np.stack(arrays)
        return float(np.mean(stacked if t is None else stacked[:, t]))

    all_p, all_r = per_area[0]
    return [mean(all_p), mean(all_p, t50), mean(all_p, t75), mean(per_area[1][0]), mean(per_area[2][0]),
            mean(per_area[3][0]), mean(all_r)]  # fmt: skip


def coco_metrics(
    dataset: DetectionDataset,
    indices: Sequence[int],
    detections: Sequence[ImageDetections],
    *,
    iou_type: str = "bbox",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float | None]:
    """COCO metrics of `detections` on images `indices` of `dataset`, with bootstrap intervals of AP and
    AP50 (`<prefix>AP_ci_low` ...) and `n_test` (images). `resamples=0` skips the intervals."""
    if len(indices) != len(detections):
        raise InvalidArgument(f"coco metrics: {len(indices)} images but {len(detections)} detection lists")
    if iou_type not in ("bbox", "segm"):
        raise InvalidArgument(f"coco metrics: iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    prefix = "mask_" if iou_type == "segm" else ""
    gt = ground_truth(dataset, indices, iou_type)
    ev = run_cocoeval(gt, detection_results(detections, iou_type), iou_type)
    out: dict[str, float | None] = _stats_dict(
        ev.stats if ev is not None else _no_detection_stats(gt), prefix
    )
    out["n_test"] = len(indices)
    if resamples <= 0 or out[f"{prefix}AP"] is None:
        return out
    n = len(indices)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    if ev is None:
        values = np.zeros((resamples, 2))
    else:
        matches = _Matches(ev)
        values = np.array([weighted_summary(matches, np.bincount(d, minlength=n))[:2] for d in draws])
    alpha = (1 - confidence) / 2
    for col, name in enumerate(("AP", "AP50")):
        vals = values[:, col]
        vals = vals[vals >= 0]  # a resample without ground truth has no AP
        if vals.size:
            low, high = np.quantile(vals, [alpha, 1 - alpha])
            out.update(ci_fields(f"{prefix}{name}", (float(low), float(high))))
    return out
