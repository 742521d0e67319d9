"""ImageNet-C corruptions: every corruption x severity runs on bundled data, deterministically per seed,
with the library shims cross-checked against independent numpy / scikit-image computations."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.data import load_dataset
from bobench.data.corruptions import (
    COMMON_CORRUPTIONS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    _derived_seed,
    apply_variant,
    corrupt,
    corruption_variants,
)
from bobench.errors import InvalidArgument

pytest.importorskip("imagecorruptions")

RANDOM_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur",
    "snow", "frost", "fog", "spatter", "elastic_transform",
)  # fmt: skip


@pytest.fixture(scope="module")
def toy_image() -> np.ndarray:
    return load_dataset("toy").load(3)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return load_dataset("lfw").load(0)  # 25x25: exercises the upscale to 32 px


def test_corruption_names_match_the_package():
    from imagecorruptions import get_corruption_names

    assert len(CORRUPTIONS) == 19
    assert list(COMMON_CORRUPTIONS) == get_corruption_names("common")
    assert list(EXTRA_CORRUPTIONS) == get_corruption_names("validation")


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_severity_runs_on_bundled_images_deterministically(name, toy_image, face):
    previous = None
    for severity in range(1, 6):
        out = corrupt(toy_image, name, severity, seed=11)
        assert out.dtype == np.uint8 and out.shape == toy_image.shape
        assert np.array_equal(out, corrupt(toy_image, name, severity, seed=11))
        assert not np.array_equal(out, toy_image)
        if previous is not None and name not in ("saturate",):  # saturate is not monotone in severity
            assert not np.array_equal(out, previous)
        previous = out
        small = corrupt(face, name, severity, seed=11)
        assert small.shape == (32, 32, 3) and small.dtype == np.uint8


@pytest.mark.parametrize("name", RANDOM_CORRUPTIONS)
def test_random_corruptions_differ_between_seeds(name, toy_image):
    outs = {corrupt(toy_image, name, 3, seed=s).tobytes() for s in range(4)}
    assert len(outs) > 1


def test_impulse_noise_is_seeded_through_the_shim(toy_image):
    """skimage's random_noise has its own generator; without the shim this would differ each call."""
    a = corrupt(toy_image, "impulse_noise", 5, seed=3)
    assert np.array_equal(a, corrupt(toy_image, "impulse_noise", 5, seed=3))


def test_gaussian_noise_matches_a_numpy_reimplementation(toy_image):
    seed, severity, scale = 5, 3, 0.18  # ImageNet-C gaussian_noise severity 3
    rng = np.random.RandomState(_derived_seed(seed, "gaussian_noise", severity))
    x = toy_image / 255.0
    expected = (np.clip(x + rng.normal(size=x.shape, scale=scale), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(corrupt(toy_image, "gaussian_noise", severity, seed=seed), expected)


def test_gaussian_blur_shim_matches_skimage_with_channel_axis(toy_image):
    from skimage.filters import gaussian

    sigma = 3  # severity 3
    expected = (np.clip(gaussian(toy_image / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255).astype(
        np.uint8
    )
    assert np.array_equal(corrupt(toy_image, "gaussian_blur", 3), expected)


def test_contrast_matches_the_imagenet_c_formula(toy_image):
    x = toy_image / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    expected = (np.clip((x - means) * 0.05 + means, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(corrupt(toy_image, "contrast", 5), expected)


def test_global_numpy_rng_state_is_restored(toy_image):
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    corrupt(toy_image, "snow", 2, seed=9)
    assert np.array_equal(np.random.rand(3), expected)


def test_small_and_gray_images_are_upscaled_to_32_px():
    gray = (np.arange(8 * 16) % 251).astype(np.uint8).reshape(8, 16)
    out = corrupt(gray, "brightness", 1)
    assert out.shape == (32, 64, 3)
    digit = load_dataset("uci_digits").load(0)
    assert corrupt(digit, "pixelate", 2).shape == (32, 32, 3)


def test_photo_crop_keeps_its_shape(toy_image):
    crop = load_dataset({"name": "photo_crops", "max_side_px": 96}).load(0)
    for name in ("glass_blur", "frost", "fog"):
        assert corrupt(crop, name, 2, seed=1).shape == crop.shape


@pytest.mark.parametrize(
    "name, severity, message",
    [
        ("gausian_noise", 1, "unknown corruption 'gausian_noise'; did you mean 'gaussian_noise'"),
        ("fog", 0, "severity must be an integer 1..5, got 0"),
        ("fog", 6, "severity must be an integer 1..5, got 6"),
        ("fog", "3", "severity must be an integer 1..5"),
        ("fog", True, "severity must be an integer 1..5"),
    ],
)
def test_bad_corruption_or_severity_is_rejected(name, severity, message, toy_image):
    with pytest.raises(InvalidArgument, match=message):
        corrupt(toy_image, name, severity)


def test_bad_image_is_rejected():
    with pytest.raises(InvalidArgument, match="uint8"):
        corrupt(np.zeros((40, 40, 3), dtype=np.float32), "fog", 1)
    with pytest.raises(InvalidArgument, match=r"HxWx3.*\[40, 40, 4\]"):
        corrupt(np.zeros((40, 40, 4), dtype=np.uint8), "fog", 1)


def test_apply_variant_parses_corruption_strings(toy_image):
    out = apply_variant(toy_image, "corrupt:shot_noise:4", seed=2)
    assert np.array_equal(out, corrupt(toy_image, "shot_noise", 4, seed=2))
    assert corruption_variants(("fog",), (1, 5)) == ["corrupt:fog:1", "corrupt:fog:5"]


@pytest.mark.parametrize(
    "variant, message",
    [
        ("corupt:fog:1", "unknown image variant 'corupt'; did you mean 'corrupt'"),
        ("corrupt:fog", "takes NAME:SEVERITY"),
        ("corrupt:fog:high", "severity must be an integer"),
        ("corrupt:fgo:1", "unknown corruption 'fgo'"),
        ("corrupt:fog:9", "severity must be an integer 1..5, got 9"),
        ("", "non-empty string"),
    ],
)
def test_bad_variants_are_rejected(variant, message, toy_image):
    with pytest.raises(InvalidArgument, match=message):
        apply_variant(toy_image, variant, seed=0)
