"""SeaweedFS S3 fixtures (imported by conftest.py): one real `weed mini` per session on loopback,
with an admin identity and a read-only one, stopped by PID (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import pytest

from bobench.config import Settings
from bobench.stack.procs import stop_pid
from bobench.stack.seaweedfs import S3Identity, start_seaweedfs, weed_binary

S3_ADMIN = S3Identity("admin", "bobench-admin", "admin-secret-0123456789")
S3_READER = S3Identity("reader", "bobench-reader", "reader-secret-0123456789", ("Read", "List"))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """The running SeaweedFS Service (`.address` is the S3 host:port)."""
    from bobench.errors import Unavailable

    try:
        weed_binary()
    except Unavailable as exc:
        pytest.skip(str(exc))
    service = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), [S3_ADMIN, S3_READER])
    try:
        yield service
    finally:
        stop_pid(service.pid, timeout_s=10)


@pytest.fixture
def s3_settings(seaweedfs, tmp_path):
    """Settings whose s3_* fields reach the session's SeaweedFS as the admin identity."""
    return Settings(
        cache_dir=str(tmp_path / "cache"),
        s3_endpoint=f"http://{seaweedfs.address}",
        s3_access_key=S3_ADMIN.access_key,
        s3_secret_key=S3_ADMIN.secret_key,
    )
