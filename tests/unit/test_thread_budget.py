"""One thread budget per process (`bobench.threads`): torch, OpenMP/BLAS and ONNX Runtime sessions
take the same count, and the small-fit single-thread block is scoped to its own thread."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from bobench import threads
from bobench.backbones import create_backbone
from bobench.export.onnx_export import export_cached, ort_session


@pytest.fixture(autouse=True)
def _restore_budget(monkeypatch):
    """Each test leaves the process's budget and torch's threads as it found them."""
    before_torch = torch.get_num_threads()
    for name in threads.ENV_VARS:  # recorded, so the test's values are undone afterwards
        monkeypatch.setenv(name, os.environ.get(name, "unset"))
        if os.environ[name] == "unset":
            monkeypatch.delenv(name)
    monkeypatch.setattr(threads, "_budget", threads.current_budget())
    yield
    torch.set_num_threads(before_torch)


def test_zero_means_every_available_core():
    assert threads.resolve_threads(0) == threads.available_cores()
    assert threads.resolve_threads(3) == 3


def test_hyper_threads_of_one_core_count_once_and_only_the_affinity_counts(tmp_path, monkeypatch):
    layout = {0: ("0", "0"), 1: ("0", "0"), 2: ("0", "1"), 3: ("0", "1"), 4: ("1", "0")}  # 2 cores x 2 HT + 1
    for cpu, (package, core) in layout.items():
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(package + "\n")
        (topology / "core_id").write_text(core + "\n")
    monkeypatch.setattr(threads, "SYS_CPU", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    assert threads.available_cores() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # one core's two hyper-threads
    assert threads.available_cores() == 1
    monkeypatch.setattr(threads, "SYS_CPU", tmp_path / "absent")  # no topology: logical CPUs
    assert threads.available_cores() == 2


def test_the_budget_reaches_torch_the_environment_and_ort_sessions(tmp_path):
    budget = threads.apply_thread_budget(1)
    assert (budget.requested, budget.threads, budget.torch_applied) == (1, 1, True)
    assert torch.get_num_threads() == 1
    assert all(os.environ[name] == "1" for name in threads.ENV_VARS)
    report = export_cached(create_backbone("toy"), tmp_path)
    session = ort_session(report.path)  # no explicit count: the budget's
    assert session.get_session_options().intra_op_num_threads == 1
    assert ort_session(report.path, threads=2).get_session_options().intra_op_num_threads == 2
    assert threads.session_threads(0) == 1


def test_applying_the_same_budget_again_changes_nothing():
    first = threads.apply_thread_budget(1)
    torch.set_num_threads(2)  # what a later library call might do
    assert threads.apply_thread_budget(1) is first
    threads.hold_thread_budget()  # a run's start puts the budget back on its thread
    assert torch.get_num_threads() == 1


def test_a_scoped_change_restores_the_previous_value():
    torch.set_num_threads(2)
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with threads.torch_threads(None):
        assert torch.get_num_threads() == 2


@pytest.mark.skipif("OpenMP" not in torch.__config__.parallel_info(), reason="per-thread counts are OpenMP's")
def test_a_scoped_change_leaves_a_running_thread_and_a_run_that_reasserts_the_budget_alone():
    threads.apply_thread_budget(2)
    seen: dict[str, int] = {}
    started, changed, done = threading.Event(), threading.Event(), threading.Event()

    def other_run() -> None:
        torch.get_num_threads()  # this thread has done torch work before the change
        started.set()
        changed.wait(10)
        seen["during"] = torch.get_num_threads()
        done.set()

    def late_run() -> None:  # a run that starts while the change is in force
        threads.hold_thread_budget()
        seen["late"] = torch.get_num_threads()

    worker = threading.Thread(target=other_run)
    worker.start()
    started.wait(10)
    with threads.torch_threads(1):
        changed.set()
        done.wait(10)
        late = threading.Thread(target=late_run)
        late.start()
        late.join(10)
        assert torch.get_num_threads() == 1
    worker.join(10)
    assert seen == {"during": 2, "late": 2}
    assert torch.get_num_threads() == 2


def test_runs_at_once_split_the_budget_and_each_session_gets_its_share(tmp_path):
    budget = threads.apply_thread_budget(4, concurrent_runs=2)
    assert (budget.threads, budget.concurrent_runs, budget.per_run) == (4, 2, 2)
    assert torch.get_num_threads() == 2
    assert all(os.environ[name] == "2" for name in threads.ENV_VARS)
    assert threads.session_threads(0) == 2
    assert threads.apply_thread_budget(1, concurrent_runs=3).per_run == 1  # never below one thread
    assert threads.apply_thread_budget(3, concurrent_runs=2).per_run == 1  # the quotient: 2 x 1 <= 3


def test_an_evaluator_pool_of_two_runs_each_on_half_the_threads(tmp_path):
    from bobench.backbones import get_spec
    from bobench.battle.executors.pool import ExecutorPool
    from bobench.config import Settings

    settings = Settings(cache_dir=str(tmp_path), embedder="onnxruntime", threads=2)
    pool = ExecutorPool(settings, 2)
    try:
        assert [ex.threads for ex in pool._all] == [1, 1]
        embedder = pool._all[0].embedder(get_spec("toy")).unwrap()
        assert embedder.session.get_session_options().intra_op_num_threads == 1
    finally:
        pool.close()
    single = ExecutorPool(settings, 1)
    try:
        assert single._all[0].threads == 2
    finally:
        single.close()
