"""`bob datasets upload`: put a local ImageFolder tree into an S3 store, as it is or as WebDataset shards.

    result = upload_dataset("photos/", "s3://data/photos", settings, format="webdataset", shards=4)
    load_dataset(result.ref)                 # the ref to use, with bobench.data.configure(settings)

The source is any local ImageFolder tree (`<class>/<image>` or `<split>/<class>/<image>`, see
`bobench.data.files`). `format="imagefolder"` uploads each image to `<prefix>/<relative path>`;
`format="webdataset"` packs the samples, in ImageFolder order, into `shards` tar files per split
(`<prefix>/shard-000000.tar`, or `<prefix>/<split>/shard-000000.tar` for a split tree) following the
convention of `bobench.data.webdataset`, plus `<prefix>/classes.txt`. Shards are byte-for-byte
reproducible, so uploading is idempotent in both formats: an object whose size and etag (its MD5,
or the multipart MD5 for large files) already match is skipped. A missing bucket is created.
Raises InvalidArgument for a source that is not an ImageFolder tree (naming it), FailedPrecondition
for refused credentials, Unavailable for an unreachable endpoint.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.store.resolve import parse_s3_url, s3_store
from bobench.store.s3 import _MULTIPART_PART_BYTES, S3Store

log = logging.getLogger(__name__)

FORMATS = ("imagefolder", "webdataset")
SAMPLES_PER_SHARD = 1000  # default shard size when `shards` is not given
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class UploadResult:
    """What an upload did: the dataset ref to load it with, objects uploaded and skipped as unchanged,
    and objects already under the prefix that are not part of this upload (left in place)."""

    ref: dict
    uploaded: int
    skipped: int
    bytes_uploaded: int
    foreign_objects: int


def s3_etag(path: Path, part_bytes: int = _MULTIPART_PART_BYTES) -> str:
    """The etag S3 gives `path` when uploaded by `S3Store.put_file`: its MD5, or for files larger
    than one part the MD5 of the parts' MD5s followed by `-<parts>`."""
    size = path.stat().st_size
    whole, parts = hashlib.md5(usedforsecurity=False), []
    with path.open("rb") as fh:
        while chunk := fh.read(part_bytes):
            whole.update(chunk)
            parts.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    if size <= part_bytes:
        return whole.hexdigest()
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


def _source_tree(src: Path):
    from bobench.data.files import imagefolder

    if not src.is_dir():
        raise InvalidArgument(f"upload: {src} is not a directory")
    return imagefolder({"type": "imagefolder", "path": str(src)}, seed=0)


def pack_shards(src: str | Path, out_dir: str | Path, shards: int | None = None) -> list[Path]:
    """Pack the ImageFolder tree `src` into WebDataset shards under `out_dir`; returns the files written
    (shards, then `classes.txt`), relative layout as described in the module docstring.

    Raises InvalidArgument for a bad tree, a `shards` count < 1, or images that are not jpg/png/webp."""
    from bobench.data.shards import CLASSES_FILE
    from bobench.data.webdataset import SAMPLE_IMAGE_EXTENSIONS, write_shard

    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int) or shards < 1):
        raise InvalidArgument(f"upload: shards must be a positive integer, got {shards!r}")
    src, out = Path(src), Path(out_dir)
    ds = _source_tree(src)
    rel = [Path(p).relative_to(src).as_posix() for p in ds.sources]
    pre_split = ds.meta.get("layout") == "pre-split"
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(rel):
        groups.setdefault(name.split("/", 1)[0] if pre_split else "", []).append(i)
    written: list[Path] = []
    for split, items in groups.items():
        count = shards or math.ceil(len(items) / SAMPLES_PER_SHARD)
        for shard_no, chunk in enumerate(np.array_split(np.asarray(items), min(count, len(items)))):
            samples = []
            for i in chunk.tolist():
                name = rel[i].split("/", 1)[1] if pre_split else rel[i]
                stem, ext = os.path.splitext(name)
                if ext.lower().lstrip(".") not in SAMPLE_IMAGE_EXTENSIONS:
                    raise InvalidArgument(
                        f"upload: {ds.sources[i]}: WebDataset samples must be {'/'.join(SAMPLE_IMAGE_EXTENSIONS)}"
                    )
                key = stem.replace(".", "_")
                samples.append(
                    (key, ext.lower().lstrip("."), Path(ds.sources[i]).read_bytes(), int(ds.labels[i]))
                )
            path = out / split / f"shard-{shard_no:06d}.tar"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_shard(path, samples)
            written.append(path)
    classes = out / CLASSES_FILE
    classes.write_text("".join(f"{c}\n" for c in ds.classes), encoding="utf-8")
    return [*written, classes]


def _put_all(
    store: S3Store, files: list[tuple[str, Path]], progress: Progress | None
) -> tuple[int, int, int, set[str]]:
    """Upload (key, path) pairs, skipping unchanged objects; (uploaded, skipped, bytes, keys present)."""
    present = {info.key: info for info in store.list_info("")}
    uploaded = skipped = sent = 0
    for done, (key, path) in enumerate(files, start=1):
        info = present.get(key)
        size = path.stat().st_size
        if info is not None and info.size_bytes == size and info.etag == s3_etag(path):
            skipped += 1
        else:
            store.put_file(key, path)
            uploaded, sent = uploaded + 1, sent + size
        if progress is not None:
            progress(done, len(files), f"{store.url}/{key}")
    return uploaded, skipped, sent, set(present)


def upload_dataset(
    src: str | Path,
    url: str,
    settings: Settings,
    *,
    format: str = "imagefolder",
    shards: int | None = None,
    progress: Progress | None = None,
) -> UploadResult:
    """Upload the ImageFolder tree `src` to `url` (s3://bucket/prefix); see the module docstring.

    `shards` implies `format="webdataset"`. `progress(done, total, key)` is called after each object.
    """
    if shards is not None:
        format = "webdataset"
    if format not in FORMATS:
        raise InvalidArgument(f"upload: format must be one of {FORMATS}, got {format!r}")
    bucket, prefix = parse_s3_url(url)
    src = Path(src).expanduser()
    target = f"s3://{bucket}/{prefix}".rstrip("/")
    store = s3_store(bucket, prefix, settings, create_bucket=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bobench-upload-") as tmp:
            if format == "webdataset":
                written = pack_shards(src, tmp, shards)
                files = [(p.relative_to(tmp).as_posix(), p) for p in written]
            else:
                ds = _source_tree(src)
                files = [(Path(p).relative_to(src).as_posix(), Path(p)) for p in ds.sources]
            uploaded, skipped, sent, present = _put_all(store, files, progress)
    finally:
        store.close()
    foreign = len(present - {key for key, _ in files})
    if foreign:
        log.warning("%s holds %d other object(s) that are not part of this upload", target, foreign)
    log.info("uploaded %d object(s) (%d bytes) to %s, %d unchanged", uploaded, sent, target, skipped)
    return UploadResult({"type": format, "path": target}, uploaded, skipped, sent, foreign)
