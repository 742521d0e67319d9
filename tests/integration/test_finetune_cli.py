"""`bob finetune` as a Job entrypoint in a real subprocess: SIGKILL then resume, SIGTERM marks failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bobench.finetune.checkpoint import LAST, load_checkpoint
from bobench.finetune.job import read_status
from bobench.finetune.loop import finetune

torch.set_num_threads(1)

DATASET = '{"name": "toy", "per_class": 60}'  # 144 training images: epochs long enough to kill mid-run
RECIPE = {"epochs": 4, "batch_size": 16, "lr": 0.01, "warmup_epochs": 0.5}


def _start(out, cache) -> subprocess.Popen:
    code = "import sys; from bobench.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [
        "finetune",
        "toy",
        DATASET,
        "--out",
        str(out),
        "--seed",
        "7",
        "--epochs",
        str(RECIPE["epochs"]),
        "--batch-size",
        str(RECIPE["batch_size"]),
        "--lr",
        str(RECIPE["lr"]),
    ]
    recipe = out.parent / "recipe.yaml"
    recipe.write_text(f"warmup_epochs: {RECIPE['warmup_epochs']}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BOBENCH_CACHE_DIR": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args, "--recipe", str(recipe)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the job exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared")
        time.sleep(0.005)


def _stop(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigkilled_job_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    import json

    from bobench.cli import main

    out = tmp_path / "job"
    out.mkdir()
    proc = _start(out, tmp_path / "cache")
    _wait_for(out / LAST, proc)
    _stop(proc, signal.SIGKILL)
    done = load_checkpoint(out / LAST)["run"]["epoch"]
    if done >= RECIPE["epochs"]:
        pytest.skip("the job finished before it could be killed")
    assert proc.returncode == -signal.SIGKILL
    assert read_status(out) == "running"  # a killed process cannot update it: the supervisor sees a stale run

    rc = main(
        [
            "finetune",
            "toy",
            DATASET,
            "--out",
            str(out),
            "--seed",
            "7",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--lr",
            "0.01",
            "--recipe",
            str(out.parent / "recipe.yaml"),
        ]
    )
    assert rc == 0 and read_status(out) == "finished"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["resumed_from_epoch"] == done

    reference = finetune("toy", json.loads(DATASET), tmp_path / "reference", RECIPE, seed=7)
    resumed_state = load_checkpoint(out / LAST)["model"]
    reference_state = load_checkpoint(tmp_path / "reference" / LAST)["model"]
    for key, value in reference_state.items():
        assert torch.equal(resumed_state[key], value), key
    assert metrics["top1"] == reference["top1"] and metrics["val_top1"] == reference["val_top1"]


@pytest.mark.slow
def test_sigterm_marks_the_job_failed_and_exits_non_zero(tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    proc = _start(out, tmp_path / "cache")
    _wait_for(out / LAST, proc)
    _stop(proc, signal.SIGTERM)
    if proc.returncode == 0:
        pytest.skip("the job finished before SIGTERM arrived")
    assert proc.returncode != 0
    assert read_status(out) == "failed"
    assert "SIGTERM" in (out / "error.txt").read_text()
