"""Datasets in an S3 store: ImageFolder trees and CSV manifests under `s3://bucket/prefix`.

    {"type": "imagefolder", "path": "s3://b/cats-dogs"}     (or the bare string "s3://b/cats-dogs/")
    {"type": "manifest", "path": "s3://b/sets/manifest.csv"}

The layouts are those of local folders (`bobench.data.files`): `<prefix>/<class>/<image>` or
`<prefix>/<split>/<class>/<image>`; manifest paths are relative to the manifest's prefix, or
absolute `s3://bucket/key` URLs. Endpoint, credentials and cache directory come from the data
context (`bobench.data.configure(settings)`, called once at the process edge).

* **Listing.** Building a dataset lists its prefix (key, size and etag of every object, one request
  per 1000 objects) and, for a manifest, reads the CSV. No image is read: the fingerprint is
  computed from the listing (each item's etag and size, in item order) and the labels and splits.
  The listing is saved under `<cache_dir>/datasets/listings/`; when the endpoint cannot be reached
  the saved listing is used (with a warning), so a dataset loaded once loads again offline.
* **Objects** are downloaded when an item is first loaded, streamed to disk (never whole into
  memory), into `<cache_dir>/datasets/blobs/<etag>-<size>`: content-addressed, so an object whose
  etag and size match a cached blob is never downloaded again (the same content under two prefixes
  shares one blob). A download is checked against the listed size and, for single-part uploads,
  the MD5 etag.
* **Errors.** A missing bucket, an empty prefix, a manifest missing or a manifest row naming a
  missing object (the row is named) are InvalidArgument; refused credentials are FailedPrecondition;
  an unreachable endpoint with nothing cached is Unavailable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bobench.config import Settings
from bobench.data.base import Dataset
from bobench.data.context import data_settings
from bobench.data.fingerprint import LazyFingerprintDataset, combine_fingerprint
from bobench.data.images import IMAGE_EXTENSIONS, decode_image_file
from bobench.data.layouts import manifest_layout, tree_layout
from bobench.data.relevance import manifest_relevance
from bobench.data.splits import KNOWN_SPLITS
from bobench.errors import InvalidArgument, NotFound, Unavailable
from bobench.store.resolve import parse_s3_url, s3_store
from bobench.store.s3 import S3Store

log = logging.getLogger(__name__)

_stores_lock = threading.Lock()
_stores: dict[tuple[Settings, str], S3Store] = {}


@dataclass(frozen=True)
class S3Object:
    """One listed object: bucket, full key, size and etag."""

    bucket: str
    key: str
    size_bytes: int
    etag: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def store_for(settings: Settings, bucket: str) -> S3Store:
    """This process's client for `bucket` (one per settings and bucket, reused across datasets)."""
    with _stores_lock:
        store = _stores.get((settings, bucket))
        if store is None:
            store = _stores[(settings, bucket)] = s3_store(bucket, "", settings)
        return store


def datasets_cache(settings: Settings) -> Path:
    """`<cache_dir>/datasets`: listings and content-addressed object blobs."""
    return Path(settings.cache_dir).expanduser() / "datasets"


def _listing_path(settings: Settings, bucket: str, folder: str) -> Path:
    name = hashlib.sha256(f"{settings.s3_endpoint}|{bucket}|{folder}".encode()).hexdigest()[:32]
    return datasets_cache(settings) / "listings" / f"{name}.json"


def list_folder(bucket: str, folder: str, settings: Settings) -> list[S3Object]:
    """Objects whose key starts with `folder` ('' or 'a/b/'), sorted by key; may be empty.

    Raises InvalidArgument for a missing bucket, FailedPrecondition for refused credentials, and
    Unavailable when the endpoint cannot be reached and this folder was never listed before.
    """
    saved = _listing_path(settings, bucket, folder)
    try:
        infos = store_for(settings, bucket).list_info(folder)
    except NotFound:
        raise InvalidArgument(
            f"s3://{bucket}/{folder}: bucket {bucket!r} does not exist at {settings.s3_endpoint}"
        ) from None
    except Unavailable as exc:
        if not saved.is_file():
            raise
        log.warning("%s; using the listing saved at %s", exc, saved)
        return [S3Object(**row) for row in json.loads(saved.read_text())]
    objects = [S3Object(bucket, i.key, i.size_bytes, i.etag) for i in infos]
    saved.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=saved.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump([asdict(o) for o in objects], fh)
    os.replace(tmp, saved)
    return objects


def list_dataset(url: str, settings: Settings) -> list[S3Object]:
    """Objects under the prefix of `url` taken as a folder; an empty prefix is an InvalidArgument."""
    bucket, prefix = parse_s3_url(url)
    folder = f"{prefix}/" if prefix else ""
    objects = [o for o in list_folder(bucket, folder, settings) if not _hidden(o.key[len(folder) :])]
    if not objects:
        raise InvalidArgument(f"{url}: no objects under prefix {folder!r} of bucket {bucket!r}")
    return objects


def _hidden(relative_key: str) -> bool:
    return any(part.startswith(".") for part in relative_key.split("/"))


def blob_path(obj: S3Object, settings: Settings) -> Path:
    """Where the content of `obj` is cached: named by etag and size, not by key."""
    etag = re.sub(r"[^0-9A-Za-z-]", "_", obj.etag) or "no-etag"
    return datasets_cache(settings) / "blobs" / f"{etag}-{obj.size_bytes}"


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch_object(obj: S3Object, settings: Settings) -> Path:
    """The local path of `obj`'s content, downloading it (streamed) unless its blob is cached.

    Raises Unavailable for a download whose size or MD5 etag does not match the listing (the object
    changed since it was listed, or the transfer broke), NotFound when the object is gone.
    """
    blob = blob_path(obj, settings)
    if blob.is_file() and blob.stat().st_size == obj.size_bytes:
        return blob
    log.debug("downloading %s (%d bytes)", obj.url, obj.size_bytes)
    store_for(settings, obj.bucket).get_file(obj.key, blob)
    single_part_md5 = len(obj.etag) == 32 and "-" not in obj.etag
    size = blob.stat().st_size
    if size != obj.size_bytes or (single_part_md5 and _md5(blob) != obj.etag.lower()):
        blob.unlink(missing_ok=True)
        raise Unavailable(
            f"download of {obj.url} does not match its listing ({size} bytes, expected "
            f"{obj.size_bytes}, etag {obj.etag}): it changed since the dataset was loaded; load it again"
        )
    return blob


def objects_digest(objects: list[S3Object], *extra: str) -> str:
    """sha256 over each object's etag and size, in order, then `extra` (keys do not enter: the same
    content under another prefix has the same digest, as moving a local folder keeps its fingerprint)."""
    h = hashlib.sha256()
    for obj in objects:
        h.update(f"{obj.etag}:{obj.size_bytes}\n".encode())
    for part in extra:
        h.update(part.encode())
    return h.hexdigest()


READAHEAD_OBJECTS = 64  # on a cache miss, the next objects are fetched too, concurrently
_FETCH_THREADS = 8


class S3FileLoader:
    """`Dataset.load` for S3 file datasets: item index -> decoded image (picklable for worker processes).

    A cache miss also fetches the following `READAHEAD_OBJECTS` objects in parallel, since items are
    usually read in order (validation, embedding); each goes to disk, not memory."""

    def __init__(self, objects: list[S3Object], settings: Settings) -> None:
        self.objects = objects
        self.settings = settings

    def __call__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.objects):
            raise InvalidArgument(f"item {index} out of range (dataset of {len(self.objects)} objects)")
        obj = self.objects[index]
        if not blob_path(obj, self.settings).is_file():
            self._readahead(index)
        return decode_image_file(fetch_object(obj, self.settings), where=obj.url)

    def _readahead(self, index: int) -> None:
        window = self.objects[index : index + READAHEAD_OBJECTS]
        missing = list(
            {
                blob_path(o, self.settings): o for o in window if not blob_path(o, self.settings).is_file()
            }.values()
        )
        with ThreadPoolExecutor(_FETCH_THREADS) as pool:
            for future in [pool.submit(fetch_object, o, self.settings) for o in missing]:
                future.exception()  # a failed prefetch is retried, and reported, when its item loads


def _s3_dataset(
    *,
    name: str,
    objects: list[S3Object],
    labels: np.ndarray,
    classes: list[str],
    splits: dict[str, np.ndarray],
    seed: int,
    settings: Settings,
    meta: dict,
    extra_digest: str = "",
) -> Dataset:
    from bobench.data.splits import RETRIEVAL_SPLITS

    task = "retrieval" if set(splits) <= set(RETRIEVAL_SPLITS) else "classification"

    def fingerprint() -> str:
        return combine_fingerprint(objects_digest(objects, extra_digest), classes, labels, splits, seed)

    return LazyFingerprintDataset(
        name=name,
        classes=classes,
        labels=labels,
        splits=splits,
        load=S3FileLoader(objects, settings),
        sources=[o.url for o in objects],
        meta={"task": task, "seed": seed, **meta},
        fingerprint_fn=fingerprint,
    )


def _default_name(ref: dict, bucket: str, key: str) -> str:
    return str(ref.get("name") or posixpath.basename(key) or bucket)


def _is_image_key(key: str) -> bool:
    return posixpath.splitext(key)[1].lower() in IMAGE_EXTENSIONS


def s3_imagefolder(ref: dict, *, seed: int = 0) -> Dataset:
    """The ImageFolder tree under `ref["path"]` (an s3:// URL); see the module docstring."""
    url = str(ref["path"]).rstrip("/")
    where = f"imagefolder {url}"
    settings = data_settings(where)
    bucket, prefix = parse_s3_url(url)
    cut = len(prefix) + 1 if prefix else 0
    images = [(o.key[cut:].split("/"), o) for o in list_dataset(url, settings) if _is_image_key(o.key)]
    tops = {parts[0] for parts, _ in images if len(parts) >= 2}
    if not tops:
        raise InvalidArgument(
            f"{where}: no class folders (expected {url}/<class>/<image> or {url}/<split>/<class>/<image>)"
        )
    pre_split = all(t in KNOWN_SPLITS for t in tops)
    depth = 3 if pre_split else 2
    groups: dict[str | None, dict[str, list[str]]] = {}
    by_url: dict[str, S3Object] = {}
    for parts, obj in images:
        if len(parts) == depth:
            split = parts[0] if pre_split else None
            groups.setdefault(split, {}).setdefault(parts[-2], []).append(obj.url)
            by_url[obj.url] = obj
    urls, labels, classes, splits = tree_layout(groups, ref, seed, where=where)
    return _s3_dataset(
        name=_default_name(ref, bucket, prefix),
        objects=[by_url[u] for u in urls],
        labels=labels,
        classes=classes,
        splits=splits,
        seed=seed,
        settings=settings,
        meta={"source": "imagefolder", "path": url, "layout": "pre-split" if pre_split else "class-folders"},
    )


class ObjectIndex:
    """Looks up keys by listing each needed folder once (the manifest's own folder first)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.listed: list[tuple[str, str]] = []
        self.objects: dict[tuple[str, str], S3Object] = {}

    def add(self, bucket: str, folder: str) -> None:
        for obj in list_folder(bucket, folder, self.settings):
            self.objects[(bucket, obj.key)] = obj
        self.listed.append((bucket, folder))

    def get(self, bucket: str, key: str) -> S3Object | None:
        if not any(b == bucket and key.startswith(f) for b, f in self.listed):
            parent = posixpath.dirname(key)
            self.add(bucket, f"{parent}/" if parent else "")
        return self.objects.get((bucket, key))


def s3_manifest(ref: dict, *, seed: int = 0) -> Dataset:
    """The CSV manifest at `ref["path"]` (an s3:// URL); see the module docstring."""
    url = str(ref["path"])
    where = f"manifest {url}"
    settings = data_settings(where)
    bucket, key = parse_s3_url(url)
    if not key:
        raise InvalidArgument(f"{where}: names a bucket, not a CSV object")
    parent = posixpath.dirname(key)
    index = ObjectIndex(settings)
    index.add(bucket, f"{parent}/" if parent else "")
    manifest_obj = index.get(bucket, key)
    if manifest_obj is None:
        raise InvalidArgument(f"manifest: object {url} does not exist")

    def resolve(value: str, line: int) -> str:  # messages never quote the row: it is file content
        row = f"{where}: row {line}: field 'path'"
        if value.startswith("s3://"):
            item_bucket, item_key = parse_s3_url(value)
        elif value.startswith("/"):
            raise InvalidArgument(f"{row}: a local absolute path; use a relative path or s3://")
        else:
            item_bucket, item_key = bucket, posixpath.normpath(posixpath.join(parent, value))
        try:
            obj = index.get(item_bucket, item_key)
        except InvalidArgument:
            raise InvalidArgument(f"{row}: not a valid s3:// object name") from None
        if obj is None:
            raise InvalidArgument(f"{row}: the object it names does not exist")
        return obj.url

    csv_path = fetch_object(manifest_obj, settings)
    urls, labels, classes, splits = manifest_layout(csv_path, ref, seed, resolve, where=where)
    relevance = manifest_relevance(csv_path, splits, urls, where=where)  # in the fingerprint via the etag
    by_url = {o.url: o for o in index.objects.values()}
    return _s3_dataset(
        name=str(ref.get("name") or posixpath.splitext(posixpath.basename(key))[0]),
        objects=[by_url[u] for u in urls],
        labels=labels,
        classes=classes,
        splits=splits,
        seed=seed,
        settings=settings,
        meta={"source": "manifest", "path": url, "relevance": relevance},
        extra_digest=f"manifest:{manifest_obj.etag}:{manifest_obj.size_bytes}",
    )
