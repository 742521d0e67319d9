"""Client-side preprocessing derived from the BackboneSpec: resize the shorter side to
input_size / crop_pct with the spec's interpolation, centre-crop to input_size, return uint8 CHW RGB.
Normalisation (mean/std) happens inside the served model, so the payload stays uint8."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from bobench.backbones.spec import BackboneSpec

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Coerce gray/RGBA/float images to HxWx3 uint8 RGB (floats in [0, 1] are scaled by 255)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"cannot interpret an image of shape {a.shape} as RGB")
    return a


def resize_crop(image: np.ndarray, spec: BackboneSpec) -> np.ndarray:
    """HxWx3 (any dtype) -> uint8 [3, S, S] with S = spec.input_size."""
    rgb = to_rgb_uint8(image)
    size = spec.input_size
    scale_to = int(math.floor(size / spec.crop_pct))
    h, w = rgb.shape[:2]
    if h <= w:
        new_h, new_w = scale_to, max(scale_to, round(w * scale_to / h))
    else:
        new_w, new_h = scale_to, max(scale_to, round(h * scale_to / w))
    img = Image.fromarray(rgb).resize((new_w, new_h), _RESAMPLE[spec.interpolation])
    top, left = (new_h - size) // 2, (new_w - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
