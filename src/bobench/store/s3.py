"""S3Store: the artifact store on any S3 API (MinIO in the cluster, SeaweedFS locally), via the minio SDK.

S3 PUTs (single or multipart) become visible only when complete, which gives atomic puts for free.
Errors are mapped to bobench errors: a missing object is NotFound, a refused credential or permission
is FailedPrecondition, and an unreachable endpoint is Unavailable (transient; callers may retry).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from bobench.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from bobench.store.base import ArtifactStore, ObjectInfo, check_key, check_prefix

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"}
_REFUSED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "AllAccessDisabled",
}
_MULTIPART_PART_BYTES = 16 * 1024 * 1024


def split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """'http://h:p' / 'https://h:p' / 'h:p' -> ('h:p', secure). A scheme overrides `secure`."""
    endpoint = endpoint.strip().rstrip("/")
    if endpoint.startswith("https://"):
        return endpoint[len("https://") :], True
    if endpoint.startswith("http://"):
        return endpoint[len("http://") :], False
    if not endpoint or "/" in endpoint:
        raise InvalidArgument(
            f"S3 endpoint must be host:port (optionally with http:// or https://), got {endpoint!r}"
        )
    return endpoint, secure


class S3Store(ArtifactStore):
    """Objects under `prefix` in `bucket` of the S3 service at `endpoint`.

    The constructor does not touch the network unless `create_bucket` is set, in which case a missing
    bucket is created (FailedPrecondition when the identity may not create it).
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        access_key: str = "",
        secret_key: str = "",
        secure: bool = False,
        region: str = "us-east-1",
        *,
        create_bucket: bool = False,
        timeout_s: float = 30.0,
        retries: int = 2,
    ) -> None:
        import urllib3
        from minio import Minio

        host, secure = split_endpoint(endpoint, secure)
        from minio.helpers import check_bucket_name

        try:
            check_bucket_name(bucket)
        except ValueError:
            raise InvalidArgument(
                f"S3 bucket name {bucket!r} is invalid (3-63 lowercase letters, digits, '.', '-')"
            ) from None
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint = f"{'https' if secure else 'http'}://{host}"
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        )
        self._client = Minio(
            host,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        if create_bucket:
            self.ensure_bucket()

    # -- helpers ---------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, what: str) -> Exception:
        """Translate a minio/urllib3 exception into the bobench error for `what`."""
        from minio.error import S3Error

        if isinstance(exc, S3Error):
            if exc.code in _MISSING:
                return NotFound(f"{self.url}: {what}: {exc.code}")
            if exc.code in _REFUSED:
                return FailedPrecondition(
                    f"{self.endpoint}: {what} refused ({exc.code}): check the access key, "
                    "secret and the identity's permissions"
                )
            return Unavailable(f"{self.endpoint}: {what} failed: {exc.code}: {exc.message}")
        return Unavailable(f"{self.endpoint}: {what} failed: {type(exc).__name__}: {exc}")

    def _call(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:
        from minio.error import MinioException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except (MinioException, HTTPError, OSError) as exc:
            raise self._error(exc, what) from None

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist."""
        if not self._call(f"check bucket {self.bucket!r}", self._client.bucket_exists, self.bucket):
            self._call(f"create bucket {self.bucket!r}", self._client.make_bucket, self.bucket)
            log.info("created bucket %s at %s", self.bucket, self.endpoint)

    # -- interface -------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._call(
            f"put {key!r}",
            self._client.put_object,
            self.bucket,
            self._name(key),
            io.BytesIO(data),
            len(data),
            content_type=content_type,
        )

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)

        def read() -> bytes:
            resp = self._client.get_object(self.bucket, name)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(f"get {key!r}", read)

    def stat(self, key: str) -> ObjectInfo:
        st = self._call(f"stat {key!r}", self._client.stat_object, self.bucket, self._name(key))
        return ObjectInfo(key=key, size_bytes=int(st.size), etag=str(st.etag).strip('"'))

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0

        def names() -> list[str]:
            return [
                o.object_name[cut:]
                for o in self._client.list_objects(self.bucket, prefix=full, recursive=True)
                if not o.is_dir
            ]

        return sorted(self._call(f"list {prefix!r}", names))

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Key, size and etag of every object starting with `prefix` (recursively), sorted by key.

        One listing request per 1000 objects; no object is read."""
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0

        def infos() -> list[ObjectInfo]:
            return [
                ObjectInfo(o.object_name[cut:], int(o.size or 0), str(o.etag or "").strip('"'))
                for o in self._client.list_objects(self.bucket, prefix=full, recursive=True)
                if not o.is_dir
            ]

        return sorted(self._call(f"list {prefix!r}", infos), key=lambda info: info.key)

    def delete(self, key: str) -> bool:
        if not self.exists(key):
            return False
        self._call(f"delete {key!r}", self._client.remove_object, self.bucket, self._name(key))
        return True

    def put_file(self, key: str, path: str | Path) -> None:
        src = Path(path)
        if not src.is_file():
            raise NotFound(f"cannot upload {src} to {self.url}/{key}: no such file")
        self._call(
            f"upload {src} to {key!r}",
            self._client.fput_object,
            self.bucket,
            self._name(key),
            str(src),
            part_size=_MULTIPART_PART_BYTES,
        )

    def get_file(self, key: str, path: str | Path) -> Path:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        os.close(fd)
        try:
            name = self._name(key)

            def download() -> None:
                resp = self._client.get_object(self.bucket, name)
                try:
                    with open(tmp, "wb") as fh:
                        for chunk in resp.stream(1 << 20):
                            fh.write(chunk)
                finally:
                    resp.close()
                    resp.release_conn()

            self._call(f"download {key!r}", download)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def close(self) -> None:
        self._http.clear()
