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
    assert m["mca_partial"] == pytest.approx(np.mean([m[k] for k in pairs]))
    assert m["ood_top1"] == m["mca_partial"]
    assert m["gap"] == m["id_top1"] - m["ood_top1"]
    assert m["mca_partial_drop"] == m["id_top1"] - m["mca_partial"]
    assert m["mca_partial_relative_drop"] == pytest.approx(m["mca_partial_drop"] / m["id_top1"])
    assert m["n_corruption_pairs"] == 4 and "target_top1" not in m
    assert m["corruption_grid_complete"] == 0.0 and "mca" not in m  # a partial grid is named partial

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
    assert "mca" not in m and "mca_partial" not in m


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


def test_all_means_imagenet_c_15_common_corruptions_in_order_and_extras_are_opt_in():
    from imagecorruptions import get_corruption_names

    from bobench.data.corruptions import CORRUPTIONS
    from bobench.protocols.ood import resolve_corruptions, resolve_severities

    assert resolve_corruptions("all") == get_corruption_names("common")  # the reference ordering
    assert resolve_corruptions("all+extra") == list(CORRUPTIONS) and len(CORRUPTIONS) == 19
    assert resolve_corruptions(["speckle_noise"]) == ["speckle_noise"]
    assert resolve_severities("all") == [1, 2, 3, 4, 5]


def test_corruption_is_applied_at_the_model_input_resolution_after_resize(tmp_path):
    """ImageNet-C corrupts the resized, cropped input: a 64 px photo is resized to the toy's 32 px input
    first, then corrupted. Reference: corrupt(resize_crop(image)) embedded by the same real embedder."""
    from bobench.battle.context import LocalContext
    from bobench.data import load_dataset
    from bobench.data.corruptions import apply_variant
    from bobench.embed import make_embedder
    from bobench.embed.cache import FeatureCache
    from bobench.embed.preprocess import resize_crop

    ds = load_dataset({"name": "toy", "size_px": 64})
    embedder = make_embedder("torch", "toy", batch_size=32, cache_dir=str(tmp_path))
    ctx = LocalContext(
        embedder.spec, ds, cache=FeatureCache(tmp_path), embedder_factory=lambda: embedder,
        dataset_loader=load_dataset,
    )  # fmt: skip
    variant = "corrupt:gaussian_noise:3"
    got, _ = ctx.features("test", variant=variant)
    import zlib

    expected_inputs = []
    for i in ds.split("test"):
        small = resize_crop(ds.load(int(i)), embedder.spec).transpose(1, 2, 0)
        seed = zlib.crc32(f"{ds.fingerprint}:{int(i)}:{variant}".encode())
        expected_inputs.append(apply_variant(small, variant, seed).transpose(2, 0, 1))
    np.testing.assert_allclose(got, embedder.embed(np.stack(expected_inputs)), rtol=1e-5, atol=1e-6)


def test_features_cached_under_the_old_native_resolution_corruption_are_not_reused(tmp_path):
    from bobench.battle.context import LocalContext
    from bobench.data import load_dataset
    from bobench.embed import make_embedder
    from bobench.embed.cache import FeatureCache, FeatureKey

    ds = load_dataset("toy")
    embedder = make_embedder("torch", "toy", batch_size=32, cache_dir=str(tmp_path))
    cache = FeatureCache(tmp_path)
    n = len(ds.split("test"))
    stale = np.full((n, embedder.spec.embed_dim), 7.0, np.float32)
    old_key = FeatureKey(embedder.spec.digest(), ds.fingerprint, "test", "corrupt:fog:3")
    cache.put(old_key, stale, ds.labels[ds.split("test")], meta={})
    ctx = LocalContext(
        embedder.spec, ds, cache=cache, embedder_factory=lambda: embedder, dataset_loader=load_dataset
    )
    got, _ = ctx.features("test", variant="corrupt:fog:3")
    assert not np.allclose(got, stale)


def _grid_context(corruptions, severities, seed=0):
    """ArrayContext with separable train/val/test features and every (corruption, severity) test
    variant increasingly noisy, so accuracies vary by pair."""
    from array_context import ArrayContext

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 8)) * 1.5

    def draw(n, noise):
        y = np.arange(n) % 4
        return (centres[y] + noise * rng.normal(size=(n, 8))).astype(np.float32), y

    arrays = {"train": draw(80, 1.0), "val": draw(40, 1.0), "test": draw(60, 1.0)}
    x_test, y_test = arrays["test"]
    for j, name in enumerate(corruptions):
        for s in severities:
            noisy = x_test + (0.4 * s + 0.1 * j) * rng.normal(size=x_test.shape).astype(np.float32)
            arrays[("test", f"corrupt:{name}:{s}")] = (noisy, y_test)
    return ArrayContext(arrays, n_classes=4)


def test_full_grid_is_named_mca_and_averages_the_15_common_corruptions_only():
    from bobench.data.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS

    ctx = _grid_context(CORRUPTIONS, [1, 2, 3, 4, 5])
    config = {**FAST, "corruptions": "all+extra", "severities": "all"}
    m = get_protocol("ood").evaluate(ctx, config, 0)
    assert m["corruption_grid_complete"] == 1.0 and "mca_partial" not in m
    common = [c for c in CORRUPTIONS if c not in EXTRA_CORRUPTIONS]
    assert len(common) == 15
    assert m["mca"] == pytest.approx(np.mean([m[f"top1_{c}_s{s}"] for c in common for s in range(1, 6)]))
    assert m["ood_top1"] == m["mca"] and m["n_corruption_pairs"] == 95
    assert all(m[f"err_{c}"] == pytest.approx(1 - m[f"top1_{c}"]) for c in CORRUPTIONS)


def test_accuracies_carry_seeded_bootstrap_intervals_over_test_images():
    from bobench.bootstrap_ci import bootstrap_mean_ci

    ctx = _grid_context(["fog", "contrast"], [2, 4])
    config = {**FAST, "corruptions": ["fog", "contrast"], "severities": [2, 4]}
    m = get_protocol("ood").evaluate(ctx, config, 3)
    for name in ("id_top1", "top1_fog", "top1_contrast", "mca_partial", "ood_top1"):
        assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"], name
        assert m[f"{name}_ci_low"] < m[f"{name}_ci_high"], name
    assert m["gap_ci_low"] <= m["gap"] <= m["gap_ci_high"]
    assert get_protocol("ood").evaluate(ctx, config, 3) == m  # same seed, same intervals
    other = get_protocol("ood").evaluate(ctx, config, 4)
    bounds = [k for k in m if k.endswith(("_ci_low", "_ci_high"))]
    assert other["id_top1"] == m["id_top1"] and any(other[k] != m[k] for k in bounds)
    # the interval is over the n_test images: rebuild it from the per-image correctness
    correct = np.zeros(m["n_test"])
    correct[: round(m["id_top1"] * m["n_test"])] = 1.0  # the mean is order-free; only the count matters
    low, high = bootstrap_mean_ci(correct, seed=3)
    assert m["id_top1_ci_low"] == pytest.approx(low, abs=1.0 / m["n_test"] + 1e-9)
    assert m["id_top1_ci_high"] == pytest.approx(high, abs=1.0 / m["n_test"] + 1e-9)


def test_target_accuracy_carries_an_interval_over_target_images(toy_ctx):
    m = get_protocol("ood").evaluate(toy_ctx, {**FAST, "corruptions": [], "target": "toy_permuted"}, 0)
    assert m["target_top1_ci_low"] <= m["target_top1"] <= m["target_top1_ci_high"]
    assert (m["ood_top1_ci_low"], m["ood_top1_ci_high"]) == (
        m["target_top1_ci_low"],
        m["target_top1_ci_high"],
    )
    assert "gap_ci_low" not in m  # two different image sets: no paired interval


def test_mce_and_relative_mce_follow_imagenet_c_against_a_reference_record():
    """Reference: Hendrycks & Dietterich's formulas over per-severity errors, summed over severities."""
    from bobench.analysis.corruption_error import corruption_errors

    severities = [1, 2, 3, 4, 5]
    ctx_model = _grid_context(["fog", "contrast", "pixelate"], severities, seed=1)
    ctx_ref = _grid_context(["fog", "contrast", "pixelate"], severities, seed=2)
    config = {**FAST, "corruptions": ["fog", "contrast", "pixelate"], "severities": "all"}
    model = get_protocol("ood").evaluate(ctx_model, config, 0)
    ref = get_protocol("ood").evaluate(ctx_ref, config, 0)
    got = corruption_errors(model, ref)

    def error(m, c, s):
        return 1.0 - m[f"top1_{c}_s{s}"]

    ce, rel = [], []
    for c in ("contrast", "fog", "pixelate"):
        ce.append(sum(error(model, c, s) for s in severities) / sum(error(ref, c, s) for s in severities))
        num = sum(error(model, c, s) - (1 - model["id_top1"]) for s in severities)
        rel.append(num / sum(error(ref, c, s) - (1 - ref["id_top1"]) for s in severities))
        assert got[f"CE_{c}"] == pytest.approx(ce[-1])
    assert got["mCE"] == pytest.approx(np.mean(ce))
    assert got["relative_mCE"] == pytest.approx(np.mean(rel))
    assert corruption_errors(ref, ref)["mCE"] == pytest.approx(1.0)


def test_mce_rejects_records_without_shared_corruptions():
    from bobench.analysis.corruption_error import corruption_errors

    with pytest.raises(InvalidArgument, match="share no"):
        corruption_errors({"err_fog": 0.5, "id_err": 0.1}, {"err_snow": 0.5, "id_err": 0.1})
    with pytest.raises(InvalidArgument, match="zero error"):
        corruption_errors({"err_fog": 0.5, "id_err": 0.1}, {"err_fog": 0.0, "id_err": 0.0})


def test_inputs_under_32_px_are_corrupted_upscaled_and_brought_back_to_the_input_size(tmp_path):
    """imagecorruptions needs 32 px: a 16 px model input is corrupted at 32 px and resized back."""
    import dataclasses
    import zlib

    from PIL import Image

    from bobench.battle.context import LocalContext
    from bobench.data import load_dataset
    from bobench.data.corruptions import apply_variant
    from bobench.embed import make_embedder
    from bobench.embed.cache import FeatureCache
    from bobench.embed.preprocess import resize_crop

    ds = load_dataset("toy")
    embedder = make_embedder("torch", "toy", batch_size=32, cache_dir=str(tmp_path))
    spec = dataclasses.replace(embedder.spec, input_size=16)
    ctx = LocalContext(
        spec, ds, cache=FeatureCache(tmp_path), embedder_factory=lambda: embedder, dataset_loader=load_dataset
    )
    variant = "corrupt:contrast:2"
    got, _ = ctx.features("test", variant=variant)
    expected = []
    for i in ds.split("test"):
        small = resize_crop(ds.load(int(i)), spec).transpose(1, 2, 0)
        big = apply_variant(small, variant, zlib.crc32(f"{ds.fingerprint}:{int(i)}:{variant}".encode()))
        assert big.shape == (32, 32, 3)
        expected.append(
            np.asarray(Image.fromarray(big).resize((16, 16), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
        )
    np.testing.assert_allclose(got, embedder.embed(np.stack(expected)), rtol=1e-5, atol=1e-6)
