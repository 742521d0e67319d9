"""Artifact store: one interface over a local directory (default) and S3 (MinIO, SeaweedFS)."""

from bobench.store.base import ArtifactStore, ObjectInfo, check_key
from bobench.store.local import LocalStore
from bobench.store.resolve import fetch_to_cache, open_store, parse_s3_url
from bobench.store.s3 import S3Store

__all__ = [
    "ArtifactStore",
    "LocalStore",
    "ObjectInfo",
    "S3Store",
    "check_key",
    "fetch_to_cache",
    "open_store",
    "parse_s3_url",
]
