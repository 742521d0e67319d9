"""Which records a report covers (--all / --latest / --battle) and the report's limits and task map flags."""

from __future__ import annotations

import json

import pytest
import yaml

from bobench.analysis.aggregate import config_digest
from bobench.analysis.report import write_report
from bobench.analysis.selection import Selection, select_battle, select_latest
from bobench.battle.plan import plan_battle
from bobench.battle.spec import parse_spec
from bobench.cli import main as bob
from bobench.errors import NotFound
from bobench.results import RunRecord, read_records

SPEC = {"name": "now", "backbones": ["toy", "resnet18-random"], "datasets": ["toy"], "protocols": ["knn"]}


def finished(plan, value: float) -> RunRecord:
    rec = plan.new_record()
    rec.status = "finished"
    rec.metrics = {plan.primary_metric: value}
    return rec


def battle_dir(tmp_path):
    """results.jsonl with this battle's plan plus an older battle's run under another config."""
    spec = parse_spec(SPEC)
    records = [finished(p, v) for p, v in zip(plan_battle(spec), (0.9, 0.4), strict=True)]
    old = finished(
        plan_battle(parse_spec({**SPEC, "protocols": [{"name": "knn", "config": {"ks": [1]}}]}))[0], 0.1
    )
    old.battle = "b-old"
    (tmp_path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in [old, *records]))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    return tmp_path, records, old


def test_latest_selects_the_plan_of_the_last_battle(tmp_path):
    where, records, old = battle_dir(tmp_path)
    chosen = select_latest(read_records(where), where)
    assert [r.run_key for r in chosen.records] == [r.run_key for r in records]
    assert "battle 'now'" in chosen.scope
    with pytest.raises(NotFound, match="no spec.yaml"):
        select_latest(read_records(where), tmp_path / "nowhere")


def test_battle_id_selects_scheduler_records_and_names_the_known_ids(tmp_path):
    where, _, old = battle_dir(tmp_path)
    assert [r.run_key for r in select_battle(read_records(where), "b-old").records] == [old.run_key]
    with pytest.raises(NotFound, match=r"ids: \['b-old'\]"):
        select_battle(read_records(where), "b-none")


def test_report_covers_the_selection_only(tmp_path):
    where, records, _ = battle_dir(tmp_path)
    write_report(where, selection=Selection(records, "battle 'now'"))
    data = json.loads((where / "report" / "analysis.json").read_text())
    assert len(data["settings"]) == 2  # the older ks:[1] run is history, not part of this report
    assert "Covers: battle 'now'" in (where / "report" / "report.md").read_text()
    assert len((where / "report" / "runs.csv").read_text().splitlines()) == 1 + len(records)


def test_cli_report_latest_task_map_and_limits(tmp_path, capsys):
    where, _, _ = battle_dir(tmp_path)
    assert bob(["report", str(where), "--latest", "--task-map", "bob", "--max-params", "5e6"]) == 0
    text = (where / "report" / "report.md").read_text()
    assert "Task map: 'bob'" in text
    assert "Your limits: max\\_params \\<= 5e+06" in text
    capsys.readouterr()
    assert bob(["analyze", str(where), "--all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["settings"]) == 3  # every record: the two knn configs are separate settings


def test_battle_run_reports_its_own_plan_not_the_directory_history(tmp_path, monkeypatch, cache_dir):
    """The issue's reproduction: two `bob battle run`s with different kNN configs into one --out."""
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(cache_dir))
    spec = tmp_path / "s.yaml"
    out = tmp_path / "o"
    for ks, limit in (("[1]", ""), ("[20]", "recommend: {max_params: 2.0e+6}\n")):
        spec.write_text(
            f"name: a\nbackbones: [toy]\ndatasets: [toy]\nprotocols: [{{name: knn, config: {{ks: {ks}}}}}]\n{limit}"
        )
        assert bob(["battle", "run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert len(read_records(out)) == 2  # history stays in results.jsonl
    latest = next(r for r in read_records(out) if r.config["ks"] == [20])
    data = json.loads((out / "report" / "analysis.json").read_text())
    shown = [(r["n_seeds"], r["config_digest"], r["value"]) for r in data["settings"]]
    assert shown == [(1, config_digest(latest.config), latest.metrics[latest.primary_metric])]
    assert "Your limits: max\\_params \\<= 2e+06" in (out / "report" / "report.md").read_text()


def test_spec_recommend_limits_are_validated_and_the_cli_overrides_them():
    import argparse

    from bobench.cli.battle import report_limits
    from bobench.errors import InvalidArgument

    spec = parse_spec({**SPEC, "recommend": {"max_latency_ms": 10, "max_params": 3e7}})
    assert spec.recommend == {"max_latency_ms": 10.0, "max_params": 3e7}
    assert parse_spec(spec.to_dict()).recommend == spec.recommend
    args = argparse.Namespace(max_latency_ms=5.0, max_params=None)
    assert report_limits(args, spec) == {"max_latency_ms": 5.0, "max_params": 3e7}
    with pytest.raises(InvalidArgument, match=r"recommend.max_params: must be a number >= 0.*1.0e\+9"):
        parse_spec({**SPEC, "recommend": {"max_params": "1.0e9"}})
    with pytest.raises(
        InvalidArgument,
        match=r"recommend: unknown limit 'max_watts' \(did you mean 'max_params'\?\); allowed: ",
    ):
        parse_spec({**SPEC, "recommend": {"max_watts": 1}})
