"""`stack.procs.wait_until`: "not up yet" errors are retried and named, a broken probe is not hidden.

Issue 11: the readiness loop swallowed every exception (`except Exception: pass`), so a probe with a
bug waited out its whole timeout and then blamed the service.
"""

from __future__ import annotations

import pytest

from bobench.errors import Unavailable
from bobench.stack.procs import wait_until


class _StillRunning:
    """Stands in for the started service's Popen (no process in a unit test): it never exits."""

    returncode = None

    def poll(self) -> None:
        return None


@pytest.fixture
def sleeper():
    return _StillRunning()


def test_a_probe_that_is_not_up_yet_is_retried_until_ready(sleeper, tmp_path):
    calls = []

    def ready() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("connection refused")
        return True

    wait_until(ready, sleeper, "svc", tmp_path / "svc.log", timeout_s=10, interval_s=0.01)
    assert len(calls) == 3


def test_running_out_of_time_names_the_last_probe_error(sleeper, tmp_path):
    def ready() -> bool:
        raise ValueError("not serving yet")

    with pytest.raises(
        Unavailable, match=r"not ready within 0 s \(last probe: ValueError: not serving yet\)"
    ):
        wait_until(ready, sleeper, "svc", tmp_path / "svc.log", timeout_s=0.2, interval_s=0.01)


def test_a_probe_with_a_bug_raises_at_once_instead_of_waiting_out_the_timeout(sleeper, tmp_path):
    def ready() -> bool:
        return None + 1  # type: ignore[operator]

    with pytest.raises(TypeError):
        wait_until(ready, sleeper, "svc", tmp_path / "svc.log", timeout_s=60, interval_s=0.01)
