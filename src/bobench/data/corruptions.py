"""ImageNet-C corruptions (Hendrycks & Dietterich) through the `imagecorruptions` package, made
deterministic and compatible with current numpy/scikit-image.

Compatibility shims, applied once when the package is first used and confined to its module (nothing
in site-packages is edited):
  * `np.float_` is aliased to `np.float64` when numpy lacks it (numpy 2; used by `fog`);
  * its `gaussian` (skimage) calls pass `multichannel=`, removed from scikit-image: translated to
    `channel_axis=-1` (`glass_blur`, `gaussian_blur`);
  * `impulse_noise` calls `skimage.util.random_noise`, which draws from its own unseeded generator:
    it is given a generator seeded from numpy's global RNG, so the seed below covers it too.

Determinism: `corrupt` seeds numpy's global RNG (which the package uses) from (seed, name, severity)
inside a lock and restores the previous state afterwards, so equal seeds give equal images and the
caller's RNG stream is untouched. Images smaller than 32 px on a side (the package's minimum) are first
upscaled with bicubic interpolation so the shorter side is 32 px: the output is then larger than
the input (e.g. 25x25 LFW faces come back 32x32).

Where the corruption is applied: at the model's input resolution, after resize and centre crop, as
ImageNet-C corrupts 224x224 crops (`bobench.battle.context`). A severity is then the same strength for
every source image size. `cache_variant` names that stage in the feature-cache key, so features cached
when corruptions were applied to the native image are never read back as the new ones.

Named sets: `COMMON_CORRUPTIONS` are ImageNet-C's 15 benchmark corruptions in the package's order
(`get_corruption_names('common')`), which is what "all" means; `EXTRA_CORRUPTIONS` are the 4 held-out
ones (`'validation'`), used only when asked for by name or through "all+extra".
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import logging
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image

from bobench.errors import InvalidArgument, Unavailable
from bobench.registry import Registry

log = logging.getLogger(__name__)

COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)  # fmt: skip
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE_PX = 32
CORRUPTION_STAGE = "model-input"  # corruptions are applied after resize/crop (module docstring)

_rng_lock = threading.Lock()


def _gaussian_compat(gaussian: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def call(image: np.ndarray, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> np.ndarray:
        if multichannel is not None:
            kwargs.setdefault("channel_axis", -1 if multichannel else None)
        return gaussian(image, *args, **kwargs)

    return call


def _skimage_seeded(sk: types.ModuleType) -> types.SimpleNamespace:
    """A stand-in for the package's `sk` (skimage) whose `util.random_noise` draws its generator seed
    from numpy's global RNG; every other attribute is skimage's own."""

    def random_noise(image: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        kwargs.setdefault("rng", int(np.random.randint(0, 2**31 - 1)))
        return sk.util.random_noise(image, *args, **kwargs)

    util = types.SimpleNamespace(**{k: getattr(sk.util, k) for k in dir(sk.util) if not k.startswith("_")})
    util.random_noise = random_noise
    return types.SimpleNamespace(util=util, color=sk.color, filters=sk.filters)


@functools.cache
def _backend() -> types.ModuleType:
    """Import imagecorruptions once, quietly, and apply the shims. Raises Unavailable when missing."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pkg_resources.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            package = importlib.import_module("imagecorruptions")
            module = importlib.import_module("imagecorruptions.corruptions")
    except ImportError as exc:
        raise Unavailable(
            f"ImageNet-C corruptions need the 'imagecorruptions' package (and setuptools<81): {exc}"
        ) from exc
    module.gaussian = _gaussian_compat(module.gaussian)
    module.sk = _skimage_seeded(module.sk)
    missing = set(CORRUPTIONS) - set(package.get_corruption_names("all"))
    if missing:
        raise Unavailable(f"imagecorruptions lacks corruption(s) {sorted(missing)}")
    return package


def _derived_seed(seed: int, name: str, severity: int) -> int:
    digest = hashlib.sha256(f"{int(seed)}:{name}:{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextlib.contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for the block (serialised by a lock) and restore the old state after."""
    with _rng_lock:
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(saved)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise InvalidArgument(f"corrupt: expected a uint8 image, got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
        raise InvalidArgument(f"corrupt: expected an HxWx3 (or HxW) image, got shape {list(a.shape)}")
    h, w = a.shape[:2]
    if min(h, w) < MIN_SIDE_PX:
        scale = MIN_SIDE_PX / min(h, w)
        size = (max(MIN_SIDE_PX, round(w * scale)), max(MIN_SIDE_PX, round(h * scale)))
        a = np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BICUBIC))
    return np.ascontiguousarray(a)


def check_corruption(name: str, severity: int) -> None:
    """InvalidArgument for an unknown corruption (with close matches) or a severity outside 1..5."""
    if name not in CORRUPTIONS:
        import difflib

        close = difflib.get_close_matches(str(name), CORRUPTIONS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InvalidArgument(f"unknown corruption {name!r}{hint} (known: {', '.join(CORRUPTIONS)})")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity not in SEVERITIES:
        raise InvalidArgument(f"corruption {name!r}: severity must be an integer 1..5, got {severity!r}")


def corrupt(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply ImageNet-C corruption `name` at `severity` (1..5) to a uint8 HxWx3 (or HxW) image.

    Returns uint8 HxWx3, identical for identical (image, name, severity, seed). Images under 32 px
    are upscaled (bicubic) to a 32 px shorter side first. Raises InvalidArgument for bad input and
    Unavailable when the imagecorruptions package is missing.
    """
    check_corruption(name, severity)
    rgb = _as_rgb(image)
    package = _backend()
    printed = io.StringIO()  # the package prints on some edge cases (zoom_blur/snow); route to logging
    with _seeded_global_rng(_derived_seed(seed, name, int(severity))), contextlib.redirect_stdout(printed):
        out = package.corrupt(rgb, severity=int(severity), corruption_name=name)
    if printed.getvalue().strip():
        log.debug("imagecorruptions %s: %s", name, printed.getvalue().strip())
    out = np.asarray(out)
    if out.shape != rgb.shape:
        raise Unavailable(f"corruption {name!r} returned shape {list(out.shape)} for input {list(rgb.shape)}")
    return out.astype(np.uint8, copy=False)


# variant kind -> handler(image, args, seed); args are the ':'-separated fields after the kind
VARIANTS: Registry[Callable[[np.ndarray, list[str], int], np.ndarray]] = Registry("image variant")


@VARIANTS.register("corrupt")
def _corrupt_variant(image: np.ndarray, args: list[str], seed: int) -> np.ndarray:
    if len(args) != 2:
        raise InvalidArgument(
            f"variant 'corrupt' takes NAME:SEVERITY, e.g. 'corrupt:gaussian_noise:3'; got {args}"
        )
    name, severity_text = args
    try:
        severity = int(severity_text)
    except ValueError:
        raise InvalidArgument(
            f"variant 'corrupt:{name}:{severity_text}': severity must be an integer 1..5"
        ) from None
    return corrupt(image, name, severity, seed)


def cache_variant(variant: str | None) -> str:
    """The feature-cache name of `variant`: "" for none, else the variant and the stage it is applied at
    (e.g. "corrupt:fog:3@model-input"), so a change of stage never reuses features cached before it."""
    if not variant:
        return ""
    return f"{variant}@{CORRUPTION_STAGE}"


def parse_variant(variant: str) -> tuple[str, list[str]]:
    """Split "kind:arg:..." and check the kind is registered (InvalidArgument with close matches)."""
    if not isinstance(variant, str) or not variant.strip():
        raise InvalidArgument(
            f"image variant must be a non-empty string like 'corrupt:gaussian_noise:3', got {variant!r}"
        )
    kind, *args = variant.strip().split(":")
    VARIANTS.get(kind)
    return kind, args


def apply_variant(image: np.ndarray, variant: str, seed: int = 0) -> np.ndarray:
    """Apply a variant string such as "corrupt:gaussian_noise:3" to an image, deterministically in `seed`.

    Raises InvalidArgument for an unknown or malformed variant.
    """
    kind, args = parse_variant(variant)
    return VARIANTS.get(kind)(image, args, seed)


def corruption_variants(
    names: tuple[str, ...] = COMMON_CORRUPTIONS, severities: tuple[int, ...] = SEVERITIES
) -> list[str]:
    """Variant strings for every (corruption, severity) pair, e.g. for an OOD sweep."""
    for name in names:
        for severity in severities:
            check_corruption(name, severity)
    return [f"corrupt:{n}:{s}" for n in names for s in severities]
