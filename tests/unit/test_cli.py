"""The `bob` command as a user types it: exit codes, tables, JSON, error messages."""

from __future__ import annotations

import json

import pytest

from bobench.cli import main as bob


def test_backbones_list_marks_available_weights(capsys):
    assert bob(["backbones", "list"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0" in out and "dino" in out and "backbones," in out
    rows = {r["name"]: r for r in _json(capsys, ["backbones", "list", "--json"])}
    assert rows["efficientnet_lite0"]["available"] is True
    assert rows["resnet18-random"]["available"] is True
    assert any(not r["available"] for r in rows.values())  # hub-only catalog entries, offline


def test_unknown_backbone_exits_2_with_did_you_mean(capsys):
    assert bob(["backbones", "show", "efficientnet_lite9"]) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'efficientnet_lite9'" in err and "did you mean" in err


def test_datasets_list_shows_bundled_sets(capsys):
    assert bob(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("lfw", "mnist", "uci_digits", "photo_crops"):
        assert name in out


def test_export_writes_a_verified_model_and_repository_entry(tmp_path, capsys):
    from bobench.export.triton_repo import read_model_config

    assert (
        bob(["export", "toy", "--out", str(tmp_path / "repo"), "--cache-dir", str(tmp_path / "c"), "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["max_abs_err"] < 1e-4
    config = read_model_config(tmp_path / "repo" / "toy" / "config.pbtxt")
    assert config.input[0].name == "bobench_images" and config.output[0].name == "bobench_features"


def test_export_tensorrt_without_gpu_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    rc = bob(["export", "toy", "--out", str(tmp_path / "repo"), "--tensorrt", "fp16"])
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert rc == 2 and "TensorRT unavailable" in capsys.readouterr().err
        assert not (tmp_path / "repo").exists()


def test_analyze_json_has_the_documented_shape(tmp_path, capsys, monkeypatch, cache_dir):
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(cache_dir))
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: a\nbackbones: [toy, resnet18-random]\ndatasets: [toy]\nprotocols: [knn]\nreport: false\n"
    )
    assert bob(["battle", "run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    capsys.readouterr()
    result = _json(capsys, ["analyze", str(tmp_path / "o"), "--json"])
    assert [e["rank"] for e in result["overall"]] == [1, 2]
    assert {e["backbone"] for e in result["overall"]} == {"toy", "resnet18-random"}
    assert set(result["per_task"]) == {"classification"}
    assert bob(["results", "export", str(tmp_path / "o"), "--csv"]) == 0
    assert (tmp_path / "o" / "results.csv").read_text().count("\n") == 3


def test_analyze_without_results_is_a_clear_error(tmp_path, capsys):
    assert bob(["analyze", str(tmp_path)]) == 2
    assert "no results.jsonl" in capsys.readouterr().err


def _json(capsys, argv):
    capsys.readouterr()
    assert bob(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_protocols_list_names_every_protocol_and_its_primary_metric(capsys):
    rows = {r["name"]: r for r in _json(capsys, ["protocols", "list", "--json"])}
    assert {
        "linear_probe",
        "knn",
        "fewshot",
        "retrieval",
        "ood",
        "efficiency",
        "finetune",
        "serving_latency",
    } <= set(rows)
    assert rows["retrieval"]["primary_metric"] == "mAP" and rows["knn"]["defaults"]["temperature"] == 0.07
