"""The CLI on a results.jsonl with a bad line (issue 11): `bob analyze`, `bob report` and `bob battle
run` name the file and line and exit with the user-error code instead of a JSON traceback; a torn
last line (a crash mid-write) is skipped with a warning, and a rerun into the folder continues."""

from __future__ import annotations

import logging

import pytest

from bobench.battle.plan import plan_battle
from bobench.battle.spec import parse_spec
from bobench.cli import main as bob
from bobench.results import read_records

SPEC = {
    "name": "s",
    "backbones": ["toy"],
    "datasets": ["toy"],
    "protocols": [{"name": "knn", "config": {"ks": [1]}}],
}
SPEC_YAML = "name: s\nbackbones: [toy]\ndatasets: [toy]\nprotocols: [{name: knn, config: {ks: [1]}}]\n"
USER_ERROR = 2


def _results(tmp_path, tail: str) -> tuple:
    """A results dir with one finished record, then `tail` appended."""
    (plan,) = plan_battle(parse_spec(SPEC))
    rec = plan.new_record()
    rec.status, rec.metrics = "finished", {plan.primary_metric: 0.5}
    path = tmp_path / "results.jsonl"
    path.write_text(rec.to_json() + "\n" + tail)
    return tmp_path, path


@pytest.mark.parametrize("command", [["analyze"], ["report"]])
def test_a_malformed_line_is_a_user_error_naming_file_and_line(tmp_path, capsys, command):
    where, path = _results(tmp_path, '{"run_key": \n{"also": "bad"}\n')
    assert bob([*command, str(where)]) == USER_ERROR
    err = capsys.readouterr().err
    assert f"bob: error: {path}:2: not a run record" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["analyze"], ["report"]])
def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog, command):
    where, path = _results(tmp_path, '{"run_key": "cut sh')
    with caplog.at_level(logging.WARNING, logger="bobench.results.jsonl"):
        assert bob([*command, str(where)]) == 0
    assert f"{path}:2" in caplog.text and "skipped" in caplog.text


def test_battle_run_refuses_a_malformed_line_without_a_traceback(tmp_path, capsys, monkeypatch, cache_dir):
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(cache_dir))
    (tmp_path / "s.yaml").write_text(SPEC_YAML)
    (tmp_path / "out").mkdir()
    out, path = _results(tmp_path / "out", "")
    path.write_text("not json\n" + path.read_text())
    args = ["battle", "run", str(tmp_path / "s.yaml"), "--out", str(out), "--no-progress", "--no-report"]
    assert bob(args) == USER_ERROR
    err = capsys.readouterr().err
    assert f"{path}:1: not a run record" in err and "Traceback" not in err


def test_battle_run_after_a_crash_mid_write_continues_in_the_same_folder(
    tmp_path, caplog, monkeypatch, cache_dir
):
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(cache_dir))
    (tmp_path / "s.yaml").write_text(SPEC_YAML)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"run_key": "torn by a cra')
    args = ["battle", "run", str(tmp_path / "s.yaml"), "--out", str(out), "--no-progress", "--no-report"]
    with caplog.at_level(logging.WARNING, logger="bobench.results.jsonl"):
        assert bob(args) == 0
        assert "skipped" in caplog.text and "cut off" in caplog.text
        (rec,) = read_records(out)
        assert rec.finished
        caplog.clear()
        assert bob(args) == 0  # the repaired file reads cleanly: the finished run is reused
        assert not caplog.records


@pytest.mark.parametrize("command", [["analyze"], ["report"]])
def test_a_folder_without_results_is_a_user_error(tmp_path, capsys, command):
    assert bob([*command, str(tmp_path)]) == USER_ERROR
    assert f"{tmp_path}: no results.jsonl here" in capsys.readouterr().err
