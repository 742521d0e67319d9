"""read_records on an append-only results.jsonl: a finished record is not hidden by later attempts."""

from __future__ import annotations

from bobench.results import RunRecord, RunStatus, read_records


def _rec(key: str, status: str, acc: float | None = None, error: str | None = None) -> RunRecord:
    return RunRecord(
        run_key=key,
        backbone="toy",
        dataset="toy",
        protocol="knn",
        protocol_version="1",
        task="classification",
        config={},
        seed=0,
        status=status,
        metrics={} if acc is None else {"acc": acc},
        error=error,
    )


def _write(path, records) -> None:
    path.write_text("".join(r.to_json() + "\n" for r in records))


def test_later_cancelled_or_failed_attempt_does_not_hide_finished(tmp_path):
    _write(
        tmp_path / "results.jsonl",
        [
            _rec("a", RunStatus.FINISHED, acc=0.7),
            _rec("b", RunStatus.FINISHED, acc=0.5),
            _rec("a", RunStatus.CANCELLED, error="deadline"),
            _rec("b", RunStatus.FAILED, error="evaluator lost"),
            _rec("a", RunStatus.FAILED, error="evaluator lost"),
        ],
    )
    got = {r.run_key: r for r in read_records(tmp_path)}
    assert set(got) == {"a", "b"}
    assert got["a"].status == RunStatus.FINISHED and got["a"].metrics == {"acc": 0.7}
    assert got["b"].status == RunStatus.FINISHED and got["b"].metrics == {"acc": 0.5}


def test_later_finished_record_replaces_earlier_finished(tmp_path):
    _write(
        tmp_path / "results.jsonl",
        [
            _rec("a", RunStatus.FINISHED, acc=0.7),
            _rec("a", RunStatus.CANCELLED),
            _rec("a", RunStatus.FINISHED, acc=0.8),
            _rec("a", RunStatus.FAILED),
        ],
    )
    (rec,) = read_records(tmp_path / "results.jsonl")
    assert rec.status == RunStatus.FINISHED and rec.metrics == {"acc": 0.8}


def test_never_finished_key_keeps_its_last_record(tmp_path):
    _write(
        tmp_path / "results.jsonl",
        [_rec("c", RunStatus.FAILED, error="first"), _rec("c", RunStatus.CANCELLED, error="second")],
    )
    (rec,) = read_records(tmp_path)
    assert rec.status == RunStatus.CANCELLED and rec.error == "second"
