"""Chaos on the real local stack: SIGKILL of the embedder's tritonserver in the middle of a battle.

`python -m bobench.stack up` (SeaweedFS S3, the supervised Triton embedder, one evaluator, the
scheduler), a battle of knn runs over twelve toy datasets (each new to the feature cache, so every
run embeds through Triton), and tritonserver killed with SIGKILL once the first run finished. The
embedder service restarts it on its port; the evaluator's Triton client reconnects (or the run fails
as transient and the scheduler retries it). At the end every run is finished exactly once: one record
per run key in ListResults and one `results/<key>.json` per finished run in the store, none that
did not finish. The services run with auth on, as `stack up` starts them (an anonymous caller is
refused). Then the embedder service itself is SIGKILLed and `stack down` still stops
tritonserver and its python stubs. The recovery time (kill to the model ready again) is printed.
"""

from __future__ import annotations

import collections
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from bobench.stack import read_state, stack_env
from bobench.stack.procs import group_members, pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _group(pgid: int, needle: str) -> list[int]:
    return [p for p in group_members(pgid) if needle in _cmdline(p)]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
            return resp.status == 200
    except OSError:
        return False


def _stack(state_dir: Path, *args: str) -> str:
    from stack_secrets import stack_cli

    return stack_cli(state_dir, *args)


def test_sigkill_of_tritonserver_mid_battle_every_run_finishes_exactly_once(tmp_path, monkeypatch):
    from chaos_helpers import assert_auth_on
    from stack_secrets import files_holding, stack_secret_values

    from bobench.backbones import get_spec
    from bobench.battle.spec import parse_spec
    from bobench.client import SchedulerClient
    from bobench.config import Settings
    from bobench.errors import Unavailable
    from bobench.export.triton_repo import served_model_name
    from bobench.serving.triton import tritonserver_home
    from bobench.store import open_store

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    for name, value in {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    state_dir = tmp_path / ".bobench"
    printed = _stack(state_dir, "up", "--evaluators", "1", "--backbones", "toy")
    state = read_state(state_dir)
    embedder = next(s for s in state["services"] if s["name"] == "embedder")
    try:
        values = stack_secret_values(state_dir)
        env = stack_env(state_dir)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        model = served_model_name(get_spec("toy"), "onnx")
        model_ready = f"http://{embedder['extra']['http']}/v2/models/{model}/ready"
        assert _ready(model_ready)
        (first_triton,) = _group(embedder["pid"], "bin/tritonserver")
        datasets = [{"name": f"toy-p{n}", "ref": {"name": "toy", "per_class": n}} for n in range(60, 72)]
        spec = parse_spec({"backbones": ["toy"], "datasets": datasets, "protocols": ["knn"]})
        scheduler = next(s for s in state["services"] if s["name"] == "scheduler")
        evaluator = next(s for s in state["services"] if s["name"] == "evaluator-0")
        assert_auth_on(scheduler["address"], evaluator["address"])  # the stack runs with auth on
        recovered_s = None
        with SchedulerClient(scheduler["address"]) as client:
            bid = client.submit(spec).battle_id
            for event in client.watch(bid, timeout_s=600):
                if recovered_s is None and event.counts.finished >= 1:
                    os.kill(first_triton, signal.SIGKILL)
                    killed_at = time.monotonic()
                    while not _ready(model_ready):
                        assert time.monotonic() - killed_at < 300, "Triton did not come back"
                        time.sleep(0.05)
                    recovered_s = time.monotonic() - killed_at
            battle = client.get(bid)
            records = client.results(bid)
        assert recovered_s is not None, "the battle ended before the fault was injected"
        (second_triton,) = _group(embedder["pid"], "bin/tritonserver")
        assert second_triton != first_triton and not pid_alive(first_triton)
        # the supervisor logs the restart once it has seen the new server answer, which can come after
        # the model answers ready to the test (and after a fast battle ended): poll for the line
        embedder_log = state_dir / "logs" / "embedder.log"
        deadline = time.monotonic() + 60
        while "tritonserver restarted (restart 1)" not in embedder_log.read_text():
            assert time.monotonic() < deadline, "the embedder never logged the restart"
            time.sleep(0.1)

        per_key = collections.Counter(r.run_key for r in records)
        assert len(per_key) == len(datasets) and set(per_key.values()) == {1}, per_key
        assert battle.counts.finished == len(datasets), [r.error for r in records if not r.finished]
        for record in records:
            assert record.finished and record.metrics, record.error
            assert record.environment["runtime"] == "triton"
        store = open_store(
            state["store"],
            Settings(
                s3_endpoint=env["BOBENCH_S3_ENDPOINT"],
                s3_access_key=env["BOBENCH_S3_ACCESS_KEY"],
                s3_secret_key=env["BOBENCH_S3_SECRET_KEY"],
            ),
        )
        stored = collections.Counter(  # results/<run key>.json: the finished results the store holds
            k.removeprefix("results/").removesuffix(".json")
            for k in store.list("results/")
            if k.count("/") == 1 and k.endswith(".json")
        )
        assert stored == collections.Counter(per_key), (stored, per_key)
        for key in stored:
            doc = store.get_json(f"results/{key}.json")
            assert doc.get("status", doc.get("record", {}).get("status")) == "finished", key
        logs = state_dir / "logs"
        retried = (logs / "scheduler.log").read_text().count("retrying in")
        reconnected = (logs / "evaluator-0.log").read_text().count("new channel, retrying")
        print(
            f"tritonserver SIGKILLed after run 1 of {len(datasets)}: model ready again after "
            f"{recovered_s:.1f} s; evaluator client retries {reconnected}, scheduler run retries {retried}"
        )

        stubs = _group(embedder["pid"], "triton_python_backend_stub")
        os.kill(embedder["pid"], signal.SIGKILL)  # the supervisor itself dies now
        time.sleep(0.5)
        assert pid_alive(second_triton)  # ... and leaves tritonserver running
    finally:
        printed += _stack(state_dir, "down")
    assert group_members(embedder["pid"]) == []
    assert not any(pid_alive(p) for p in (second_triton, *stubs))
    leaks = files_holding(state_dir, values)  # error paths logged: still no secret anywhere
    assert leaks == {}, f"secrets found in {leaks}"
    assert [name for name, v in values.items() if v in printed] == []
