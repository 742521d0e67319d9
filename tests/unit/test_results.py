"""The results module (bobench.results): the record's schema version, status enum and error_type,
version-1 lines, results.jsonl with malformed and torn lines, and the derived proto and plan forms."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from bobench.battle.plan import RunPlan
from bobench.battle.scheduler import is_transient
from bobench.errors import InvalidArgument, NotFound, Unavailable
from bobench.results import (
    SCHEMA_VERSION,
    MalformedResults,
    RunRecord,
    RunStatus,
    append_record,
    iter_records,
    read_records,
    replace_records,
)
from bobench.results.convert import PROTO_NAMES, RECORD_JSON_ONLY, record_to_result, result_to_record
from bobench.v1 import common_pb2


def _rec(key: str = "k", **kw) -> RunRecord:
    base = dict(
        run_key=key,
        backbone="toy",
        dataset="toy",
        protocol="knn",
        protocol_version="1",
        task="classification",
        config={"ks": [5]},
        seed=0,
    )
    return RunRecord(**{**base, **kw})


V1_LINE = {  # a line written before schema_version and error_type existed
    "run_key": "old",
    "backbone": "toy",
    "dataset": "toy",
    "protocol": "knn",
    "protocol_version": "1",
    "task": "classification",
    "config": {},
    "seed": 0,
    "status": "failed",
    "error": "Unavailable: evaluator 127.0.0.1:1: UNAVAILABLE: connection refused",
}


def test_a_new_record_carries_the_schema_version_and_its_status_as_an_enum():
    rec = RunRecord.from_dict(json.loads(_rec(status="finished").to_json()))
    assert rec.schema_version == SCHEMA_VERSION == 2
    assert rec.status is RunStatus.FINISHED and rec.status == "finished" and rec.finished
    assert json.loads(rec.to_json())["status"] == "finished"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("Unavailable: evaluator down", "Unavailable"),
        ("DeadlineExceeded: run passed the time limit", "DeadlineExceeded"),
        ("InvalidArgument: evaluator h:1: bad dataset", "InvalidArgument"),
        ("internal error: KeyError: 'x'", "internal"),
        ("internal error: INTERNAL: evaluator h:1: boom", "internal"),
        ("cancelled before it started", None),
    ],
)
def test_a_version_1_line_loads_with_error_type_derived_from_its_message(error, kind):
    rec = RunRecord.from_dict({**V1_LINE, "error": error})
    assert rec.schema_version == 1
    assert rec.error_type == kind


def test_a_stored_error_type_wins_over_the_message():
    rec = RunRecord.from_dict({**V1_LINE, "error_type": "InvalidArgument", "schema_version": 2})
    assert rec.error_type == "InvalidArgument" and not is_transient(rec)


def test_retries_are_decided_from_error_type_not_the_message():
    hiccup = _rec()
    hiccup.fail("Unavailable", "the embedder did not answer")  # no "Unavailable:" prefix
    assert is_transient(hiccup)
    wrong = _rec()
    wrong.fail("InvalidArgument", "Unavailable: a message that only looks transient")
    assert not is_transient(wrong)
    assert is_transient(RunRecord.from_dict(V1_LINE))  # an old line: derived from its prefix


def test_fail_with_names_the_kind_of_domain_and_unexpected_errors():
    rec = _rec()
    rec.fail_with(NotFound("no backbone 'x'"))
    assert (rec.status, rec.error_type, rec.error) == (
        RunStatus.FAILED,
        "NotFound",
        "NotFound: no backbone 'x'",
    )
    rec.fail_with(KeyError("x"))
    assert rec.error_type == "internal" and rec.error == "internal error: KeyError: 'x'"
    rec.fail_with(Unavailable("down"), RunStatus.CANCELLED)
    assert rec.status is RunStatus.CANCELLED and rec.error_type == "Unavailable"


def test_an_object_that_is_no_record_is_invalid_argument():
    with pytest.raises(InvalidArgument, match="status"):
        RunRecord.from_dict({**V1_LINE, "status": "exploded"})
    with pytest.raises(InvalidArgument, match="run_key"):
        RunRecord.from_dict({k: v for k, v in V1_LINE.items() if k != "run_key"})
    with pytest.raises(InvalidArgument, match="JSON object"):
        RunRecord.from_dict(["not", "a", "record"])


# ---- results.jsonl ---------------------------------------------------------------------------------


def test_a_results_file_mixing_version_1_and_2_lines_reads(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps(V1_LINE) + "\n" + _rec("new").to_json() + "\n")
    got = {r.run_key: r for r in read_records(tmp_path)}
    assert got["old"].schema_version == 1 and got["old"].error_type == "Unavailable"
    assert got["new"].schema_version == 2


def test_a_malformed_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_rec("a").to_json() + "\n" + '{"run_key": "b", "backb\n' + _rec("c").to_json() + "\n")
    with pytest.raises(MalformedResults, match=f"{path}:2: not a run record") as info:
        read_records(tmp_path)
    assert isinstance(info.value, InvalidArgument)


def test_a_newline_terminated_bad_last_line_is_an_error_too(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_rec("a").to_json() + "\n" + '{"not": "a record"}\n')
    with pytest.raises(MalformedResults, match=f"{path}:2"):
        read_records(path)


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    whole = _rec("b").to_json()
    path.write_text(_rec("a").to_json() + "\n" + whole[: len(whole) // 2])  # a crash mid-write
    with caplog.at_level(logging.WARNING, logger="bobench.results.jsonl"):
        assert [r.run_key for r in read_records(tmp_path)] == ["a"]
    assert f"{path}:2" in caplog.text and "skipped" in caplog.text


def test_appending_after_a_torn_line_cuts_it_so_a_rerun_continues(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    whole = _rec("b").to_json()
    path.write_text(_rec("a").to_json() + "\n" + whole[:20])
    with caplog.at_level(logging.WARNING, logger="bobench.results.jsonl"):
        append_record(tmp_path, _rec("b", status="finished"))
    assert "cut off" in caplog.text
    caplog.clear()
    assert [(r.run_key, r.status) for r in iter_records(path)] == [("a", "pending"), ("b", "finished")]
    assert not caplog.records
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 2


def test_appending_after_a_whole_record_without_newline_keeps_it(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_rec("a").to_json())  # e.g. written by hand
    append_record(tmp_path, _rec("b"))
    assert [r.run_key for r in iter_records(path)] == ["a", "b"]


def test_replacing_the_records_mirrors_them_whole_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "results.jsonl").write_text("stale, not even a record\n")
    path = replace_records(tmp_path, [_rec("a"), _rec("b")])
    assert [r.run_key for r in iter_records(path)] == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]


def test_a_missing_results_file_has_no_records(tmp_path):
    assert read_records(tmp_path) == [] and list(iter_records(tmp_path / "none.jsonl")) == []


# ---- derived forms ---------------------------------------------------------------------------------


def test_every_record_field_has_a_typed_run_result_field():
    proto_fields = set(common_pb2.RunResult.DESCRIPTOR.fields_by_name)
    for f in dataclasses.fields(RunRecord):
        if f.name in RECORD_JSON_ONLY:
            continue
        assert PROTO_NAMES.get(f.name, f.name) in proto_fields, f"RunResult lacks a field for {f.name}"


def test_the_typed_run_result_fields_alone_rebuild_the_record():
    rec = _rec(
        status="failed",
        metrics={"top1": 0.5, "curve": [1, 2], "missing": None},
        higher_is_better={"top1": True},
        primary_metric="top1",
        backbone_info={"family": "resnet"},
        dataset_fingerprint="abc",
        environment={"device": "cpu"},
        started_at="2026-01-01T00:00:00.000+00:00",
        finished_at="2026-01-01T00:00:01.000+00:00",
        duration_s=1.0,
        battle="b1",
        seeded=False,
    )
    rec.fail("Unavailable", "Unavailable: down")
    result = record_to_result(rec)
    assert result.error_type == "Unavailable" and result.schema_version == SCHEMA_VERSION
    result.record_json = ""
    assert result_to_record(result) == rec


def test_a_typed_result_without_schema_version_reads_as_version_1():
    result = record_to_result(_rec(error="Unavailable: down"))
    result.record_json = ""
    result.ClearField("schema_version")
    result.error_type = ""
    rec = result_to_record(result)
    assert rec.schema_version == 1 and rec.error_type == "Unavailable"


def test_a_plans_new_record_copies_every_shared_field_but_its_error():
    plan = RunPlan(
        run_key="k",
        backbone="toy",
        dataset="toy",
        dataset_ref="toy",
        protocol="knn",
        protocol_version="1",
        task="classification",
        config={"ks": [5]},
        seed=3,
        primary_metric="top1",
        higher_is_better={"top1": True},
        dataset_fingerprint="fp",
        battle="b",
        error="dataset failed to load",
        seeded=False,
    )
    rec = plan.new_record()
    shared = {f.name for f in dataclasses.fields(RunPlan)} & {f.name for f in dataclasses.fields(RunRecord)}
    for name in shared - {"error"}:
        assert getattr(rec, name) == getattr(plan, name), name
    assert rec.error is None and rec.status is RunStatus.PENDING
    assert rec.higher_is_better is not plan.higher_is_better
