"""Backbone adaptation for detection: every offline timm family (EfficientNet, ResNet, ConvNeXt, ViT)
under every head trains a step; the pyramid follows the backbone's feature_info; BoB's three regimes
(frozen really freezes, random is the same architecture with other weights); bad configs are named.

Backbones are the project's registered offline ones (detection_synthetic.FAMILIES); the images are the
synthetic rectangles of detection_synthetic (64 px, so a build + step takes about a second on CPU).
"""

from __future__ import annotations

import math

import pytest
import torch
from detection_synthetic import FAMILIES, loaded_backbone, network_of, small_detector, synthetic_boxes

from bobench.detection.model import HEADS, backbone_of, build_detector, pick_levels
from bobench.detection.train import TrainConfig, sample, train_detector
from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol

LOSSES = {
    "faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "mask_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"},
    "retinanet": {"classification", "bbox_regression"},
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
}


def _batch(masks: bool, n: int = 2):
    ds = synthetic_boxes(n=n, masks=masks)
    pairs = [sample(ds, i, False, False, masks) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _heads(detector) -> list[torch.nn.Module]:
    if hasattr(detector, "rpn"):
        return [detector.rpn, detector.roi_heads]
    return [detector.head]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_under_every_head(family, head):
    torch.manual_seed(0)
    detector = small_detector(FAMILIES[family], head=head)
    images, targets = _batch(masks=head == "mask_rcnn")
    detector.train()
    losses = detector(images, targets)
    assert set(losses) == LOSSES[head]
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()

    for part in [detector.backbone.fpn, *_heads(detector)]:
        params = [p for p in part.parameters() if p.requires_grad]
        assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        assert any(p.grad.abs().sum() > 0 for p in params)
    stem = next(iter(backbone_of(detector).parameters()))  # finetune: gradients reach the first layer
    assert stem.grad is not None and stem.grad.abs().sum() > 0

    detector.eval()
    with torch.no_grad():
        out = detector(images)
    assert len(out) == 2 and {"boxes", "scores", "labels"} <= set(out[0])
    assert out[0]["boxes"].shape[1] == 4 and out[0]["boxes"].shape[0] <= 20
    if head == "mask_rcnn":
        assert out[0]["masks"].shape[-2:] == images[0].shape[-2:]


def _expected_levels(info: list[dict]) -> tuple[list[int], bool]:
    """Written from the contract, independently of pick_levels: the last entry of each stride >= 4
    (deepest four); a plain backbone (one stride) uses its last block."""
    reductions = [int(f["reduction"]) for f in info]
    if len(set(reductions)) == 1:
        return [len(info) - 1], True
    last = {r: i for i, r in enumerate(reductions) if r >= 4}
    return sorted(last.values())[-4:], False


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_pyramid_sees_what_feature_info_says(family):
    network = network_of(FAMILIES[family])
    info = [dict(f) for f in network.feature_info]
    indices, plain = _expected_levels(info)
    detector = small_detector(FAMILIES[family], network=network)
    pyramid = detector.backbone
    assert pyramid.body.indices == indices and pyramid.plain == plain == (family == "vit")

    x = torch.randn(1, 3, 64, 96)  # not square, so height and width strides are both checked
    with torch.no_grad():
        maps = pyramid.body(x)
        levels = pyramid(x)
    assert len(maps) == len(indices)
    for m, i in zip(maps, indices, strict=True):
        r = int(info[i]["reduction"])
        assert tuple(m.shape[1:]) == (info[i]["num_chs"], 64 // r, 96 // r), (i, info[i])

    if plain:
        base = int(info[-1]["reduction"])
        assert pyramid.fpn.scales[1].in_channels == info[-1]["num_chs"]
        assert pyramid.strides == [base // 4, base // 2, base, base * 2, base * 4]
    else:
        inner = [block[0].in_channels for block in pyramid.fpn.inner_blocks]
        assert inner == [info[i]["num_chs"] for i in indices]
        assert pyramid.strides == [int(info[i]["reduction"]) for i in indices] + [
            2 * int(info[-1]["reduction"])
        ]
    assert list(levels) == [*(str(k) for k in range(len(pyramid.strides) - 1)), "pool"]
    for level, stride in zip(levels.values(), pyramid.strides, strict=True):
        assert tuple(level.shape) == (1, 32, math.ceil(64 / stride), math.ceil(96 / stride)), stride

    anchors = detector.rpn.anchor_generator.sizes
    assert anchors == tuple((int(8.0 * s),) for s in pyramid.strides)  # anchor_scale 8 x stride


def test_pick_levels_takes_the_last_map_of_each_stride():
    info = [{"reduction": r} for r in (2, 2, 4, 4, 8, 8, 16, 32, 32)]
    assert pick_levels(info) == ([3, 5, 6, 8], False)
    assert pick_levels([{"reduction": r} for r in (4, 8, 16, 32, 64)]) == ([1, 2, 3, 4], False)  # deepest 4
    assert pick_levels([{"reduction": 14}] * 12) == ([11], True)
    with pytest.raises(InvalidArgument, match="stride >= 4"):
        pick_levels([{"reduction": 1}, {"reduction": 2}])


def test_fcos_anchor_points_are_one_stride_wide_and_retinanet_uses_the_anchor_scale():
    fcos = small_detector("resnet18-random", head="fcos", anchor_scale=8.0)
    strides = fcos.backbone.strides
    assert fcos.anchor_generator.sizes == tuple((s,) for s in strides)
    assert fcos.anchor_generator.num_anchors_per_location() == [1] * len(strides)
    retina = small_detector("resnet18-random", head="retinanet", anchor_scale=4.0)
    assert retina.anchor_generator.sizes == tuple((4 * s,) for s in strides)
    assert retina.anchor_generator.num_anchors_per_location() == [3] * len(strides)


def _split(detector) -> tuple[dict, dict]:
    """(backbone state incl. BatchNorm buffers, neck + heads parameters), cloned."""
    network = backbone_of(detector)
    own = {id(p) for p in network.parameters()}
    rest = {n: p.detach().clone() for n, p in detector.named_parameters() if id(p) not in own}
    return _state(network), rest


def _one_epoch(detector, tmp_path, name: str) -> None:
    ds = synthetic_boxes(n=4)
    cfg = TrainConfig(epochs=1, batch_size=2, lr=0.05, warmup_steps=0, hflip=False)
    train_detector(detector, ds, tmp_path / name, cfg, seed=0, identity={"t": name},
                   train_split=[0, 1, 2, 3], val_split=[])  # fmt: skip


@pytest.mark.parametrize("name", ["efficientnet_lite0", "vit_tiny_patch16_224-random"])
def test_frozen_regime_keeps_backbone_weights_and_statistics_through_training(name, tmp_path):
    detector = small_detector(name, regime="frozen")
    network = backbone_of(detector)
    assert not any(p.requires_grad for p in network.parameters())
    detector.train()
    assert not network.training  # the frozen backbone runs in eval mode while the heads train
    before, heads_before = _split(detector)
    _one_epoch(detector, tmp_path, "frozen")  # two AdamW steps of the real training loop
    after, heads_after = _split(detector)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert all(p.grad is None for p in network.parameters())
    assert any(not torch.equal(heads_before[k], heads_after[k]) for k in heads_before)  # the rest trained


def _batch_norm_buffers(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_finetune_trains_the_backbone_with_frozen_statistics_and_random_with_live_ones(tmp_path):
    name = "efficientnet_lite0"  # BatchNorm throughout
    tuned = small_detector(name, regime="finetune")
    before, _ = _split(tuned)
    _one_epoch(tuned, tmp_path, "finetune")
    after, _ = _split(tuned)
    stats = _batch_norm_buffers(before)
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before["conv_stem.weight"], after["conv_stem.weight"])  # the backbone trained

    scratch = small_detector(name, regime="random")
    before, _ = _split(scratch)
    _one_epoch(scratch, tmp_path, "random")
    after, _ = _split(scratch)
    # live BatchNorm: every layer the features pass through updates its statistics (bn2 follows
    # conv_head, after the deepest stage: forward_intermediates stops before it)
    stats = [k for k in _batch_norm_buffers(before) if not k.startswith("bn2.")]
    assert stats and all(not torch.equal(before[k], after[k]) for k in stats)


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def test_random_regime_is_the_pretrained_architecture_with_other_weights():
    name = "efficientnet_lite0"  # the pretrained family here (weights from its pip package)
    original = {k: v.clone() for k, v in loaded_backbone(name).module.network.state_dict().items()}
    tuned = _state(backbone_of(small_detector(name, regime="finetune")))
    scratch = _state(backbone_of(small_detector(name, regime="random", seed=0)))
    assert _shapes(tuned) == _shapes(scratch) == _shapes(original)
    for key, value in tuned.items():  # finetune starts from the backbone's own weights
        assert torch.equal(value, original[key]), key
    weights = [k for k, v in original.items() if v.ndim >= 2]
    assert weights and all(not torch.equal(scratch[k], original[k]) for k in weights)
    again = _state(backbone_of(small_detector(name, regime="random", seed=0)))
    other = _state(backbone_of(small_detector(name, regime="random", seed=1)))
    assert all(torch.equal(again[k], scratch[k]) for k in scratch)  # seeded
    assert all(not torch.equal(other[k], scratch[k]) for k in weights)


def test_random_regime_keeps_the_vit_architecture():
    name = "vit_tiny_patch16_224-random"
    original = loaded_backbone(name).module.network.state_dict()
    scratch = backbone_of(small_detector(name, regime="random", seed=3))
    assert _shapes(scratch.state_dict()) == _shapes(original)
    assert type(scratch) is type(loaded_backbone(name).module.network)


def test_vit_is_rebuilt_for_any_input_size_with_its_weights():
    network = network_of("vit_tiny_patch16_224-random")
    assert network.dynamic_img_size is False
    detector = small_detector("vit_tiny_patch16_224-random", network=network, min_size=80, max_size=112)
    assert backbone_of(detector).dynamic_img_size is True
    detector.eval()
    with torch.no_grad():
        out = detector([torch.rand(3, 80, 112)])  # padded to 96 x 128 px: 6 x 8 patches, not 224 px's 14 x 14
    assert len(out) == 1


BAD_BUILD = [
    ({"head": "cascade_rcnn"}, "head must be one of"),
    ({"regime": "linear"}, "regime must be one of"),
]


@pytest.mark.parametrize(("config", "message"), BAD_BUILD, ids=["head", "regime"])
def test_build_detector_names_a_bad_head_or_regime(config, message):
    with pytest.raises(InvalidArgument, match=message):
        small_detector("resnet18-random", **config)


def test_a_backbone_without_timm_feature_info_is_refused_by_name():
    from bobench.detection.model import DetectorConfig

    with pytest.raises(InvalidArgument, match="'toy-conv3' has no timm feature_info"):
        build_detector(torch.nn.Conv2d(3, 8, 3), "toy-conv3", num_classes=1, mean=(0.5,) * 3,
                       std=(0.5,) * 3, config=DetectorConfig())  # fmt: skip


BAD_CONFIG = [
    ("detection", {"head": "yolo"}, "head must be one of"),
    ("detection", {"regime": "linear"}, "regime must be one of"),
    ("detection", {"schedule": "poly"}, "schedule must be one of"),
    ("detection", {"fpn_channels": 4}, "fpn_channels must be an integer in 8..1024"),
    ("detection", {"min_size": 900, "max_size": 800}, "min_size must be <= max_size"),
    ("detection", {"epochs": 0}, "epochs must be an integer"),
    ("detection", {"batch_size": 10**6}, "batch_size must be an integer"),
    ("detection", {"lr": 0.0}, "lr must be a number in (0.0, 1.0]"),
    ("detection", {"weight_decay": -0.1}, "weight_decay must be a number in [0.0, 10.0]"),
    ("detection", {"anchor_scale": 100.0}, "anchor_scale"),
    ("detection", {"hflip": 1}, "hflip must be true or false"),
    ("detection", {"resamples": -1}, "resamples"),
    ("instance_segmentation", {"head": "faster_rcnn"}, "head must be mask_rcnn"),
    ("instance_segmentation", {"warmup_steps": -5}, "warmup_steps"),
    ("ood_detection", {"source_sites": []}, "source_sites must be a non-empty list"),
    ("ood_detection", {"source_sites": "YELL"}, "source_sites must be a non-empty list"),
    ("ood_detection", {"target": 3}, "target must be null or a dataset ref"),
    ("ood_detection", {"detections_per_image": 0}, "detections_per_image"),
]


@pytest.mark.parametrize(("protocol", "config", "message"), BAD_CONFIG,
                         ids=[f"{p}-{sorted(c)[0]}" for p, c, _ in BAD_CONFIG])  # fmt: skip
def test_bad_protocol_config_is_refused_when_resolved_naming_the_key(protocol, config, message):
    with pytest.raises(InvalidArgument) as info:
        get_protocol(protocol).resolve_config(config)
    assert message in str(info.value) and protocol in str(info.value)


def test_no_weight_decay_is_a_valid_recipe():
    assert get_protocol("detection").resolve_config({"weight_decay": 0.0})["weight_decay"] == 0.0


def test_checkpoints_keep_what_a_resume_needs_and_a_completed_run_trains_no_more(tmp_path, monkeypatch):
    """Epochs before the last keep the optimizer state (a resume needs it); the last epoch's last.pt
    keeps the weights only, and no best.pt repeats them without a val split. A second call on the
    same folder reads those weights back and trains nothing."""
    from bobench.detection import train as train_module
    from bobench.finetune.checkpoint import load_checkpoint

    saved: list[tuple[str, set]] = []
    save = train_module.save_checkpoint
    monkeypatch.setattr(
        train_module,
        "save_checkpoint",
        lambda path, state: (saved.append((path.name, set(state))), save(path, state)),
    )
    ds = synthetic_boxes(n=4)
    cfg = TrainConfig(epochs=2, batch_size=2, lr=0.05, warmup_steps=0, hflip=False)
    out = tmp_path / "run"

    def train(detector):
        return train_detector(detector, ds, out, cfg, seed=0, identity={"t": "ckpt"},
                              train_split=[0, 1, 2, 3], val_split=[])  # fmt: skip

    trained = small_detector("resnet18-random", regime="random", seed=1)
    summary = train(trained)
    assert [name for name, _ in saved] == ["last.pt", "last.pt"] and not (out / "best.pt").exists()
    assert "optimizer" in saved[0][1] and "optimizer" not in saved[1][1]
    assert summary["best_epoch"] == 2
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2
    again = small_detector("resnet18-random", regime="random", seed=2)  # other initial weights
    saved.clear()
    monkeypatch.setattr(train_module, "_train_epoch", lambda *a, **k: pytest.fail("trained again"))
    assert train(again)["best_epoch"] == 2 and saved == []
    for key, value in trained.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
