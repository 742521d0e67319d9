"""SIGTERM during a long run: the evaluator drains for its grace period, then stops the run (recorded
cancelled, never finished) and exits promptly instead of waiting for the run to end."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from bobench.client import EvaluatorClient
from services import spawn_evaluator_process

pytestmark = pytest.mark.integration


def test_sigterm_mid_run_cancels_it_after_the_grace_period_and_exits(tmp_path):
    proc, ready = spawn_evaluator_process(tmp_path, "--batch-size", "4", "--grace-s", "1")
    try:
        progressed = threading.Event()
        outcome: dict = {}

        def run() -> None:  # a run long enough to be in flight: 600 MNIST digits through a ResNet-18
            with EvaluatorClient(ready["address"], timeout_s=120) as client:
                try:
                    outcome["result"] = client.evaluate(
                        "resnet18-random",
                        {"name": "mnist", "max_per_class": 60},
                        "knn",
                        progress=lambda *_: progressed.set(),
                    )
                except Exception as exc:  # the stream may end with UNAVAILABLE/CANCELLED as the server stops
                    outcome["error"] = exc

        caller = threading.Thread(target=run)
        caller.start()
        assert progressed.wait(90), "the run never reported progress"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        stopped_after_s = time.monotonic() - t0
        caller.join(30)
        lines = [
            json.loads(x) for x in (tmp_path / "results" / "results.jsonl").read_text().splitlines() if x
        ]
        assert [d["status"] for d in lines] == ["cancelled"] and lines[0]["error"].startswith("Cancelled")
        assert stopped_after_s < 25  # a few seconds of grace + the next progress tick, not the whole run
        if "result" in outcome:
            assert outcome["result"].record.status != "finished"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
