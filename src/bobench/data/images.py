"""Image files: which names count as images, and decoding one to RGB with errors that name the file."""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np
from PIL import Image

from bobench.errors import InvalidArgument

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


def decode_image_file(path: str | os.PathLike | BinaryIO, where: str | None = None) -> np.ndarray:
    """Decode an image file (a path or an open binary file) to HxWx3 uint8 RGB.

    Raises InvalidArgument naming the file (or `where`) when it is missing, not an image, truncated
    or corrupt.
    """
    where = where or str(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode fully now: a truncated file fails here, not later
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise InvalidArgument(f"image file {where} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidArgument(f"cannot decode image {where}: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8)
