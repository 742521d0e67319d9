"""Turn a store URL (or Settings) into a store, and fetch single s3:// objects into the local cache."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from bobench.config import Settings
from bobench.errors import InvalidArgument, Unavailable
from bobench.store.base import ArtifactStore, check_key
from bobench.store.local import LocalStore
from bobench.store.s3 import S3Store

log = logging.getLogger(__name__)


def parse_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix'); raises InvalidArgument naming the URL."""
    if not url.startswith("s3://"):
        raise InvalidArgument(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidArgument(f"s3 URL {url!r} has no bucket (expected s3://bucket/prefix)")
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except InvalidArgument as exc:
            raise InvalidArgument(f"s3 URL {url!r}: {exc}") from None
    return bucket, prefix


def s3_store(bucket: str, prefix: str, settings: Settings, *, create_bucket: bool = False) -> S3Store:
    """An S3Store from the s3_* settings; raises InvalidArgument when no endpoint is configured."""
    if not settings.s3_endpoint:
        raise InvalidArgument(
            f"store s3://{bucket}/{prefix}: no S3 endpoint configured (set BOBENCH_S3_ENDPOINT or "
            "s3_endpoint in bobench.yaml, plus BOBENCH_S3_ACCESS_KEY / BOBENCH_S3_SECRET_KEY)"
        )
    return S3Store(
        settings.s3_endpoint,
        bucket,
        prefix,
        settings.s3_access_key,
        settings.s3_secret_key,
        settings.s3_secure,
        create_bucket=create_bucket,
    )


def open_store(
    url_or_settings: str | Settings | None = None,
    settings: Settings | None = None,
    *,
    create_bucket: bool = False,
) -> ArtifactStore:
    """Open the artifact store named by a URL or by `settings.store`.

    "" means `<cache_dir>/store`; a path (or file://path) is a LocalStore; "s3://bucket/prefix" is an
    S3Store whose endpoint and credentials come from `settings` (default: `Settings()`; processes
    pass their resolved settings, library code reads no environment). Raises InvalidArgument for an
    unknown scheme.
    """
    if isinstance(url_or_settings, Settings):
        settings = url_or_settings
        url = settings.store
    else:
        url = url_or_settings if url_or_settings is not None else None
    if settings is None:
        settings = Settings()
    if url is None:
        url = settings.store
    url = url.strip()
    if url.startswith("s3://"):
        bucket, prefix = parse_s3_url(url)
        return s3_store(bucket, prefix, settings, create_bucket=create_bucket)
    if url.startswith("file://"):
        return LocalStore(url[len("file://") :])
    if "://" in url:
        raise InvalidArgument(
            f"store URL {url!r}: unknown scheme (use a directory path or s3://bucket/prefix)"
        )
    return LocalStore(url or Path(settings.cache_dir) / "store")


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_to_cache(url: str, cache_dir: str | Path | None = None, settings: Settings | None = None) -> Path:
    """Download the object `s3://bucket/key` once into `<cache_dir>/s3/bucket/key` and return the path.

    A cached copy is reused when its recorded size and etag match the object's (so a replaced object
    is downloaded again); when the endpoint is unreachable a previously verified copy is used with a
    warning. A fresh download is checked against the object's size and, for single-part uploads, its
    MD5 etag. Raises NotFound for a missing object, Unavailable when the endpoint cannot be reached
    and nothing is cached, FailedPrecondition for refused credentials.
    """
    settings = settings or Settings()  # the defaults; callers pass their process's settings
    bucket, key = parse_s3_url(url)
    if not key:
        raise InvalidArgument(f"{url!r} names a bucket, not an object")
    root = Path(cache_dir or settings.cache_dir).expanduser() / "s3" / bucket
    dest = root / key
    meta_path = dest.with_name(f".{dest.name}.meta.json")
    cached = json.loads(meta_path.read_text()) if meta_path.is_file() and dest.is_file() else None
    store = s3_store(bucket, "", settings)
    try:
        try:
            info = store.stat(key)
        except Unavailable:
            if cached is not None and dest.stat().st_size == cached["size_bytes"]:
                log.warning("%s unreachable; using the cached copy %s", store.endpoint, dest)
                return dest
            raise
        if (
            cached == {"size_bytes": info.size_bytes, "etag": info.etag}
            and dest.stat().st_size == info.size_bytes
        ):
            return dest
        log.info("downloading %s (%d bytes) to %s", url, info.size_bytes, dest)
        store.get_file(key, dest)
    finally:
        store.close()
    size = dest.stat().st_size
    single_part_md5 = len(info.etag) == 32 and "-" not in info.etag
    if size != info.size_bytes or (single_part_md5 and _md5(dest) != info.etag.lower()):
        dest.unlink(missing_ok=True)
        raise Unavailable(
            f"download of {url} is corrupt (got {size} bytes, expected {info.size_bytes}, etag "
            f"{info.etag}); try again"
        )
    meta_path.write_text(json.dumps({"size_bytes": info.size_bytes, "etag": info.etag}))
    return dest
