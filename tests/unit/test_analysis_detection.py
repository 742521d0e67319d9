"""Detection in the analysis and the report: the rankings' detection task (both task maps), AP per regime
per backbone with intervals, the fine-tuned-minus-frozen gap per family, OOD detection, the plot.

Records are synthetic (hand-made RunRecords with the detection protocols' metric names, values chosen
so every figure can be computed by hand), except the last test, which renders a report from the
record of a real, tiny detection run on the bundled tree crowns.
"""

from __future__ import annotations

import itertools
import json

import pytest

from bobench.analysis import analyze
from bobench.analysis.detection import summarize_detection
from bobench.analysis.report import write_report
from bobench.results import RunRecord

_keys = itertools.count()
FAMILY = {"vit_a": "vit", "vit_b": "vit", "cnn_a": "cnn", "cnn_b": "cnn"}
CONFIG = {"epochs": 12, "head": "faster_rcnn"}


def det_record(
    backbone, regime, ap, *, protocol="detection", seed=0, dataset="trees", config=None, **metrics
):
    """A synthetic finished detection run: `AP` (or `mask_AP`) with a CI of +-0.05 over 10 images."""
    primary = "mask_AP" if protocol == "instance_segmentation" else "AP"
    values = {primary: ap, f"{primary}_ci_low": ap - 0.05, f"{primary}_ci_high": ap + 0.05, "n_test": 10}
    values.update(regime=regime, **metrics)
    task = "ood" if protocol == "ood_detection" else "detection"
    return RunRecord(
        run_key=f"d{next(_keys)}", backbone=backbone, dataset=dataset, protocol=protocol,
        protocol_version="1", task=task, config={**(config or CONFIG), "regime": regime}, seed=seed,
        status="finished", metrics=values, higher_is_better={primary: True, "shift_AP": True, "gap": False},
        primary_metric="shift_AP" if protocol == "ood_detection" else primary,
        backbone_info={"family": FAMILY.get(backbone, "cnn"), "pretraining_method": "supervised"},
        dataset_fingerprint="f" * 16, environment={"device": "cpu"},
    )  # fmt: skip


def classification(backbone, top1):
    return RunRecord(
        run_key=f"c{next(_keys)}", backbone=backbone, dataset="photos", protocol="linear_probe",
        protocol_version="1", task="classification", config={}, seed=0, status="finished",
        metrics={"top1": top1}, higher_is_better={"top1": True}, primary_metric="top1",
        backbone_info={"family": FAMILY[backbone]},
    )  # fmt: skip


def regime_table() -> list[RunRecord]:
    """ViTs gain 0.20 and 0.30 from fine-tuning, CNNs 0.05 and 0.15 (vit_a has two seeds: 0.50, 0.60)."""
    r = det_record
    return [
        r("vit_a", "finetune", 0.50, seed=0), r("vit_a", "finetune", 0.60, seed=1), r("vit_a", "frozen", 0.35),
        r("vit_b", "finetune", 0.40), r("vit_b", "frozen", 0.10), r("vit_b", "random", 0.02),
        r("cnn_a", "finetune", 0.45), r("cnn_a", "frozen", 0.40),
        r("cnn_b", "finetune", 0.30), r("cnn_b", "frozen", 0.15),
    ]  # fmt: skip


def test_ap_per_regime_is_the_seed_mean_with_the_mean_interval():
    summary = summarize_detection(regime_table())
    rows = {(r.backbone, r.regime): r for r in summary.regimes}
    assert len(rows) == 9 and rows[("vit_a", "finetune")].n_seeds == 2
    assert rows[("vit_a", "finetune")].mean == pytest.approx(0.55)
    assert rows[("vit_a", "finetune")].ci == pytest.approx((0.50, 0.60))
    assert rows[("vit_b", "random")].mean == pytest.approx(0.02) and rows[("vit_b", "random")].n_test == 10
    assert [r.regime for r in summary.regimes if r.backbone == "vit_b"] == ["finetune", "frozen", "random"]


def test_the_finetuned_minus_frozen_gap_per_backbone_and_per_family():
    summary = summarize_detection(regime_table())
    gaps = {g.backbone: g.gap for g in summary.gaps}
    assert gaps == pytest.approx({"vit_a": 0.20, "vit_b": 0.30, "cnn_a": 0.05, "cnn_b": 0.15})
    families = {f.family: f for f in summary.families}
    assert families["vit"].mean_gap == pytest.approx(0.25) and families["cnn"].mean_gap == pytest.approx(0.10)
    assert set(families["vit"].backbones) == {"vit_a", "vit_b"}
    assert [f.family for f in summary.families] == ["vit", "cnn"]  # largest gain first


def test_a_backbone_without_a_frozen_run_has_no_gap_and_other_configs_are_not_compared():
    other = {"epochs": 24, "head": "faster_rcnn"}  # another schedule: its own variant, never mixed in
    records = [det_record("cnn_a", "finetune", 0.45), det_record("cnn_a", "frozen", 0.30, config=other)]
    summary = summarize_detection(records)
    assert summary.gaps == [] and summary.families == []
    assert len(summary.groups()) == 2


def test_instance_segmentation_reports_mask_ap_and_failed_runs_are_left_out():
    seg = det_record("vit_a", "finetune", 0.33, protocol="instance_segmentation")
    failed = det_record("vit_b", "finetune", 0.9)
    failed.status = "failed"
    (row,) = summarize_detection([seg, failed]).regimes
    assert (row.protocol, row.metric, row.mean) == ("instance_segmentation", "mask_AP", pytest.approx(0.33))


def test_ood_detection_shows_in_domain_and_shifted_ap_and_the_gap():
    records = [
        det_record("cnn_a", "finetune", 0.50, protocol="ood_detection", shift_AP=0.20, gap=0.30,
                   shift_AP_ci_low=0.15, shift_AP_ci_high=0.25),
        det_record("cnn_a", "finetune", 0.40, protocol="ood_detection", seed=1, shift_AP=0.30, gap=0.10,
                   shift_AP_ci_low=0.25, shift_AP_ci_high=0.35),
    ]  # fmt: skip
    summary = summarize_detection(records)
    (row,) = summary.ood
    assert (row.ap, row.shift_ap, row.gap, row.n_seeds) == pytest.approx((0.45, 0.25, 0.20, 2))
    assert row.shift_ci == pytest.approx((0.20, 0.30)) and summary.regimes == []


@pytest.mark.parametrize("task_map", ["records", "bob"])
def test_detection_ranks_as_its_own_task_under_both_task_maps(task_map):
    records = regime_table() + [
        classification(b, t) for b, t in zip(FAMILY, (0.9, 0.8, 0.7, 0.6), strict=True)
    ]
    ood = det_record("cnn_a", "finetune", 0.5, protocol="ood_detection", shift_AP=0.2, gap=0.3)
    ood2 = det_record("vit_a", "finetune", 0.5, protocol="ood_detection", shift_AP=0.4, gap=0.1)
    analysis = analyze(records + [ood, ood2], task_map=task_map)
    assert {"classification", "detection", "ood"} <= set(analysis.tasks)
    detection_settings = [s for s in analysis.settings if s.key.task == "detection"]
    assert {s.key.protocol for s in detection_settings} == {"detection"}
    assert len(detection_settings) == 3  # one setting per regime (they differ in config)
    best = analysis.per_task["detection"][0]["backbone"]
    assert best == "vit_a"  # highest AP in the fine-tuned and frozen settings
    assert analysis.per_task["ood"][0]["backbone"] == "vit_a"  # shift_AP 0.4 > 0.2
    assert analysis.to_json()["detection"]["families"][0]["family"] == "vit"


def test_the_report_shows_the_detection_section_and_its_plot(tmp_path):
    records = regime_table() + [
        det_record("cnn_a", "finetune", 0.5, protocol="ood_detection", shift_AP=0.2, gap=0.3)
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(r.to_json() + "\n" for r in records))
    written = write_report(tmp_path, tmp_path / "report")
    assert "plots/detection_regimes.png" in written
    md = written["report.md"].read_text()
    assert "## Detection and segmentation" in md and "Fine-tuned minus frozen, by architecture family" in md
    assert "0.550 [0.500, 0.600]" in md  # vit_a fine-tuned: seed mean and interval
    assert "+0.250" in md and "+0.100" in md  # the family gaps
    assert "### OOD detection" in md and "| 0.500 [0.450, 0.550] | 0.200 | +0.300 |" in md
    html = written["report.html"].read_text()
    assert "Detection and segmentation" in html and "data:image/png;base64," in html
    assert json.loads(written["analysis.json"].read_text())["detection"]["gaps"]


def test_no_detection_runs_means_no_detection_section(tmp_path):
    (tmp_path / "results.jsonl").write_text(classification("vit_a", 0.9).to_json() + "\n")
    written = write_report(tmp_path, tmp_path / "report")
    assert "Detection and segmentation" not in written["report.md"].read_text()
    assert "plots/detection_regimes.png" not in written


@pytest.mark.slow  # two real 1-epoch detector trainings
def test_a_report_renders_from_a_real_tiny_detection_run(tmp_path):
    """Not synthetic: one real detection run (random-init ResNet-18, 1 epoch on small tree-crown tiles,
    fine-tuned and frozen) through the in-process executor, then the report from its records."""
    import shutil
    from pathlib import Path

    from bobench.battle.runner import run_battle
    from bobench.battle.spec import parse_spec
    from bobench.config import Settings
    from bobench.data.detection_bundled import deepforest_wheel
    from bobench.errors import Unavailable

    try:
        wheel = deepforest_wheel(Path(Settings().cache_dir))
    except Unavailable as exc:
        pytest.skip(f"deepforest wheel (tree crowns) not available offline: {exc}")
    cache = tmp_path / "cache"
    (cache / "pypi").mkdir(parents=True)
    shutil.copy(wheel, cache / "pypi" / wheel.name)
    tiny = {"epochs": 1, "batch_size": 8, "min_size": 64, "max_size": 64, "fpn_channels": 16,
            "warmup_steps": 2, "resamples": 20}  # fmt: skip
    spec = parse_spec(
        {
            "name": "tiny-detection-report",
            "backbones": ["resnet18-random"],
            "datasets": ["tree_crowns"],
            "protocols": [
                {"name": "detection", "config": {**tiny, "regime": "finetune"}},
                {"name": "detection", "config": {**tiny, "regime": "frozen"}},
            ],
            "seeds": [0],
        }
    )
    results = tmp_path / "results"
    records = run_battle(spec, results, Settings(cache_dir=str(cache), threads=1), progress=False).records
    assert [r.status for r in records] == ["finished", "finished"], [r.error for r in records]
    written = write_report(results, tmp_path / "report")
    md = written["report.md"].read_text()
    assert "## Detection and segmentation" in md and "resnet18-random" in md
    (gap,) = summarize_detection(records).gaps
    assert gap.family == "cnn" and -1.0 <= gap.gap <= 1.0
