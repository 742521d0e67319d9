"""One exit-code table and one logging setup for every front end (issue 11: they differed by front
end: `bob` exited 1 for an unreachable service, the embedder service 2, the stack 1 for a bad setting;
three log formats)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import bobench
from bobench.cli import main as bob
from bobench.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from bobench.exit_codes import FAILED, INTERRUPTED, OK, UNAVAILABLE, USAGE_ERROR, exit_code_for, run_main
from bobench.logs import LOG_FORMAT, NOISY_LOGGERS, setup_logging

SRC = Path(bobench.__file__).parent


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidArgument("x"), USAGE_ERROR),
        (NotFound("x"), USAGE_ERROR),
        (FailedPrecondition("x"), USAGE_ERROR),
        (PermissionDenied("x"), USAGE_ERROR),
        (Unavailable("x"), UNAVAILABLE),
        (DeadlineExceeded("x"), UNAVAILABLE),
        (KeyboardInterrupt(), INTERRUPTED),
        (RuntimeError("a bug"), FAILED),
    ],
)
def test_each_error_kind_has_one_exit_code(exc, code):
    assert exit_code_for(exc) == code


def test_the_codes_are_the_documented_numbers():
    assert (OK, FAILED, USAGE_ERROR, UNAVAILABLE, INTERRUPTED) == (0, 1, 2, 3, 130)
    readme = (SRC.parents[1] / "README.md").read_text()
    for code, name in (
        (0, "OK"),
        (1, "FAILED"),
        (2, "USAGE_ERROR"),
        (3, "UNAVAILABLE"),
        (130, "INTERRUPTED"),
    ):
        assert f"| {code} | `{name}`" in readme, name


def test_run_main_turns_a_domain_error_into_one_line_and_its_code(capsys):
    def unavailable() -> int:
        raise Unavailable("store 127.0.0.1:9 did not answer")

    assert run_main(unavailable, "svc") == UNAVAILABLE
    assert capsys.readouterr().err == "svc: error: store 127.0.0.1:9 did not answer\n"
    assert run_main(lambda: None, "svc") == OK
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        run_main(lambda: (_ for _ in ()).throw(RuntimeError("bug")), "svc")


def test_bob_exits_2_for_a_usage_error_and_without_a_command(capsys):
    assert bob(["backbones", "show", "no_such_backbone"]) == USAGE_ERROR
    assert "bob: error:" in capsys.readouterr().err
    assert bob([]) == USAGE_ERROR


def test_the_stack_exits_with_the_table_too(tmp_path, capsys, monkeypatch):
    import bobench.stack
    from bobench.stack.__main__ import main as stack

    def refuse(*_a, **_k):
        raise InvalidArgument("stack: --evaluators must be >= 0")

    monkeypatch.setattr(bobench.stack, "up", refuse)
    assert stack(["up", "--state-dir", str(tmp_path), "--backbones", "toy"]) == USAGE_ERROR
    assert capsys.readouterr().err.startswith("stack: error: ")


def test_every_front_end_logs_through_bobench_logs_and_exits_through_the_table():
    basic = [p.relative_to(SRC) for p in SRC.rglob("*.py") if "logging.basicConfig(" in p.read_text()]
    assert basic == [Path("logs.py")]
    for module in ("rpc/evaluator_service.py", "rpc/scheduler_service.py"):
        assert "raise SystemExit(run_main(main," in (SRC / module).read_text(), module
    for module in ("serving/embedder_service.py", "stack/__main__.py", "cli/__init__.py"):
        assert "report_exit(" in (SRC / module).read_text(), module


def test_setup_logging_uses_one_format_and_quietens_libraries(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # basicConfig only configures a root without handlers
    monkeypatch.setattr(root, "level", root.level)
    setup_logging("info")
    (handler,) = root.handlers
    assert handler.formatter._fmt == LOG_FORMAT
    assert root.level == logging.INFO
    assert all(logging.getLogger(n).level == logging.WARNING for n in NOISY_LOGGERS)
    with pytest.raises(InvalidArgument, match="log level"):
        setup_logging("chatty")
