"""mCE and relative mCE of OOD settings against a reference backbone (`bobench.analysis.corruption`).

Reference values are computed here with plain arithmetic from ImageNet-C's definitions
(CE_c = E_c / E_c^ref, relative CE_c = (E_c - E_clean) / (E_c^ref - E_clean^ref), mCE and relative mCE
the means over corruptions), independently of `bobench.analysis.corruption_error`.
"""

from __future__ import annotations

import itertools
import json

import pytest

from bobench.analysis import analyze
from bobench.analysis.render import Heading, Para, Table
from bobench.analysis.report import write_report
from bobench.analysis.sections import mce
from bobench.cli import main as bob
from bobench.results import RunRecord

_keys = itertools.count()
# backbone -> (id_err, err_gaussian_noise, err_motion_blur)
ERRORS = {"a": (0.10, 0.40, 0.30), "b": (0.15, 0.50, 0.25), "c": (0.05, 0.20, 0.36)}


def ood_record(backbone, errors, *, reference=None, complete=True, seed=0, status="finished"):
    """A real RunRecord shaped like the ood protocol's (version 2) over two corruptions."""
    id_err, noise, blur = errors
    mean_name = "mca" if complete else "mca_partial"
    metrics = {
        "id_top1": 1 - id_err,
        "id_err": id_err,
        "top1_gaussian_noise": 1 - noise,
        "err_gaussian_noise": noise,
        "top1_motion_blur": 1 - blur,
        "err_motion_blur": blur,
        "top1_motion_blur_ci_low": 0.0,
        "top1_motion_blur_ci_high": 1.0,
        mean_name: 1 - (noise + blur) / 2,
        "ood_top1": 1 - (noise + blur) / 2,
        "corruption_grid_complete": 1.0 if complete else 0.0,
        "n_test": 50,
    }
    return RunRecord(
        run_key=f"ood{next(_keys)}",
        backbone=backbone,
        dataset="digits",
        protocol="ood",
        protocol_version="2",
        task="ood",
        config={"corruptions": ["gaussian_noise", "motion_blur"], "mce_reference": reference},
        seed=seed,
        status=status,
        metrics=metrics if status == "finished" else {},
        higher_is_better={"ood_top1": True, "id_err": False} if status == "finished" else {},
        primary_metric="ood_top1",
        dataset_fingerprint="f" * 16,
    )


def battle(order=("a", "b", "c"), **kw):
    return [ood_record(b, ERRORS[b], **kw) for b in order]


def hand_mce(backbone: str, reference: str) -> tuple[float, float | None]:
    """(mCE, relative mCE) of `backbone` against `reference` by ImageNet-C's definitions."""
    clean, *errs = ERRORS[backbone]
    ref_clean, *ref_errs = ERRORS[reference]
    ce = [e / r for e, r in zip(errs, ref_errs, strict=True)]
    drops = [r - ref_clean for r in ref_errs]
    if any(abs(d) < 1e-12 for d in drops):
        return sum(ce) / len(ce), None
    rel = [(e - clean) / d for e, d in zip(errs, drops, strict=True)]
    return sum(ce) / len(ce), sum(rel) / len(rel)


def rows_by_backbone(analysis):
    (table,) = analysis.ood_mce
    return table, {r.backbone: r for r in table.rows}


def test_mce_default_reference_is_the_first_backbone_in_plan_order():
    table, rows = rows_by_backbone(analyze(battle()))
    assert table.reference == "a"
    assert table.reference_source == "first backbone in plan order"
    assert table.complete
    # hand arithmetic: b = (0.5/0.4 + 0.25/0.3) / 2, relative ((0.5-0.15)/(0.4-0.1) + (0.25-0.15)/(0.3-0.1)) / 2
    assert rows["b"].mce == pytest.approx((1.25 + 0.25 / 0.3) / 2)
    assert rows["b"].relative_mce == pytest.approx((0.35 / 0.3 + 0.1 / 0.2) / 2)
    assert rows["c"].mce == pytest.approx((0.5 + 0.36 / 0.3) / 2)
    assert rows["c"].relative_mce == pytest.approx((0.15 / 0.3 + 0.31 / 0.2) / 2)
    for backbone in "abc":
        assert (rows[backbone].mce, rows[backbone].relative_mce) == pytest.approx(hand_mce(backbone, "a"))
    assert rows["a"].mce == pytest.approx(1.0) and rows["a"].relative_mce == pytest.approx(1.0)
    assert rows["c"].mca == pytest.approx(1 - (0.20 + 0.36) / 2)


def test_plan_order_not_name_order_picks_the_default_reference():
    table, rows = rows_by_backbone(analyze(battle(order=("c", "a", "b"))))
    assert table.reference == "c"
    assert rows["c"].mce == pytest.approx(1.0)
    assert rows["a"].mce == pytest.approx(hand_mce("a", "c")[0])


def test_configured_reference_overrides_plan_order():
    table, rows = rows_by_backbone(analyze(battle(reference="b")))
    assert table.reference == "b"
    assert table.reference_source == "configured (mce_reference)"
    assert rows["b"].mce == pytest.approx(1.0)
    for backbone in "ac":
        assert (rows[backbone].mce, rows[backbone].relative_mce) == pytest.approx(hand_mce(backbone, "b"))


def test_missing_configured_reference_is_skipped_with_a_note():
    (table,) = analyze(battle(reference="alexnet")).ood_mce
    assert table.rows == []
    assert any("alexnet" in n and "no finished record" in n for n in table.notes)


def test_failed_first_backbone_leaves_the_setting_without_mce():
    records = [ood_record("a", ERRORS["a"], status="failed"), *battle(order=("b", "c"))]
    (table,) = analyze(records).ood_mce
    assert table.reference == "a"
    assert table.rows == []
    assert any("'a'" in n for n in table.notes)


def test_reference_missing_on_one_seed_skips_only_that_seed():
    records = battle(seed=0) + [ood_record(b, ERRORS[b], seed=1) for b in ("b", "c")]
    (table,) = analyze(records).ood_mce
    assert {(r.backbone, r.seed) for r in table.rows} == {("a", 0), ("b", 0), ("c", 0)}
    assert any("seed 1" in n for n in table.notes)


def test_partial_grid_is_labelled_partial():
    table, rows = rows_by_backbone(analyze(battle(complete=False)))
    assert not table.complete
    assert rows["b"].mce == pytest.approx(hand_mce("b", "a")[0])
    assert rows["b"].mca == pytest.approx(1 - (0.50 + 0.25) / 2)  # mca_partial
    headings = [b.text for b in mce(analyze(battle(complete=False))) if isinstance(b, Heading)]
    assert any("partial grid" in h for h in headings)


def test_settings_without_corruption_errors_have_no_mce():
    records = battle()
    for rec in records:
        rec.metrics = {k: v for k, v in rec.metrics.items() if k != "corruption_grid_complete"}
    assert analyze(records).ood_mce == []


def test_json_output_carries_mce_per_setting_label():
    analysis = analyze(battle())
    out = json.loads(json.dumps(analysis.to_json(), allow_nan=False))
    (label,) = out["ood_mce"]
    assert label == analysis.settings[0].label()
    entry = out["ood_mce"][label]
    assert entry["reference"] == "a" and entry["grid"] == "complete"
    assert entry["ranked_on"] == "ood_top1"
    by_backbone = {r["backbone"]: r for r in entry["rows"]}
    assert set(by_backbone) == {"a", "b", "c"}
    assert by_backbone["c"]["mCE"] == pytest.approx(hand_mce("c", "a")[0])
    assert by_backbone["c"]["relative_mCE"] == pytest.approx(hand_mce("c", "a")[1])
    assert by_backbone["c"]["reference"] == "a" and by_backbone["c"]["seed"] == 0


def test_report_table_shows_mce_beside_the_ranking_metric():
    blocks = mce(analyze(battle()))
    text = " ".join(b.text for b in blocks if isinstance(b, Para))
    assert "ood_top1" in text and "reference" in text
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert list(table.headers[:5]) == ["backbone", "seeds", "mCA", "mCE", "relative mCE"]
    assert [row[0] for row in table.rows] == ["c", "a (reference)", "b"]  # best (lowest) mCE first
    assert table.rows[1][3] == "1.000"


def write_results(tmp_path, records):
    (tmp_path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    return tmp_path


def test_bob_analyze_json_prints_mce(tmp_path, capsys):
    results = write_results(tmp_path, battle(order=("b", "a", "c")))
    assert bob(["analyze", str(results), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["ood_mce"].values()
    assert entry["reference"] == "b" and entry["reference_source"] == "first backbone in plan order"
    mce_of = {r["backbone"]: r["mCE"] for r in entry["rows"]}
    assert mce_of == pytest.approx({b: hand_mce(b, "b")[0] for b in "abc"})


def test_written_report_has_the_mce_table_and_analysis_json(tmp_path):
    results = write_results(tmp_path, battle(complete=False))
    paths = write_report(results)
    markdown = paths["report.md"].read_text()
    assert "OOD corruption error (mCE)" in markdown and "(partial grid)" in markdown
    saved = json.loads(paths["analysis.json"].read_text())
    (entry,) = saved["ood_mce"].values()
    assert entry["grid"] == "partial grid"


def test_relative_mce_is_missing_when_the_reference_loses_nothing():
    # the reference's motion-blur error equals its clean error: relative CE divides by zero
    records = [ood_record("a", (0.30, 0.40, 0.30)), ood_record("b", ERRORS["b"])]
    table, rows = rows_by_backbone(analyze(records))
    assert rows["b"].mce == pytest.approx((0.50 / 0.40 + 0.25 / 0.30) / 2)
    assert rows["b"].relative_mce is None and rows["a"].relative_mce is None
    (shown,) = [b for b in mce(analyze(records)) if isinstance(b, Table)]
    assert {row[0]: row[4] for row in shown.rows} == {"a (reference)": "-", "b": "-"}
