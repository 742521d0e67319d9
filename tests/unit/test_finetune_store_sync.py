"""Checkpoints mirrored to the artifact store: a run interrupted on one machine resumes on another
(a fresh local directory) from the stored checkpoint and ends with the uninterrupted run's weights."""

from __future__ import annotations

import pytest
import torch

from bobench.finetune.checkpoint import BEST, LAST, load_checkpoint
from bobench.finetune.loop import finetune
from bobench.finetune.store_sync import CheckpointSync
from bobench.store import LocalStore

torch.set_num_threads(1)

TINY = {"epochs": 3, "batch_size": 16, "lr": 1e-2, "warmup_epochs": 0.5}


class Stop(Exception):
    """Raised from the progress callback: the pod dies after an epoch's checkpoint was uploaded."""


def test_a_run_resumed_elsewhere_from_the_store_ends_with_the_uninterrupted_weights(tmp_path):
    store = LocalStore(tmp_path / "store", fsync=False)
    full = finetune("toy", "toy", tmp_path / "full", TINY, seed=5)

    first = CheckpointSync(store, "jobs/k/checkpoints", tmp_path / "node-a")
    (tmp_path / "node-a").mkdir()
    assert first.restore() == 0  # nothing stored yet: a fresh start

    def push_then_die_after_epoch_1(done, total, message):
        first.push()
        if done == 1:
            raise Stop(message)

    with pytest.raises(Stop):
        finetune("toy", "toy", tmp_path / "node-a", TINY, seed=5, progress=push_then_die_after_epoch_1)
    assert sorted(store.list("jobs/k/checkpoints")) == [
        "jobs/k/checkpoints/best.pt",
        "jobs/k/checkpoints/last.pt",
    ]

    second = CheckpointSync(store, "jobs/k/checkpoints", tmp_path / "node-b")
    (tmp_path / "node-b").mkdir()
    assert second.restore() == 2
    resumed = finetune("toy", "toy", tmp_path / "node-b", TINY, seed=5, progress=lambda *_: second.push())
    assert resumed["resumed_from_epoch"] == 1 and full["resumed_from_epoch"] == 0
    assert resumed["top1"] == full["top1"] and resumed["history"] == full["history"]
    stored = load_checkpoint(store.get_file("jobs/k/checkpoints/last.pt", tmp_path / "stored.pt"))
    reference = load_checkpoint(tmp_path / "full" / LAST)
    assert stored["run"]["epoch"] == 3
    for key, tensor in reference["model"].items():
        assert torch.equal(stored["model"][key], tensor), key


def test_push_uploads_only_checkpoints_that_changed(tmp_path):
    store = LocalStore(tmp_path / "store", fsync=False)
    sync = CheckpointSync(store, "p", tmp_path / "run")
    finetune("toy", "toy", tmp_path / "run", {**TINY, "epochs": 1}, seed=0)
    assert sync.push() == 2 and sync.push() == 0
    assert store.get_bytes(f"p/{BEST}") == (tmp_path / "run" / BEST).read_bytes()
