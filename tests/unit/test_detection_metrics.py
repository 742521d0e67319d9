"""COCO metrics: equal to pycocotools, cross-checked by an independent brute-force AP, hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.data.detection import DetectionTarget, detection_dataset
from bobench.detection.metrics import (
    ImageDetections,
    _Matches,
    coco_metrics,
    detection_results,
    ground_truth,
    run_cocoeval,
    weighted_summary,
)

SIZE = 200


def _dataset(gts: list[list[tuple]], classes=("a", "b")):
    """gts[i] = [(x0, y0, x1, y1, label, crowd), ...]"""
    targets = []
    for objs in gts:
        arr = np.array([o[:4] for o in objs], dtype=np.float32).reshape(-1, 4)
        targets.append(
            DetectionTarget(
                boxes=arr,
                labels=np.array([o[4] for o in objs], dtype=np.int64),
                iscrowd=np.array([o[5] for o in objs], dtype=bool),
            )
        )
    n = len(gts)
    return detection_dataset(
        name="fixed", classes=list(classes), targets=targets, sizes=[(SIZE, SIZE)] * n,
        splits={"test": np.arange(n)}, load=lambda i: np.zeros((SIZE, SIZE, 3), np.uint8), fingerprint="x",
    )  # fmt: skip


def _dets(rows: list[tuple]) -> ImageDetections:
    """rows = [(x0, y0, x1, y1, score, label), ...]"""
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return ImageDetections(a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int64))


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _ioa(det, region) -> float:
    w = max(0.0, min(det[2], region[2]) - max(det[0], region[0]))
    h = max(0.0, min(det[3], region[3]) - max(det[1], region[1]))
    return w * h / ((det[2] - det[0]) * (det[3] - det[1]))


def reference_ap(gts, dets, thr: float, label: int) -> float | None:
    """Brute-force VOC/COCO-style AP of one class at one IoU threshold, 101-point interpolation.

    Greedy per image in score order: a detection takes the best-overlapping unmatched non-crowd box with
    IoU >= thr (TP); else, if it covers a crowd region with IoA >= thr, it is ignored; else FP."""
    flagged = []  # (score, is_tp)
    n_pos = 0
    for objs, det in zip(gts, dets, strict=True):
        normal = [o[:4] for o in objs if o[4] == label and not o[5]]
        crowd = [o[:4] for o in objs if o[4] == label and o[5]]
        n_pos += len(normal)
        used = [False] * len(normal)
        rows = sorted(
            [
                (float(s), tuple(b))
                for b, s, c in zip(det.boxes, det.scores, det.labels, strict=True)
                if c == label
            ],
            key=lambda r: -r[0],
        )
        for score, box in rows:
            best, best_iou = -1, thr - 1e-12
            for j, g in enumerate(normal):
                if not used[j] and _iou(box, g) >= best_iou:
                    best, best_iou = j, _iou(box, g)
            if best >= 0:
                used[best] = True
                flagged.append((score, True))
            elif any(_ioa(box, c) >= thr for c in crowd):
                continue
            else:
                flagged.append((score, False))
    if n_pos == 0:
        return None
    flagged.sort(key=lambda r: -r[0])
    tp = np.cumsum([f[1] for f in flagged])
    fp = np.cumsum([not f[1] for f in flagged])
    ap = 0.0
    for r in np.linspace(0, 1, 101):
        prec = [tp[i] / (tp[i] + fp[i]) for i in range(len(flagged)) if tp[i] / n_pos >= r]
        ap += max(prec, default=0.0)
    return ap / 101


def _random_case(rng, n_images=6, with_crowd=True):
    gts, dets = [], []
    for i in range(n_images):
        objs = []
        for _ in range(rng.integers(0 if i == 0 else 1, 5)):  # image 0 may be empty
            x, y = rng.uniform(0, 140, 2)
            w, h = rng.uniform(12, 60, 2)
            objs.append((x, y, min(x + w, SIZE), min(y + h, SIZE), int(rng.integers(0, 2)), False))
        if with_crowd and rng.random() < 0.4:
            objs.append((0.0, 150.0, 80.0, 200.0, int(rng.integers(0, 2)), True))
        gts.append(objs)
        rows = []
        for o in objs:
            if rng.random() < 0.8:
                jitter = rng.normal(0, 4, 4)
                rows.append((*np.clip(np.array(o[:4]) + jitter, 0, SIZE), rng.random(), o[4]))
        for _ in range(rng.integers(0, 3)):  # false positives, some on crowd regions
            x, y = rng.uniform(0, 150, 2)
            rows.append((x, y, x + 30, y + 30, rng.random(), int(rng.integers(0, 2))))
        if with_crowd and rng.random() < 0.5:
            rows.append((10.0, 160.0, 50.0, 190.0, rng.random(), 0))
        dets.append(_dets([r for r in rows if r[2] > r[0] + 1 and r[3] > r[1] + 1]))
    return gts, dets


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ap50_and_ap75_equal_an_independent_brute_force_implementation(seed):
    gts, dets = _random_case(np.random.default_rng(seed))
    metrics = coco_metrics(_dataset(gts), list(range(len(gts))), dets, resamples=0)
    for name, thr in (("AP50", 0.5), ("AP75", 0.75)):
        per_class = [reference_ap(gts, dets, thr, c) for c in (0, 1)]
        expected = np.mean([v for v in per_class if v is not None])
        assert metrics[name] == pytest.approx(expected, abs=1e-9)
    ap = np.mean(
        [
            v
            for t in np.linspace(0.5, 0.95, 10)
            for c in (0, 1)
            if (v := reference_ap(gts, dets, t, c)) is not None
        ]
    )
    assert metrics["AP"] == pytest.approx(ap, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 5])
def test_weighted_reaccumulation_reproduces_cocoeval_and_duplicated_images(seed):
    gts, dets = _random_case(np.random.default_rng(seed))
    ds = _dataset(gts)
    idx = list(range(len(gts)))
    ev = run_cocoeval(ground_truth(ds, idx), detection_results(dets), "bbox")
    ours = weighted_summary(_Matches(ev), np.ones(len(idx), dtype=int))
    np.testing.assert_allclose(ours, [ev.stats[i] for i in (0, 1, 2, 3, 4, 5, 8)], atol=1e-12)
    # weights 2, 0, 1, ...: the same as COCOeval on a set that holds image 0 twice and lacks image 1
    weights = np.array([2, 0] + [1] * (len(idx) - 2))
    resampled = [0, 0] + idx[2:]
    ev2 = run_cocoeval(ground_truth(ds, resampled), detection_results([dets[i] for i in resampled]), "bbox")
    np.testing.assert_allclose(weighted_summary(_Matches(ev), weights)[:3], ev2.stats[:3], atol=1e-12)


def test_hand_computed_cases_crowd_empty_images_and_no_detections():
    one = [(10, 10, 50, 50, 0, False)]
    assert coco_metrics(_dataset([one]), [0], [_dets([(10, 10, 50, 50, 0.9, 0)])], resamples=0)[
        "AP"
    ] == pytest.approx(1.0)
    # a higher-scored false positive in an empty image halves precision at full recall
    m = coco_metrics(
        _dataset([[], one]), [0, 1], [_dets([(100, 100, 140, 140, 0.95, 0)]), _dets([(10, 10, 50, 50, 0.9, 0)])],
        resamples=0,
    )  # fmt: skip
    assert m["AP50"] == pytest.approx(0.5) and m["AR100"] == pytest.approx(1.0)
    # a detection on a crowd region is neither true nor false positive
    crowd = [*one, (100, 100, 190, 190, 0, True)]
    m = coco_metrics(
        _dataset([crowd]),
        [0],
        [_dets([(120, 120, 160, 160, 0.99, 0), (10, 10, 50, 50, 0.5, 0)])],
        resamples=0,
    )
    assert m["AP"] == pytest.approx(1.0)
    none = coco_metrics(_dataset([one, one]), [0, 1], [ImageDetections.empty()] * 2, resamples=20)
    assert none["AP"] == 0.0 and none["APs"] is None and none["APm"] == 0.0 and none["AP_ci_high"] == 0.0
    # one class never annotated: its AP is undefined and left out of the mean, not counted as 0
    assert coco_metrics(_dataset([one]), [0], [_dets([(10, 10, 50, 50, 0.9, 0)])], resamples=0)[
        "AP50"
    ] == pytest.approx(1.0)


def test_bootstrap_interval_brackets_the_point_estimate_and_is_seeded():
    gts, dets = _random_case(np.random.default_rng(7), n_images=12)
    ds = _dataset(gts)
    a = coco_metrics(ds, list(range(12)), dets, resamples=100, seed=3)
    b = coco_metrics(ds, list(range(12)), dets, resamples=100, seed=3)
    assert a == b and a["n_test"] == 12
    assert a["AP_ci_low"] <= a["AP"] <= a["AP_ci_high"] and a["AP_ci_low"] < a["AP_ci_high"]
    assert a["AP50_ci_low"] <= a["AP50"] <= a["AP50_ci_high"]


def test_mask_ap_of_perfect_masks_is_one_and_of_shifted_masks_lower():
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[20:60, 30:90] = 1
    target = DetectionTarget(
        boxes=np.array([[30, 20, 90, 60]], np.float32), labels=np.zeros(1, np.int64), iscrowd=np.zeros(1, bool),
        masks=lambda: mask[None],
    )  # fmt: skip
    ds = detection_dataset(
        name="m", classes=["a"], targets=[target], sizes=[(SIZE, SIZE)], splits={"test": np.arange(1)},
        load=lambda i: np.zeros((SIZE, SIZE, 3), np.uint8), fingerprint="m", has_masks=True,
    )  # fmt: skip
    det = _dets([(30, 20, 90, 60, 0.9, 0)])
    det.masks = mask[None].copy()
    assert coco_metrics(ds, [0], [det], iou_type="segm", resamples=0)["mask_AP"] == pytest.approx(1.0)
    shifted = np.roll(mask, 12, axis=1)[None]
    det.masks = shifted
    worse = coco_metrics(ds, [0], [det], iou_type="segm", resamples=0)
    assert worse["mask_AP50"] == pytest.approx(1.0) and worse["mask_AP"] < 0.9
