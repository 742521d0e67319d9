"""External (published) results: CSV parsing, its errors, and merging into the ranking."""

from __future__ import annotations

import itertools

import pytest

from bobench.analysis import analyze, load_external_csv, recommend
from bobench.errors import InvalidArgument, NotFound
from bobench.results import RunRecord

HEADER = "backbone,task,dataset,protocol,metric,value,higher_is_better"
_keys = itertools.count()


def measured(backbone: str, value: float, dataset: str = "cifar100") -> RunRecord:
    return RunRecord(
        run_key=f"e{next(_keys)}",
        backbone=backbone,
        dataset=dataset,
        protocol="linear_probe",
        protocol_version="1",
        task="classification",
        config={},
        seed=0,
        status="finished",
        metrics={"top1": value},
        higher_is_better={"top1": True},
        primary_metric="top1",
        backbone_info={"family": "cnn", "pretraining_method": "supervised", "num_params": 5_000_000},
    )


def write_csv(tmp_path, text: str):
    path = tmp_path / "published.csv"
    path.write_text(text)
    return path


def test_load_external_csv_parses_rows_and_optional_columns(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER + ",family,num_params\n"
        "convnext_b,classification,cifar100,linear_probe,top1,0.91,true,cnn,88600000\n"
        "\n"
        "convnext_b,ood,imagenet-r,ood,error,0.35,False,,\n",
    )
    rows = load_external_csv(path)
    assert [(r.backbone, r.task, r.value, r.higher_is_better) for r in rows] == [
        ("convnext_b", "classification", 0.91, True),
        ("convnext_b", "ood", 0.35, False),
    ]
    assert rows[0].info == {"family": "cnn", "num_params": 88_600_000}
    assert rows[1].source.endswith("row 4")  # the blank line still counts as a line


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty file"),
        (
            "backbone,task,dataset,protocol,metric,value\n",
            r"row 1 \(header\): missing column\(s\) \['higher_is_better'\]",
        ),
        (HEADER + ",colour\n", r"row 1 \(header\): unknown column\(s\) \['colour'\]"),
        (HEADER + ",value\n", "duplicated column"),
        (HEADER + "\nx,classification,d,p,top1,high,true\n", r"row 2: field 'value' is not a number"),
        (HEADER + "\nx,classification,d,p,top1,nan,true\n", r"row 2: field 'value' must be finite"),
        (HEADER + "\nx,classification,d,p,top1,0.5,maybe\n", r"row 2: field 'higher_is_better'"),
        (
            HEADER + "\nx,classification,d,p,top1,0.5,true\n,classification,d,p,top1,0.5,true\n",
            r"row 3: field 'backbone' is empty",
        ),
        (HEADER + "\nx,classification,d,p,top1,0.5\n", r"row 2: has 6 fields, the header has 7"),
        (HEADER + ",num_params\nx,classification,d,p,top1,0.5,true,-3\n", r"row 2: field 'num_params'"),
    ],
)
def test_bad_external_csv_names_row_and_field(tmp_path, text, match):
    path = write_csv(tmp_path, text)
    with pytest.raises(InvalidArgument, match=match) as info:
        load_external_csv(path)
    assert str(path) in str(info.value)


def test_missing_external_file_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        load_external_csv(tmp_path / "nope.csv")


def test_external_scores_are_ranked_against_measured_ones(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER + ",num_params\n"
        "published_big,classification,cifar100,linear_probe,top1,0.95,true,88000000\n"
        "published_big,classification,flowers,linear_probe,top1,0.99,true,88000000\n"
        "published_big,efficiency,synthetic,efficiency,latency_ms_p50_b1,42.0,false,88000000\n"
        "published_small,classification,cifar100,linear_probe,top1,0.50,true,\n"
        "published_small,classification,cifar100,linear_probe,top1,0.60,true,\n",
    )
    records = [measured("mine", 0.80), measured("mine", 0.90, "flowers"), measured("other", 0.70, "flowers")]
    an = analyze(records, external=load_external_csv(path))
    assert [e["backbone"] for e in an.overall] == ["published_big", "mine", "published_small", "other"]
    flags = {e["backbone"]: e["external"] for e in an.overall}
    assert flags == {"published_big": True, "mine": False, "published_small": True, "other": False}
    cifar = next(s for s in an.settings if s.key.dataset == "cifar100")
    assert cifar.values["published_small"].mean == pytest.approx(0.55)  # repeated rows are seeds
    assert cifar.values["published_small"].n_seeds == 2
    assert an.tasks == ["classification"]  # the efficiency row is a cost, not a task
    assert an.costs["published_big"].latency_ms == 42.0
    assert an.costs["published_big"].params == 88e6
    assert [e["backbone"] for e in recommend(an, max_params=10e6)] == ["mine", "other"]


def test_external_backbone_also_measured_in_the_same_setting_is_rejected(tmp_path):
    path = write_csv(tmp_path, HEADER + "\nmine,classification,cifar100,linear_probe,top1,0.95,true\n")
    with pytest.raises(InvalidArgument, match=r"row 2: backbone 'mine' is also measured"):
        analyze([measured("mine", 0.8)], external=load_external_csv(path))


def test_external_row_with_opposite_direction_is_rejected(tmp_path):
    path = write_csv(tmp_path, HEADER + "\npub,classification,cifar100,linear_probe,top1,0.95,false\n")
    with pytest.raises(InvalidArgument, match=r"row 2: setting classification/cifar100/linear_probe:top1"):
        analyze([measured("mine", 0.8)], external=load_external_csv(path))
