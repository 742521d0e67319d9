"""How tritonserver reaches an S3 model repository and who may control its models.

- `triton_s3_repository`: `s3://bucket/prefix` + the S3 endpoint -> Triton's
  `s3://http://host:port/bucket/prefix` (Triton's S3 path check allows only `[0-9a-zA-Z.-_]` per
  segment and a lower-case bucket, so other names are refused here with InvalidArgument);
- `s3_environment`: the AWS_* variables Triton's S3 client reads, for the child process only;
- `ensure_s3_repository`: Triton refuses a prefix that holds no object ("repository path is not a
  valid directory"), so an empty one gets a small marker file at its root (Triton only treats
  sub-directories as models);
- `admin_headers`: with `--grpc-restricted-protocol=model-repository,shared-memory:bobench-admin-key=K`
  Triton 2.51 expects the gRPC header `triton-grpc-protocol-bobench-admin-key: K` (without it it
  answers UNAVAILABLE "This protocol is restricted"); the HTTP frontend
  (`--http-restricted-api=...`) expects `bobench-admin-key: K` itself.
"""

from __future__ import annotations

import logging
import re

from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)

_S3_SEGMENT = re.compile(r"^[0-9a-zA-Z.\-_]+$")
REPOSITORY_MARKER = "bobench-repository.json"
ADMIN_HEADER = "bobench-admin-key"
RESTRICTED = "model-repository,shared-memory"
GRPC_RESTRICTED_PREFIX = "triton-grpc-protocol-"


def triton_s3_repository(url: str, endpoint: str) -> str:
    """`s3://bucket/prefix` + endpoint `http://h:p` -> Triton's `s3://http://h:p/bucket/prefix`.

    Raises InvalidArgument when the endpoint is missing or a segment breaks Triton's S3 path rules.
    """
    from bobench.store.resolve import parse_s3_url
    from bobench.store.s3 import split_endpoint

    bucket, prefix = parse_s3_url(url)
    if not endpoint:
        raise InvalidArgument(f"model repository {url}: no S3 endpoint configured (setting s3_endpoint)")
    host, secure = split_endpoint(endpoint, False)
    bad = [p for p in [bucket, *prefix.split("/")] if p and not _S3_SEGMENT.match(p)]
    if bad or bucket != bucket.lower():
        raise InvalidArgument(
            f"model repository {url}: Triton's S3 paths allow only [0-9a-zA-Z.-_] per segment and a "
            f"lower-case bucket; offending: {bad or [bucket]}"
        )
    path = f"{bucket}/{prefix}" if prefix else bucket
    return f"s3://{'https' if secure else 'http'}://{host}/{path}"


def s3_environment(settings) -> dict[str, str]:
    """The AWS_* variables tritonserver's S3 client reads (for the child process only)."""
    return {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def admin_headers(admin_key: str) -> dict[str, str] | None:
    """gRPC headers that unlock model control on a server started with `admin_key` (None: no key)."""
    return {GRPC_RESTRICTED_PREFIX + ADMIN_HEADER: admin_key} if admin_key else None


def ensure_s3_repository(url: str, endpoint: str, s3_env: dict[str, str]) -> None:
    """Create the bucket and mark an empty repository prefix so Triton accepts it.

    A read-only identity cannot: that is logged (the publisher creates the prefix on its first upload).
    """
    from bobench.errors import FailedPrecondition
    from bobench.store.resolve import parse_s3_url
    from bobench.store.s3 import S3Store

    bucket, prefix = parse_s3_url(url)
    store = S3Store(endpoint, bucket, prefix, s3_env["AWS_ACCESS_KEY_ID"], s3_env["AWS_SECRET_ACCESS_KEY"])
    try:
        store.ensure_bucket()
        if not store.list(""):
            store.put_json(REPOSITORY_MARKER, {"bobench": "triton model repository"})
    except FailedPrecondition as exc:
        log.warning("could not mark the empty model repository %s: %s", url, exc)
    finally:
        store.close()
