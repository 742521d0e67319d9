"""The detection, instance_segmentation and ood_detection protocols through their `evaluate` entry and
a real LocalContext, on the bundled tree crowns (a few real aerial tiles) and labelme's COCO sample.

One short epoch at 128 px on the registered EfficientNet-Lite0: the figures are near zero and are not
the point; these tests check what each protocol reports (COCO AP, AP50, ... with bootstrap intervals,
in-domain / shifted AP and their gap, mask AP), that a finished run is read back from its checkpoint,
and that a wrong dataset or config is refused by name.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from detection_synthetic import context

from bobench.config import Settings
from bobench.data import load_dataset
from bobench.data.detection_bundled import LABELME_DIR, deepforest_wheel
from bobench.errors import InvalidArgument, Unavailable
from bobench.protocols import get_protocol

BACKBONE = "efficientnet_lite0"  # detection_synthetic.context's default
FAST = {"epochs": 1, "batch_size": 2, "min_size": 128, "max_size": 128, "fpn_channels": 32,
        "warmup_steps": 2, "detections_per_image": 50, "resamples": 50}  # fmt: skip
BOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


@pytest.fixture(scope="module")
def trees():
    """tree_crowns with smaller train/val splits (8 + 3 tiles; test: all its tiles) for speed."""
    try:
        deepforest_wheel(Path(Settings().cache_dir))
    except Unavailable as exc:
        pytest.skip(f"deepforest wheel not available offline: {exc}")
    ds = load_dataset("tree_crowns")
    splits = {"train": ds.split("train")[:8], "val": ds.split("val")[:3], "test": ds.split("test")}
    return dataclasses.replace(ds, splits=splits)


@pytest.fixture
def labelme():
    if not Path(LABELME_DIR, "annotations.json").exists():
        pytest.skip("Debian labelme-examples is not installed")
    return load_dataset("labelme_coco")


def _assert_scored(metrics: dict, prefix: str = "", n_test: int | None = None) -> None:
    for name in BOX_METRICS:
        value = metrics[f"{prefix}{name}"]
        assert value is None or 0.0 <= value <= 1.0, (name, value)
    for name in ("AP", "AP50"):
        low, high = metrics[f"{prefix}{name}_ci_low"], metrics[f"{prefix}{name}_ci_high"]
        assert 0.0 <= low <= metrics[f"{prefix}{name}"] <= high <= 1.0, (name, low, high)
    if n_test is not None:
        assert metrics[f"{prefix}n_test"] == n_test


def test_detection_reports_coco_box_metrics_with_intervals_and_reuses_its_checkpoint(tmp_path, trees):
    protocol = get_protocol("detection")
    ctx = context(tmp_path, trees)
    first = protocol.evaluate(ctx, FAST, 0)
    _assert_scored(first, n_test=len(trees.split("test")))
    assert first["regime"] == "finetune" and first["best_epoch"] == 1 and first["device"] == "cpu"
    assert 0.0 <= first["val_AP"] <= 1.0
    assert first["checkpoint_dir"].startswith(str(tmp_path / "detection"))
    assert set(protocol.higher_is_better) >= set(BOX_METRICS) and protocol.primary_metric == "AP"

    again = protocol.evaluate(ctx, FAST, 0)  # the finished run is read back, not trained again
    assert again == first


def test_ood_detection_reports_in_domain_shifted_ap_and_the_gap(tmp_path, trees):
    m = get_protocol("ood_detection").evaluate(context(tmp_path, trees), FAST, 0)
    sites = np.asarray(trees.sites)
    yell_test = [i for i in trees.split("test") if sites[i] == "YELL"]
    _assert_scored(m, n_test=len(yell_test))  # in-domain: YELL test tiles only
    _assert_scored(m, prefix="shift_", n_test=int((sites != "YELL").sum()))  # every OSBS and SOAP tile
    assert math.isclose(m["gap"], m["AP"] - m["shift_AP"])
    protocol = get_protocol("ood_detection")
    assert protocol.primary_metric == "shift_AP" and protocol.higher_is_better["gap"] is False


def test_ood_detection_refuses_a_shift_it_cannot_form(tmp_path, trees, labelme):
    protocol = get_protocol("ood_detection")
    with pytest.raises(InvalidArgument, match=r"source_sites \['NIWO'\] not in 'tree_crowns'"):
        protocol.evaluate(context(tmp_path, trees), {**FAST, "source_sites": ["NIWO"]}, 0)
    with pytest.raises(InvalidArgument, match="has no sites; give a target dataset"):
        protocol.evaluate(context(tmp_path, labelme), FAST, 0)
    with pytest.raises(InvalidArgument, match="target 'labelme_coco' has other classes than 'tree_crowns'"):
        protocol.evaluate(context(tmp_path, trees), {**FAST, "target": "labelme_coco"}, 0)


def test_instance_segmentation_reports_mask_ap_on_labelme(tmp_path, labelme):
    protocol = get_protocol("instance_segmentation")
    m = protocol.evaluate(context(tmp_path, labelme), {**FAST, "min_size": 160, "max_size": 224}, 0)
    _assert_scored(m, n_test=len(labelme.split("test")))
    _assert_scored(m, prefix="mask_")
    assert "val_mask_AP" in m and protocol.primary_metric == "mask_AP"


def test_instance_segmentation_needs_masks(tmp_path, trees):
    with pytest.raises(InvalidArgument, match="'tree_crowns' has no instance masks"):
        get_protocol("instance_segmentation").evaluate(context(tmp_path, trees), FAST, 0)


@pytest.mark.parametrize("name", ["detection", "instance_segmentation", "ood_detection"])
def test_a_classification_dataset_is_refused_by_name(tmp_path, name):
    with pytest.raises(InvalidArgument, match=f"protocol '{name}' needs a detection dataset.*'toy'"):
        get_protocol(name).evaluate(context(tmp_path, load_dataset("toy")), FAST, 0)


def test_a_bad_config_fails_planning_before_the_dataset_loads():
    from bobench.battle.single_run import plan_single_run

    def loader(ref):
        raise AssertionError("the dataset must not be loaded for a bad config")

    for name, config in [("detection", {"lr": 0.0}), ("ood_detection", {"source_sites": []}),
                         ("instance_segmentation", {"head": "retinanet"})]:  # fmt: skip
        with pytest.raises(InvalidArgument, match=name):
            plan_single_run(BACKBONE, "tree_crowns", name, config, 0, dataset_loader=loader)


def test_a_cuda_request_without_cuda_trains_on_the_cpu_says_so_and_records_it(caplog):
    import types

    import torch

    from bobench.detection.run import _device

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the fallback is not taken")
    ctx = types.SimpleNamespace(settings=types.SimpleNamespace(device="cuda"))
    with caplog.at_level("WARNING", logger="bobench.detection.run"):
        assert _device(ctx) == "cpu"
    assert "CUDA is not available" in caplog.text
    assert _device(types.SimpleNamespace(settings=types.SimpleNamespace(device="cpu"))) == "cpu"


@pytest.mark.parametrize("name", ["detection", "ood_detection"])
def test_a_run_jobs_checkpoint_dir_is_the_one_the_protocol_trains_in(tmp_path, trees, monkeypatch, name):
    """`job_checkpoints` computes the directory before the run through the protocol's own
    `run_identity`: if the two drift apart, a retried Job pod would not resume its training."""
    import bobench.detection.train as train_module
    from bobench.protocols import job_checkpoints

    class Stop(Exception):
        pass

    trained_in = []

    def train_detector(detector, ds, out, *args, **kwargs):
        trained_in.append(out)
        raise Stop

    monkeypatch.setattr(train_module, "train_detector", train_detector)
    protocol, ctx = get_protocol(name), context(tmp_path, trees)
    with pytest.raises(Stop):
        protocol.evaluate(ctx, FAST, 0)
    before_the_run = getattr(job_checkpoints, f"{name}_checkpoint_dir")
    assert trained_in == [before_the_run(tmp_path, ctx.spec, trees, protocol.resolve_config(FAST), 0)]
