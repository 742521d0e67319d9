"""Chaos with real processes: the scheduler's S3 store (a SeaweedFS of this test's own) stops for 20 s
in the middle of a battle of ten efficiency runs, with auth on like the local stack.

Two faults: (a) SIGSTOP for 20 s then SIGCONT, a store that hangs (connections are accepted by the
kernel, nothing answers); (b) SIGKILL and, 20 s later, a restart of the same `weed` command line on
the same data directory and ports, a store that is gone. During the outage the scheduler's health
must turn NOT_SERVING, and GetBattle, ListResults and SubmitBattle must answer (UNAVAILABLE is an
answer) before their deadline instead of hanging. Once the store is back health is SERVING again and
the battle finishes: every run key executed exactly once (finished records per key in the
evaluator's result log), one verified finished `results/<key>.json` per run in the store, the stored
battle document says finished with the right total. Each variant prints what the fault did and how
long recovery took (store up -> health SERVING, -> next run finished, -> battle done).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from chaos_helpers import (
    RESULT_SIGNING_KEY,
    assert_auth_on,
    efficiency_spec,
    finished_per_key,
    health_status,
    start_chaos_scheduler,
    start_evaluator_on,
    wait_until,
)
from s3_fixtures import S3_ADMIN

from bobench.battle.result_signing import ResultSigner
from bobench.client import SchedulerClient
from bobench.errors import BobenchError, DeadlineExceeded, Unavailable
from bobench.results import RunRecord
from bobench.stack.procs import Service, pid_alive, probe_free_port, spawn, stop_pid
from bobench.store import S3Store
from bobench.v1 import scheduler_pb2

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = 10
OUTAGE_S = 20.0
BUCKET, PREFIX = "bobench", "chaos"
CALL_DEADLINE_S = 10.0  # an answer during the outage must come before this (else: a hang)


def _start_store(tmp_path: Path) -> Service:
    from bobench.errors import Unavailable as NotInstalled
    from bobench.stack.seaweedfs import start_seaweedfs, weed_binary

    try:
        weed_binary()
    except NotInstalled as exc:
        pytest.skip(str(exc))
    return start_seaweedfs(tmp_path / "weed", [S3_ADMIN])


def _store(address: str, **kw) -> S3Store:
    return S3Store(address, BUCKET, PREFIX, S3_ADMIN.access_key, S3_ADMIN.secret_key, **kw)


def _answers(address: str) -> bool:
    probe = _store(address, retries=0, timeout_s=2)
    try:
        probe.exists("probe")
        return True
    except BobenchError:
        return False
    finally:
        probe.close()


def _restart_store(tmp_path: Path, argv: list[str], cwd: str, address: str) -> int:
    """The same `weed` command line (same data dir, ports, security.toml) started again; its pid
    once S3 answers."""
    proc = spawn(argv, tmp_path / "weed" / "weed-restart.log", cwd=cwd)
    wait_until(lambda: _answers(address) or proc.poll() is not None, 60, "SeaweedFS restarted")
    assert proc.poll() is None, f"weed exited with {proc.returncode}: see {tmp_path / 'weed'}"
    return proc.pid


def _timed_call(fn) -> tuple[str, float]:
    """(outcome, seconds): "ok" or the error class name."""
    t0 = time.monotonic()
    try:
        fn()
        outcome = "ok"
    except BobenchError as exc:
        outcome = type(exc).__name__
    return outcome, time.monotonic() - t0


@pytest.mark.timeout(420)
@pytest.mark.parametrize("fault", ["sigstop", "sigkill"])
def test_store_stopped_for_20_s_mid_battle_every_run_finishes_exactly_once(tmp_path, fault):
    weed = _start_store(tmp_path)
    weed_pid = weed.pid
    argv = Path(f"/proc/{weed_pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    weed_cwd = os.readlink(f"/proc/{weed_pid}/cwd")
    port = probe_free_port()
    evaluator = start_evaluator_on(tmp_path, port)
    sched = start_chaos_scheduler(
        tmp_path, f"127.0.0.1:{port}", f"s3://{BUCKET}/{PREFIX}",
        env={"BOBENCH_S3_ENDPOINT": f"http://{weed.address}", "BOBENCH_S3_ACCESS_KEY": S3_ADMIN.access_key,
             "BOBENCH_S3_SECRET_KEY": S3_ADMIN.secret_key},
    )  # fmt: skip
    stopped = False
    try:
        assert_auth_on(sched.address, evaluator.address)
        wait_until(lambda: health_status(sched.address) == "SERVING", 30, "scheduler SERVING")
        with SchedulerClient(sched.address, timeout_s=30) as client:
            bid = client.submit(efficiency_spec(range(RUNS)), battle_id=f"chaos-store-{fault}").battle_id
            wait_until(lambda: client.get(bid).counts.finished >= 3, 180, "three runs finished")
            done_at_fault = client.get(bid).counts.finished
            assert done_at_fault < RUNS - 2, "the outage must fall mid-battle"

            os.kill(weed_pid, signal.SIGSTOP if fault == "sigstop" else signal.SIGKILL)
            stopped = fault == "sigstop"
            t_fault = time.monotonic()
            if fault == "sigkill":
                wait_until(lambda: not pid_alive(weed_pid), 10, "weed gone")
            health: list[tuple[float, str]] = []
            calls: dict[str, tuple[str, float]] = {}
            while time.monotonic() - t_fault < OUTAGE_S:
                health.append((time.monotonic() - t_fault, health_status(sched.address)))
                noticed = health[-1][1] == "NOT_SERVING" or health[-1][0] >= OUTAGE_S / 2
                if not calls and noticed:  # health says the store is gone (or half the outage passed)
                    calls["GetBattle"] = _timed_call(lambda: client.get(bid, timeout_s=CALL_DEADLINE_S))
                    calls["ListResults"] = _timed_call(lambda: client.results(bid, timeout_s=CALL_DEADLINE_S))
                    calls["SubmitBattle"] = _timed_call(
                        lambda: client.submit(
                            efficiency_spec([0], name="during"), battle_id=f"during-{fault}",
                            timeout_s=CALL_DEADLINE_S,
                        )
                    )  # fmt: skip
                time.sleep(0.25)
            finished_in_outage = client.get(bid, timeout_s=CALL_DEADLINE_S).counts.finished

            if fault == "sigstop":
                os.kill(weed_pid, signal.SIGCONT)
                stopped = False
            else:
                weed_pid = _restart_store(tmp_path, argv, weed_cwd, weed.address)
            t_up = time.monotonic()
            wait_until(lambda: health_status(sched.address) == "SERVING", 60, "scheduler SERVING again", 0.1)
            serving_s = time.monotonic() - t_up
            wait_until(
                lambda: client.get(bid).counts.finished > finished_in_outage, 120, "a run finished", 0.1
            )
            next_run_s = time.monotonic() - t_up  # the run in flight at the fault: its result written
            wait_until(  # a run dispatched after the store came back has finished
                lambda: client.get(bid).counts.finished > finished_in_outage + 1,
                120,
                "two runs finished",
                0.1,
            )
            dispatched_run_s = time.monotonic() - t_up
            for _ in client.watch(bid, timeout_s=240):
                pass
            done_s = time.monotonic() - t_up
            during = client.submit(
                efficiency_spec([0], name="during"), battle_id=f"during-{fault}"
            ).battle_id  # again: it may not have been taken during the outage
            for _ in client.watch(during, timeout_s=120):
                pass
            battle, records = client.get(bid), client.results(bid)
            during_battle = client.get(during)
        not_serving = [t for t, s in health if s == "NOT_SERVING"]
        first = f"{not_serving[0]:.1f} s" if not_serving else "never"
        answers = ", ".join(f"{m} {o} in {s:.2f} s" for m, (o, s) in calls.items())
        print(
            f"\nstore {fault} for {OUTAGE_S:.0f} s after {done_at_fault} of {RUNS} runs: health NOT_SERVING "
            f"in {len(not_serving)}/{len(health)} polls (first {first} after the fault); during the outage "
            f"{answers}; runs finished during it {finished_in_outage - done_at_fault}. Store back -> "
            f"SERVING {serving_s:.1f} s, run in flight recorded {next_run_s:.1f} s, a run dispatched after "
            f"it finished {dispatched_run_s:.1f} s, battle done {done_s:.1f} s"
        )

        assert not_serving, f"health never said NOT_SERVING while the store was {fault}ped: {health}"
        for method, (outcome, took_s) in calls.items():
            assert outcome in ("ok", Unavailable.__name__), (method, outcome, took_s)
            assert outcome != DeadlineExceeded.__name__ and took_s < CALL_DEADLINE_S, (method, took_s)
        assert calls["GetBattle"][0] == "ok"  # in memory: no store needed
        assert health_status(sched.address) == "SERVING"

        assert battle.state == scheduler_pb2.BATTLE_STATE_FINISHED, battle
        assert battle.counts.total == RUNS and battle.counts.finished == RUNS, battle.counts
        assert battle.counts.failed == 0 and battle.counts.cancelled == 0, battle.counts
        keys = collections.Counter(r.run_key for r in records)
        assert len(keys) == RUNS and set(keys.values()) == {1} and all(r.finished for r in records)
        per_key = finished_per_key(tmp_path)  # executions: the evaluator's append-only result log
        assert set(per_key) == set(keys) and set(per_key.values()) == {1}, per_key
        assert (
            during_battle.state == scheduler_pb2.BATTLE_STATE_FINISHED and during_battle.counts.finished == 1
        )

        store = _store(weed.address)
        try:
            stored = [k for k in store.list("results/") if k.count("/") == 1]
            assert sorted(stored) == sorted(f"results/{k}.json" for k in keys), stored
            signer = ResultSigner(RESULT_SIGNING_KEY)
            for key in stored:
                doc = store.get_json(key)
                assert signer.verify(doc), key
                assert RunRecord.from_dict(doc).finished, key
            doc = store.get_json(f"battles/{bid}/battle.json")
            assert doc["state"] == "finished" and doc["total"] == RUNS, doc
            assert store.list(f"battles/{bid}/runs/") != []  # run states were written back
        finally:
            store.close()
        assert pid_alive(sched.pid), "the scheduler died"
    finally:
        if stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(weed_pid, signal.SIGCONT)
        stop_pid(sched.pid)
        stop_pid(evaluator.pid)
        stop_pid(weed_pid, 10)
