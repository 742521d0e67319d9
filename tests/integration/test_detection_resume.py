"""Detection training killed with SIGKILL and started again ends with exactly the weights of an
uninterrupted run (CPU, one thread, same seed).

Each run is a real `python` subprocess training Faster R-CNN on the registered ResNet-18 (random
regime: live BatchNorm, so running statistics must resume too) over the synthetic rectangles of
tests/unit/detection_synthetic.py (8 train + 2 val images of 64 px, batch 2, 3 epochs). The interrupted run is
SIGKILLed as soon as its first epoch's checkpoint exists, i.e. while epoch 2 is training; the rerun
resumes from `last.pt`. Equality is exact (`torch.equal` on every tensor): the loop is deterministic
by design (per-epoch seeds), so any tolerance would hide a resume bug.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from bobench.finetune.checkpoint import load_checkpoint

CHILD = r"""
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from detection_synthetic import small_detector, synthetic_boxes

from bobench.detection.train import TrainConfig, train_detector

out, marker = Path(sys.argv[1]), sys.argv[2]
ds = synthetic_boxes(n=12, size=64, seed=5)
cfg = TrainConfig(epochs=3, batch_size=2, lr=0.02, warmup_steps=2, hflip=True, vflip=True)
detector = small_detector("resnet18-random", regime="random", seed=7)


def progress(done, total, message):
    if done == 1 and marker:
        Path(marker).write_text(message)


summary = train_detector(
    detector, ds, out, cfg, seed=7, identity={"test": "resume"}, train_split=list(range(8)),
    val_split=[8, 9], progress=progress,
)
print("best_epoch", summary["best_epoch"])
"""
TIMEOUT_S = 300
UNIT_TESTS = Path(__file__).resolve().parents[1] / "unit"  # detection_synthetic.py


def _start(out: Path, marker: Path | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(UNIT_TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), str(marker or "")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen) -> str:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    return out


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key}"


def test_resume_after_sigkill_reaches_the_uninterrupted_weights(tmp_path):
    full = _start(tmp_path / "full", None)  # runs alongside the interrupted one (2 cores)
    marker = tmp_path / "epoch1.done"
    cut = _start(tmp_path / "cut", marker)
    deadline = time.monotonic() + TIMEOUT_S
    while not marker.exists():
        assert cut.poll() is None, cut.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the first epoch did not finish in time"
        time.sleep(0.01)
    cut.send_signal(signal.SIGKILL)
    cut.communicate()
    assert cut.returncode == -signal.SIGKILL

    killed = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert killed["epoch"] in (1, 2)  # killed before the last epoch's checkpoint
    resumed_out = _finish(_start(tmp_path / "cut", None))
    full_out = _finish(full)
    assert resumed_out == full_out  # the same best epoch is reported

    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    _assert_same_tensors(a["model"], b["model"], "model")
    assert a["history"] == b["history"]  # train losses and val AP of every epoch
    assert "optimizer" in killed and "optimizer" not in a and "optimizer" not in b  # complete: not kept
    _assert_same_tensors(load_checkpoint(tmp_path / "full" / "best.pt")["model"],
                         load_checkpoint(tmp_path / "cut" / "best.pt")["model"], "best")  # fmt: skip

    # the comparison is not vacuous: training moved the weights after the kill point
    changed = [k for k, v in killed["model"].items() if not torch.equal(v, a["model"][k])]
    assert len(changed) > len(a["model"]) // 2
