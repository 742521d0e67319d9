"""Fine-tuning: resume after an interruption gives the same weights, the recipe pieces, the job files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bobench.errors import FailedPrecondition, InvalidArgument
from bobench.finetune.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from bobench.finetune.config import FinetuneConfig
from bobench.finetune.data import SplitTensors, train_batches
from bobench.finetune.evaluation import evaluate_split
from bobench.finetune.job import read_status
from bobench.finetune.loop import finetune
from bobench.finetune.optim import param_groups, warmup_cosine

torch.set_num_threads(1)

TINY = {"epochs": 3, "batch_size": 16, "lr": 1e-2, "warmup_epochs": 0.5}


class Stop(Exception):
    """Raised from the progress callback to simulate a crash after an epoch's checkpoint."""


def _model_state(run_dir):
    return load_checkpoint(run_dir / LAST)["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    full = finetune("toy", "toy", tmp_path / "full", TINY, seed=3)

    def crash_after_first_epoch(done, total, message):
        if done == 1:
            raise Stop(message)

    with pytest.raises(Stop):
        finetune("toy", "toy", tmp_path / "cut", TINY, seed=3, progress=crash_after_first_epoch)
    assert load_checkpoint(tmp_path / "cut" / LAST)["run"]["epoch"] == 1
    resumed = finetune("toy", "toy", tmp_path / "cut", TINY, seed=3)

    assert resumed["resumed_from_epoch"] == 1 and full["resumed_from_epoch"] == 0
    _assert_same_weights(_model_state(tmp_path / "full"), _model_state(tmp_path / "cut"))
    for key in ("top1", "top5", "val_top1", "best_epoch", "final_train_loss", "history"):
        assert resumed[key] == full[key], key
    assert [h["epoch"] for h in full["history"]] == [1, 2, 3]


def test_a_different_seed_gives_different_weights_and_no_resume_starts_over(tmp_path):
    finetune("toy", "toy", tmp_path / "a", TINY, seed=0)
    finetune("toy", "toy", tmp_path / "b", TINY, seed=1)
    a, b = _model_state(tmp_path / "a"), _model_state(tmp_path / "b")
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the resume test above could not pass vacuously
    again = finetune("toy", "toy", tmp_path / "a", TINY, seed=0, resume=False)
    assert again["resumed_from_epoch"] == 0
    _assert_same_weights(a, _model_state(tmp_path / "a"))


def test_resuming_with_another_config_is_refused(tmp_path):
    finetune("toy", "toy", tmp_path, {**TINY, "epochs": 1}, seed=0)
    with pytest.raises(FailedPrecondition, match="different run"):
        finetune("toy", "toy", tmp_path, {**TINY, "epochs": 2}, seed=0)


def test_reported_test_score_is_the_best_val_checkpoint(tmp_path):
    m = finetune("toy", "toy", tmp_path, {**TINY, "epochs": 4}, seed=0)
    vals = [h["val_top1"] for h in m["history"]]
    assert m["val_top1"] == max(vals) and m["best_epoch"] == vals.index(max(vals)) + 1
    assert load_checkpoint(tmp_path / BEST)["epoch"] == m["best_epoch"]
    assert m["top5"] is None  # toy has 4 classes
    assert (m["device"], m["precision"]) == ("cpu", "fp32")


def test_evaluate_split_matches_sklearn_top_k():
    from sklearn.metrics import accuracy_score, top_k_accuracy_score

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 6))
    images = torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 6, (40,))
    wrapped = nn.Sequential(_Float(), model)
    got = evaluate_split(wrapped, SplitTensors(images, labels), 16, torch.device("cpu"), "fp32")
    with torch.no_grad():
        logits = wrapped(images).numpy()
    assert got["top1"] == pytest.approx(accuracy_score(labels.numpy(), logits.argmax(1)))
    assert got["top5"] == pytest.approx(top_k_accuracy_score(labels.numpy(), logits, k=5, labels=range(6)))


class _Float(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255


def test_layer_wise_lr_decay_groups_follow_depth():
    backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 4), nn.Linear(4, 4))
    head = nn.Linear(4, 2)
    groups = param_groups(backbone, head, lr=1.0, weight_decay=0.05, layer_decay=0.5, n_groups=2)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    # four owners split into two depth groups: {0, 1} -> decay^2, {2, 3} -> decay^1; head -> full lr
    assert lr_of[id(backbone[0].weight)] == (0.25, 0.05)
    assert lr_of[id(backbone[1].weight)] == (0.25, 0.0)  # norm weight: no weight decay
    assert lr_of[id(backbone[2].weight)] == (0.5, 0.05)
    assert lr_of[id(backbone[3].bias)] == (0.5, 0.0)
    assert lr_of[id(head.weight)] == (1.0, 0.05)
    assert len(lr_of) == len(list(backbone.parameters())) + len(list(head.parameters()))


def _timm_pair(arch: str):
    """(timm's own classifier, bobench's backbone + head) for one architecture, same parameter names
    under `network.` / `head`."""
    import timm

    from bobench.backbones.spec import BackboneSpec
    from bobench.backbones.wrapper import PreprocessingWrapper

    kwargs = {"img_size": 32} if arch.startswith("vit") else {}
    reference = timm.create_model(arch, num_classes=3, **kwargs)
    spec = BackboneSpec(name=arch, source="timm", model_id=arch, family="cnn", pretraining_method="random",
                        pretraining_data="none", input_size=32)  # fmt: skip
    backbone = PreprocessingWrapper(timm.create_model(arch, num_classes=0, **kwargs), spec)
    return reference, backbone, nn.Linear(reference.num_features, 3)


@pytest.mark.parametrize("arch", ["convnext_atto", "vit_tiny_patch16_224", "resnet18"])
def test_layer_decay_and_weight_decay_equal_timms_param_groups_layer_decay(arch):
    from timm.optim import param_groups_layer_decay

    reference, backbone, head = _timm_pair(arch)
    no_wd = reference.no_weight_decay() if hasattr(reference, "no_weight_decay") else ()
    theirs = param_groups_layer_decay(
        reference, weight_decay=0.05, no_weight_decay_list=no_wd, layer_decay=0.75
    )
    by_name = {id(p): n for n, p in reference.named_parameters()}
    expected = {by_name[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in theirs for p in g["params"]}
    ours = param_groups(backbone, head, lr=2.0, weight_decay=0.05, layer_decay=0.75, n_groups=12)
    names = {id(p): n for n, p in backbone.named_parameters()}
    names.update({id(p): f"head.{n}" for n, p in head.named_parameters()})
    got = {names[id(p)]: (g["lr"] / 2.0, g["weight_decay"]) for g in ours for p in g["params"]}
    classifier = reference.default_cfg["classifier"]
    for name, (scale, wd) in expected.items():
        mine = f"head.{name.rsplit('.', 1)[1]}" if name.startswith(classifier + ".") else f"network.{name}"
        assert got.pop(mine) == pytest.approx((scale, wd)), name
    assert not got  # every parameter of ours is accounted for
    assert ours[-1]["lr"] == 2.0  # the head's groups come last, at the full lr


def test_vit_position_embedding_and_class_token_get_no_weight_decay():
    _, backbone, head = _timm_pair("vit_tiny_patch16_224")
    groups = param_groups(backbone, head, lr=1.0, weight_decay=0.05, layer_decay=0.75, n_groups=12)
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    network = backbone.network
    assert wd_of[id(network.pos_embed)] == 0.0 and wd_of[id(network.cls_token)] == 0.0
    assert (
        wd_of[id(network.blocks[0].norm1.weight)] == 0.0 and wd_of[id(network.blocks[0].attn.qkv.bias)] == 0.0
    )
    assert wd_of[id(network.blocks[0].attn.qkv.weight)] == 0.05


def test_fallback_rule_exempts_token_parameters_by_name():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
            self.proj = nn.Linear(4, 4)

    backbone = Tokens()
    groups = param_groups(backbone, nn.Linear(4, 2), lr=1.0, weight_decay=0.05, layer_decay=0.5, n_groups=2)
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert wd_of[id(backbone.cls_token)] == 0.0 and wd_of[id(backbone.proj.weight)] == 0.05


def test_warmup_then_cosine_schedule():
    f = warmup_cosine(total_steps=12, warmup_steps=3, min_ratio=0.1)
    assert [f(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert f(3) == pytest.approx(1.0) and f(11) == pytest.approx(0.1)
    after = [f(s) for s in range(3, 12)]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    mid = 3 + 4  # halfway through the 8 decay intervals
    assert f(mid) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_epoch_batches_are_a_function_of_seed_and_epoch_only():
    data = SplitTensors(
        torch.arange(10 * 3 * 2 * 2, dtype=torch.uint8).reshape(10, 3, 2, 2), torch.arange(10)
    )
    first = [y.tolist() for _, y in train_batches(data, 4, seed=5, epoch=2, flip=True)]
    again = [y.tolist() for _, y in train_batches(data, 4, seed=5, epoch=2, flip=True)]
    other = [y.tolist() for _, y in train_batches(data, 4, seed=5, epoch=3, flip=True)]
    assert first == again and first != other
    assert [len(b) for b in first] == [4, 4]  # the incomplete last batch is dropped
    ((images, labels),) = train_batches(data, 10, seed=5, epoch=0, flip=True)  # one batch: every item
    flipped = [not torch.equal(im, data.images[int(y)]) for im, y in zip(images, labels, strict=True)]
    assert 0 < sum(flipped) < 10
    for im, y, was_flipped in zip(images, labels, flipped, strict=True):
        assert torch.equal(im, data.images[int(y)].flip(-1) if was_flipped else data.images[int(y)])


def test_an_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / LAST
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [LAST]  # no temporary file left behind


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "'epochs'"),
        ({"lr": -1.0}, "'lr'"),
        ({"layer_decay": 1.5}, "'layer_decay'"),
        ({"precision": "int8"}, "'precision'"),
        ({"learning_rate": 0.1}, "unknown key"),
        ({"min_lr": 1.0, "lr": 0.1}, "min_lr"),
    ],
)
def test_bad_config_values_are_named(values, message):
    with pytest.raises(InvalidArgument, match=message):
        FinetuneConfig.from_dict(values)


def test_cli_writes_status_metrics_and_honours_flag_precedence(tmp_path, monkeypatch):
    from bobench.cli import main

    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("epochs: 5\nbatch_size: 16\nlr: 0.01\n")
    out = tmp_path / "run"
    rc = main(["finetune", "toy", "toy", "--out", str(out), "--recipe", str(recipe), "--epochs", "2"])
    assert rc == 0 and read_status(out) == "finished"
    written = json.loads((out / "metrics.json").read_text())
    assert written["config"]["epochs"] == 2 and written["config"]["batch_size"] == 16  # flag > file > default
    assert 0.0 <= written["metrics"]["top1"] <= 1.0 and written["environment"]["device"] == "cpu"

    failed = tmp_path / "failed"
    rc = main(["finetune", "no_such_backbone", "toy", "--out", str(failed)])
    assert rc != 0 and read_status(failed) == "failed"
    assert "no_such_backbone" in (failed / "error.txt").read_text()


def test_finetune_protocol_reuses_its_checkpoints(tmp_path):
    from bobench.backbones import create_backbone, get_spec
    from bobench.battle.context import LocalContext
    from bobench.config import Settings
    from bobench.data import load_dataset
    from bobench.embed.cache import FeatureCache
    from bobench.protocols import get_protocol

    def no_embedder():
        raise AssertionError("fine-tuning must not need the embedder")

    ctx = LocalContext(
        get_spec("toy"), load_dataset("toy"), cache=FeatureCache(tmp_path), embedder_factory=no_embedder,
        dataset_loader=load_dataset, module_factory=lambda: create_backbone("toy", cache_dir=str(tmp_path)).module,
        settings=Settings(cache_dir=str(tmp_path)),
    )  # fmt: skip
    protocol = get_protocol("finetune")
    first = protocol.evaluate(ctx, {"epochs": 2, "batch_size": 16}, 0)
    second = protocol.evaluate(ctx, {"epochs": 2, "batch_size": 16}, 0)
    assert first["checkpoint_dir"].startswith(str(tmp_path / "finetune"))
    assert second["resumed_from_epoch"] == 2 and second["top1"] == first["top1"]
    assert "history" not in first and np.isfinite(first["test_loss"])
    with pytest.raises(InvalidArgument, match="unknown config key"):
        protocol.evaluate(ctx, {"epoch": 2}, 0)


def test_the_callers_global_rng_is_left_as_it_was(tmp_path):
    torch.manual_seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(123)
    np.random.seed(123)
    finetune("toy", "toy", tmp_path, {**TINY, "epochs": 1}, seed=9)
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])


def test_parameters_outside_the_timm_network_train_at_the_heads_lr():
    import timm

    class TrunkAndProjection(nn.Module):  # like open_clip's TimmModel: a timm trunk, then a projection
        def __init__(self) -> None:
            super().__init__()
            self.trunk = timm.create_model("resnet18", num_classes=0)
            self.proj = nn.Linear(512, 8)

    backbone, head = TrunkAndProjection(), nn.Linear(8, 2)
    groups = param_groups(backbone, head, lr=1.0, weight_decay=0.05, layer_decay=0.5, n_groups=12)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert lr_of[id(backbone.proj.weight)] == (1.0, 0.05) and lr_of[id(backbone.proj.bias)] == (1.0, 0.0)
    assert lr_of[id(backbone.trunk.conv1.weight)][0] < 0.1  # the stem is deep in the decay
    assert len(lr_of) == len(list(backbone.parameters())) + 2
    assert all(p is not head.weight for g in groups[:-2] for p in g["params"])  # the head's groups last
