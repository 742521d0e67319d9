"""Setting identity: protocol version, config digest and dataset fingerprint keep different runs apart."""

from __future__ import annotations

import csv
import itertools

import pytest

from bobench.analysis import analyze, export_csv
from bobench.analysis.aggregate import TASK_MAPS, config_digest
from bobench.analysis.external import ExternalScore
from bobench.errors import InvalidArgument
from bobench.results import RunRecord

_keys = itertools.count()


def run(
    backbone, value, *, config=None, version="1", fingerprint="fp-a", protocol="knn", task="classification"
):
    return RunRecord(
        run_key=f"id{next(_keys)}",
        backbone=backbone,
        dataset="pets",
        protocol=protocol,
        protocol_version=version,
        task=task,
        config=config if config is not None else {"ks": [20]},
        seed=0,
        status="finished",
        metrics={"top1": value},
        higher_is_better={"top1": True},
        primary_metric="top1",
        dataset_fingerprint=fingerprint,
        environment={"device": "cpu"},
    )


def test_two_configs_of_one_protocol_are_two_settings_not_two_seeds():
    """The issue's reproduction: kNN ks:[1] and ks:[20] in one results.jsonl were averaged (0.34375)."""
    records = [
        run("a", 0.25, config={"ks": [1]}),
        run("a", 0.4375, config={"ks": [20]}),
        run("b", 0.5, config={"ks": [1]}),
        run("b", 0.625, config={"ks": [20]}),
    ]
    an = analyze(records)
    assert len(an.settings) == 2
    assert sorted(s.values["a"].mean for s in an.settings) == [0.25, 0.4375]
    assert all(v.n_seeds == 1 for s in an.settings for v in s.values.values())
    labels = {s.label() for s in an.settings}
    assert labels == {
        f"classification/pets/knn:top1 [v1 cfg {config_digest({'ks': [1]})} data fp-a]",
        f"classification/pets/knn:top1 [v1 cfg {config_digest({'ks': [20]})} data fp-a]",
    }


def test_protocol_versions_and_edited_datasets_are_kept_apart():
    records = [run("a", 0.1, version="1"), run("a", 0.9, version="2"), run("b", 0.2, fingerprint="fp-b")]
    an = analyze(records)
    assert len(an.settings) == 3
    assert {s.key.protocol_version for s in an.settings} == {"1", "2"}
    assert {s.key.dataset_fingerprint for s in an.settings} == {"fp-a", "fp-b"}
    assert all(s.variant_label for s in an.settings)  # they share a name, so each says what differs


def test_a_lone_setting_keeps_its_plain_label():
    an = analyze([run("a", 0.5), run("b", 0.6)])
    assert [s.label() for s in an.settings] == ["classification/pets/knn:top1"]
    row = an.settings_table()[0]
    assert (row["protocol_version"], row["config_digest"], row["dataset_fingerprint"]) == (
        "1",
        config_digest({"ks": [20]}),
        "fp-a",
    )


def test_config_digest_ignores_key_order_and_sees_values():
    assert config_digest({"a": 1, "b": [2]}) == config_digest({"b": [2], "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})


def test_external_score_joins_the_one_measured_variant_and_not_several():
    ext = ExternalScore("pub", "classification", "pets", "knn", "top1", 0.7, True, "f.csv row 2")
    one = analyze([run("a", 0.5), run("b", 0.6)], external=[ext])
    assert len(one.settings) == 1 and set(one.settings[0].values) == {"a", "b", "pub"}
    two = analyze([run("a", 0.5), run("b", 0.6, config={"ks": [1]})], external=[ext])
    assert len(two.settings) == 3  # ambiguous: the external row stays in its own setting


def test_bob_task_map_counts_finetune_as_classification():
    records = [
        run("a", 0.5, protocol="linear_probe"),
        run("b", 0.6, protocol="linear_probe"),
        run("a", 0.9, protocol="finetune", task="finetune"),
        run("b", 0.7, protocol="finetune", task="finetune"),
    ]
    assert analyze(records).tasks == ["classification", "finetune"]
    bob = analyze(records, task_map="bob")
    assert bob.tasks == ["classification"] and bob.task_map == "bob"
    assert TASK_MAPS["bob"]["finetune"] == "classification"
    with pytest.raises(InvalidArgument, match="unknown task map 'vtab'"):
        analyze(records, task_map="vtab")


def test_csv_export_has_config_and_dataset_fingerprint_columns(tmp_path):
    path = export_csv(
        [run("a", 0.25, config={"ks": [1]}), run("a", 0.4, fingerprint="fp-b")], tmp_path / "r.csv"
    )
    rows = list(csv.DictReader(path.open()))
    assert [r["dataset_fingerprint"] for r in rows] == ["fp-a", "fp-b"]
    assert rows[0]["config"] == '{"ks": [1]}'
    assert rows[0]["config_digest"] == config_digest({"ks": [1]})
    assert rows[1]["config_digest"] == config_digest({"ks": [20]})
