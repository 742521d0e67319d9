"""The OOD protocol on the toy backbone and toy dataset through a real LocalContext (torch embedder)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.metrics import l2_normalize
from bobench.protocols.ood import map_target_labels

torch.set_num_threads(1)

FAST = {"grid": [0.1, 1.0, 10.0, 100.0], "max_iter": 500}


def _permuted(ds, order: list[int], name: str):
    """The same images with the class list reordered (labels remapped so every image keeps its class name)."""
    classes = [ds.classes[i] for i in order]
    new_index = {old: new for new, old in enumerate(order)}
    labels = np.array([new_index[int(y)] for y in ds.labels], dtype=np.int64)
    return dataclasses.replace(
        ds, name=name, classes=classes, labels=labels, fingerprint=ds.fingerprint + name
    )


def _renamed(ds, old: str, new: str, name: str):
    classes = [new if c == old else c for c in ds.classes]
    return dataclasses.replace(ds, name=name, classes=classes, fingerprint=ds.fingerprint + name)


def _subset(ds, keep: list[str], name: str):
    """Only the items of the classes in `keep`, with a shorter class list."""
    keep_idx = [ds.classes.index(c) for c in keep]
    items = np.flatnonzero(np.isin(ds.labels, keep_idx))
    labels = np.array([keep_idx.index(int(y)) for y in ds.labels[items]], dtype=np.int64)
    test = np.flatnonzero(np.isin(items, ds.split("test")))
    return dataclasses.replace(
        ds, name=name, classes=list(keep), labels=labels, splits={"test": test},
        load=lambda i: ds.load(int(items[i])), fingerprint=ds.fingerprint + name, sources=(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def toy_ctx(tmp_path_factory):
    from bobench.backbones import create_backbone
    from bobench.battle.context import LocalContext
    from bobench.data import load_dataset
    from bobench.embed import make_embedder
    from bobench.embed.cache import FeatureCache

    root = tmp_path_factory.mktemp("ood")
    ds = load_dataset("toy")
    embedder = make_embedder("torch", "toy", batch_size=32, cache_dir=str(root))
    targets = {
        "toy_permuted": _permuted(ds, [2, 0, 3, 1], "toy_permuted"),
        "toy_renamed": _renamed(ds, ds.classes[0], "hexagon", "toy_renamed"),
        "toy_subset": _subset(ds, [ds.classes[1], ds.classes[3]], "toy_subset"),
    }

    def loader(ref):
        return targets[ref] if isinstance(ref, str) and ref in targets else load_dataset(ref)

    return LocalContext(
        embedder.spec, ds, cache=FeatureCache(root), embedder_factory=lambda: embedder,
        dataset_loader=loader, module_factory=lambda: create_backbone("toy", cache_dir=str(root)).module,
    )  # fmt: skip


def test_corrupted_test_features_differ_from_clean_ones(toy_ctx):
    clean, y_clean = toy_ctx.features("test")
    noisy, y_noisy = toy_ctx.features("test", variant="corrupt:gaussian_noise:5")
    assert clean.shape == noisy.shape
    np.testing.assert_array_equal(y_clean, y_noisy)
    assert not np.allclose(clean, noisy, atol=1e-3)


def test_corruption_metrics_are_consistent_and_match_a_sklearn_probe(toy_ctx):
    from sklearn.linear_model import LogisticRegression

    config = {**FAST, "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5]}
    m = get_protocol("ood").evaluate(toy_ctx, config, 0)
    pairs = [f"top1_{n}_s{s}" for n in ("gaussian_noise", "contrast") for s in (1, 5)]
    assert all(0.0 <= m[k] <= 1.0 for k in pairs)
    assert m["top1_contrast"] == pytest.approx((m["top1_contrast_s1"] + m["top1_contrast_s5"]) / 2)
    assert m["mca"] == pytest.approx(np.mean([m[k] for k in pairs]))
    assert m["ood_top1"] == m["mca"]
    assert m["gap"] == m["id_top1"] - m["ood_top1"]
    assert m["mca_drop"] == m["id_top1"] - m["mca"]
    assert m["mca_relative_drop"] == pytest.approx(m["mca_drop"] / m["id_top1"])
    assert m["n_corruption_pairs"] == 4 and "target_top1" not in m

    # independent reference: scikit-learn at the chosen C, refit on train+val
    x = {s: l2_normalize(toy_ctx.features(s)[0]) for s in ("train", "val")}
    y = {s: toy_ctx.features(s)[1] for s in ("train", "val")}
    ref = LogisticRegression(C=m["chosen_C"], max_iter=5000, tol=1e-8)
    ref.fit(np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]]))
    n_test = m["n_test"]
    for key, variant in (("id_top1", None), ("top1_gaussian_noise_s5", "corrupt:gaussian_noise:5")):
        xt, yt = toy_ctx.features("test", variant=variant)
        ref_acc = float((ref.predict(l2_normalize(xt)) == yt).mean())
        assert abs(m[key] - ref_acc) <= 1.0 / n_test + 1e-12, key


def test_natural_shift_maps_labels_by_class_name(toy_ctx):
    m = get_protocol("ood").evaluate(toy_ctx, {**FAST, "corruptions": [], "target": "toy_permuted"}, 0)
    # same test images with a reordered class list: mapping by name must give the in-distribution score
    assert m["target_top1"] == m["id_top1"]
    assert m["ood_top1"] == m["target_top1"] and m["gap"] == 0.0
    assert "mca" not in m


def test_gap_is_id_minus_ood_on_a_shifted_target(toy_ctx):
    config = {**FAST, "corruptions": ["fog"], "severities": [3], "target": {"name": "toy", "size_px": 20}}
    m = get_protocol("ood").evaluate(toy_ctx, config, 0)
    assert m["ood_top1"] == m["target_top1"]
    assert m["gap"] == m["id_top1"] - m["target_top1"]
    assert "top1_fog_s3" in m and m["n_target"] > 0


def test_target_with_an_unknown_class_name_is_an_error(toy_ctx):
    with pytest.raises(InvalidArgument, match="hexagon"):
        get_protocol("ood").evaluate(toy_ctx, {**FAST, "corruptions": [], "target": "toy_renamed"}, 0)


def test_target_subset_needs_masking_and_masking_restricts_predictions(toy_ctx):
    with pytest.raises(InvalidArgument, match="mask_target_classes"):
        get_protocol("ood").evaluate(toy_ctx, {**FAST, "corruptions": [], "target": "toy_subset"}, 0)
    m = get_protocol("ood").evaluate(
        toy_ctx, {**FAST, "corruptions": [], "target": "toy_subset", "mask_target_classes": True}, 0
    )
    assert m["target_classes"] == 2 and 0.0 <= m["target_top1"] <= 1.0


def test_map_target_labels_by_name():
    mapped, allowed = map_target_labels(
        ["a", "b", "c"], ["c", "a", "b"], np.array([0, 1, 2, 0]), mask=False, where="t"
    )
    np.testing.assert_array_equal(mapped, [2, 0, 1, 2])
    assert allowed is None
    mapped, allowed = map_target_labels(["a", "b", "c"], ["c", "a"], np.array([1, 0]), mask=True, where="t")
    np.testing.assert_array_equal(mapped, [0, 2])
    assert allowed == [0, 2]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"corruptions": [], "target": None}, "nothing to evaluate"),
        ({"corruptions": ["gausian_noise"]}, "did you mean 'gaussian_noise'"),
        ({"severities": [6]}, "severity 6"),
        ({"severities": []}, "severities"),
        ({"corruption": ["fog"]}, "unknown config key"),
    ],
)
def test_bad_config_is_rejected_before_any_work(config, message):
    class NoFeatures:
        def features(self, *args, **kwargs):
            raise AssertionError("features must not be read for an invalid config")

    with pytest.raises(InvalidArgument, match=message):
        get_protocol("ood").evaluate(NoFeatures(), config, 0)


def test_all_corruptions_and_severities_expand_to_the_full_grid():
    from bobench.data.corruptions import CORRUPTIONS
    from bobench.protocols.ood import resolve_corruptions, resolve_severities

    assert resolve_corruptions("all") == list(CORRUPTIONS) and len(CORRUPTIONS) == 19
    assert resolve_severities("all") == [1, 2, 3, 4, 5]
