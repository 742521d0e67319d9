"""Fine-tuning recipe: the BoB preset, batch-scaled lr, the lr grid selected on val, timm augmentation
(RandAugment, mixup/cutmix, drop-path) resuming bit-identically, and the test top-1 interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bobench.bootstrap_ci import bootstrap_mean_ci
from bobench.errors import InvalidArgument
from bobench.finetune.checkpoint import BEST, LAST, load_checkpoint
from bobench.finetune.config import FinetuneConfig
from bobench.finetune.loop import finetune
from bobench.finetune.optim import scaled_lr

torch.set_num_threads(1)

TINY = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "warmup_epochs": 0.5}


class Stop(Exception):
    """Raised from the progress callback to simulate a crash after an epoch's checkpoint."""


def test_bob_recipe_is_the_papers_timm_recipe_and_given_keys_override_it():
    bob = FinetuneConfig.from_dict({"recipe": "bob"})
    assert (bob.epochs, bob.lr, bob.lr_scaling, bob.lr_base_batch_size, bob.warmup_epochs) == (
        100,
        1e-3,
        "linear",
        1024,
        5.0,
    )
    assert (bob.weight_decay, bob.layer_decay, bob.label_smoothing) == (0.05, 0.75, 0.1)
    assert (bob.randaugment, bob.mixup, bob.cutmix, bob.drop_path) == ("rand-m9-mstd0.5-inc1", 0.8, 1.0, 0.1)
    small = FinetuneConfig.from_dict({"recipe": "bob", "epochs": 3, "batch_size": 32})
    assert (small.epochs, small.batch_size, small.mixup) == (3, 32, 0.8)
    assert FinetuneConfig.from_dict(small.to_dict()) == small  # a saved config rebuilds as itself
    with pytest.raises(InvalidArgument, match="unknown recipe 'deit'"):
        FinetuneConfig.from_dict({"recipe": "deit"})
    with pytest.raises(InvalidArgument, match="even 'batch_size'"):
        FinetuneConfig.from_dict({"mixup": 0.8, "batch_size": 15})
    with pytest.raises(InvalidArgument, match="'lr_grid'"):
        FinetuneConfig.from_dict({"lr_grid": [1e-3, -1.0]})


def test_batch_scaled_lr_follows_timms_lr_base_rule():
    # timm train.py: lr = lr_base * (global batch / lr_base_size) ** (1 or 0.5)
    assert scaled_lr(1e-3, 256, 1024, "linear") == pytest.approx(2.5e-4)
    assert scaled_lr(1e-3, 256, 1024, "sqrt") == pytest.approx(1e-3 * math.sqrt(0.25))
    assert scaled_lr(1e-3, 256, 1024, "none") == 1e-3


def test_run_uses_the_batch_scaled_lr(tmp_path):
    m = finetune(
        "toy",
        "toy",
        tmp_path,
        {**TINY, "epochs": 1, "lr_scaling": "linear", "lr_base_batch_size": 64},
        seed=0,
    )
    assert m["lr"] == 1e-2 and m["effective_lr"] == pytest.approx(1e-2 * 16 / 64)


def test_lr_grid_trains_each_lr_and_keeps_the_best_validation_one(tmp_path):
    grid = {**TINY, "lr_grid": [1e-5, 3e-2]}
    m = finetune("toy", "toy", tmp_path, grid, seed=1)
    vals = [m["val_top1_lr0"], m["val_top1_lr1"]]
    assert m["val_top1"] == max(vals)
    assert m["lr"] == grid["lr_grid"][vals.index(max(vals))]  # ties keep the earlier lr
    for i, lr in enumerate(grid["lr_grid"]):
        alone = finetune("toy", "toy", tmp_path / f"alone-{i}", {**TINY, "lr": lr}, seed=1)
        assert alone["val_top1"] == vals[i]  # each grid entry is the run that lr alone makes
        assert load_checkpoint(tmp_path / f"lr-{i}" / LAST)["run"]["epoch"] == 2
    chosen = tmp_path / f"lr-{vals.index(max(vals))}" / BEST
    assert load_checkpoint(chosen)["val_top1"] == m["val_top1"]


def test_test_top1_carries_a_bootstrap_interval_over_test_images(tmp_path):
    from bobench.backbones import create_backbone
    from bobench.data import load_dataset
    from bobench.finetune.data import load_split
    from bobench.finetune.evaluation import evaluate_split
    from bobench.finetune.loop import Classifier

    m = finetune("toy", "toy", tmp_path, TINY, seed=2)
    loaded, dataset = create_backbone("toy", cache_dir=str(tmp_path)), load_dataset("toy")
    model = Classifier(loaded.module, loaded.spec.embed_dim, len(dataset.classes), 2)
    model.load_state_dict(load_checkpoint(tmp_path / BEST)["model"])
    test = evaluate_split(model, load_split(dataset, "test", loaded.spec), 64, torch.device("cpu"), "fp32")
    assert test["top1"] == m["top1"] and len(test["hits"]) == m["n_test"]
    low, high = bootstrap_mean_ci(test["hits"].astype(np.float64), seed=2)  # seeded by the run seed
    assert (m["top1_ci_low"], m["top1_ci_high"]) == (low, high)
    assert low <= m["top1"] <= high


@pytest.mark.parametrize(
    "augment",
    [{"randaugment": "rand-m9-mstd0.5-inc1"}, {"mixup": 0.8, "cutmix": 1.0}],
    ids=["randaugment", "mixup"],
)
def test_timm_augmentation_changes_training_and_resumes_bit_identically(tmp_path, augment):
    config = {**TINY, **augment}
    full = finetune("toy", "toy", tmp_path / "full", config, seed=3)
    plain = finetune("toy", "toy", tmp_path / "plain", TINY, seed=3)
    assert full["final_train_loss"] != plain["final_train_loss"]  # the augmentation did something

    def crash_after_first_epoch(done, total, message):
        if done == 1:
            raise Stop(message)

    with pytest.raises(Stop):
        finetune("toy", "toy", tmp_path / "cut", config, seed=3, progress=crash_after_first_epoch)
    resumed = finetune("toy", "toy", tmp_path / "cut", config, seed=3)
    assert resumed["resumed_from_epoch"] == 1
    a, b = (
        load_checkpoint(tmp_path / "full" / LAST)["model"],
        load_checkpoint(tmp_path / "cut" / LAST)["model"],
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["history"] == full["history"]


def test_drop_path_follows_timms_stochastic_depth_rule():
    import timm
    from timm.layers import DropPath

    from bobench.finetune.augment import set_drop_path

    ours = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32)
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, drop_path_rate=0.1)
    assert set_drop_path(ours, 0.1) == 12
    for mine, theirs in zip(ours.blocks, reference.blocks, strict=True):
        for slot in ("drop_path1", "drop_path2"):
            got, want = getattr(mine, slot), getattr(theirs, slot)
            assert type(got) is type(want)
            if isinstance(want, DropPath):
                assert got.drop_prob == pytest.approx(want.drop_prob)
    with pytest.raises(InvalidArgument, match="no drop-path slots"):
        set_drop_path(torch.nn.Linear(2, 2), 0.1)


def test_protocol_config_applies_the_recipe_under_the_keys_given():
    from bobench.protocols import get_protocol
    from bobench.protocols.finetune import run_config

    cfg = run_config({"recipe": "bob", "epochs": 2})
    assert (cfg.epochs, cfg.mixup, cfg.lr_base_batch_size) == (2, 0.8, 1024)  # not the defaults' 0.0 / 256
    assert run_config(None) == FinetuneConfig()
    assert get_protocol("finetune").version == "2"
    with pytest.raises(InvalidArgument, match="unknown config key"):
        run_config({"lr_grids": [1e-3]})
