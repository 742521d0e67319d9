"""How tritonserver reaches an S3 model repository and who may control its models.

- `triton_s3_repository`: `s3://bucket/prefix` + the S3 endpoint -> Triton's
  `s3://http://host:port/bucket/prefix` (Triton's S3 path check allows only `[0-9a-zA-Z.-_]` per
  segment and a lower-case bucket, so other names are refused here with InvalidArgument);
- `s3_environment`: the AWS_* variables Triton's S3 client reads, for the child process only;
- `ensure_s3_repository`: Triton refuses a prefix that holds no object ("repository path is not a
  valid directory"), so an empty one gets a small marker file at its root (Triton only treats
  sub-directories as models);
- `restricted_flags`: two keys, two groups of Triton's protocol categories. The admin key
  (`bobench-admin-key`, held by the publisher) unlocks ADMIN_PROTOCOLS: model control, shared-memory
  registration, trace and log settings. The service key (`bobench-service-key`, held by evaluators)
  unlocks SERVICE_PROTOCOLS: inference, model metadata/config and statistics. `health` stays open
  (readiness probes). With `--grpc-restricted-protocol=<protocols>:bobench-admin-key=K` Triton 2.51
  expects the gRPC header `triton-grpc-protocol-bobench-admin-key: K` (without it, or with another
  value, it answers UNAVAILABLE "This protocol is restricted, expecting header ..."); the HTTP
  frontend (`--http-restricted-api=...`) expects `bobench-admin-key: K` itself. A category may be
  in one group only; tritonserver accepts one flag per group;
- `admin_headers` / `ServiceKey` / `service_client`: what clients send. A tritonclient plugin adds the
  service header to every call of a client, so code handed such a client (serving_latency's
  closed-loop load) inherits the key without knowing it. Keys are never logged or repr'd.

Triton reads these flags from its command line only (no config file, no environment variable, no
@file; checked on 2.51's option parser), so the keys are visible in /proc/<pid>/cmdline to local
users of the host: the local stack's keys are fresh per `up`, the stack binds loopback only; on a
cluster the container's PID namespace is its own.
"""

from __future__ import annotations

import logging
import re

from bobench.errors import InvalidArgument
from bobench.store.setup import REPOSITORY_MARKER
from bobench.triton_errors import ADMIN_HEADER, GRPC_RESTRICTED_PREFIX, SERVICE_HEADER

log = logging.getLogger(__name__)

_S3_SEGMENT = re.compile(r"^[0-9a-zA-Z.\-_]+$")
ADMIN_PROTOCOLS = "model-repository,shared-memory,trace,logging"
SERVICE_PROTOCOLS = "inference,metadata,model-config,statistics"


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


def restricted_flags(admin_key: str = "", service_key: str = "") -> list[str]:
    """tritonserver flags restricting ADMIN_PROTOCOLS to `admin_key` and SERVICE_PROTOCOLS to
    `service_key` on gRPC and HTTP (an empty key leaves its group open)."""
    flags = []
    for protocols, header, key in (
        (ADMIN_PROTOCOLS, ADMIN_HEADER, admin_key),
        (SERVICE_PROTOCOLS, SERVICE_HEADER, service_key),
    ):
        if key:
            flags += [
                f"--grpc-restricted-protocol={protocols}:{header}={key}",
                f"--http-restricted-api={protocols}:{header}={key}",
            ]
    return flags


def admin_headers(admin_key: str) -> dict[str, str] | None:
    """gRPC headers that unlock model control on a server started with `admin_key` (None: no key)."""
    return {GRPC_RESTRICTED_PREFIX + ADMIN_HEADER: admin_key} if admin_key else None


class ServiceKey:
    """A tritonclient plugin: every call of the client it is registered on carries the service key."""

    def __init__(self, service_key: str) -> None:
        self._header = (GRPC_RESTRICTED_PREFIX + SERVICE_HEADER, service_key)

    def __call__(self, request) -> None:
        request.headers[self._header[0]] = self._header[1]

    def __repr__(self) -> str:  # never print the key
        return "ServiceKey(***)"


def service_client(url: str, service_key: str = ""):
    """A tritonclient gRPC client of `url` whose every call carries `service_key` (none when "")."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    if service_key:
        client.register_plugin(ServiceKey(service_key))
    return client


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
