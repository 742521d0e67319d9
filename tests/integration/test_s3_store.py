"""S3Store and fetch_to_cache against a real SeaweedFS (started by the `seaweedfs` fixture)."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from s3_fixtures import S3_ADMIN, S3_READER

from bobench.config import Settings
from bobench.errors import FailedPrecondition, NotFound
from bobench.store import S3Store, fetch_to_cache, open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(seaweedfs):
    name = f"t-{uuid.uuid4().hex[:12]}"
    S3Store(seaweedfs.address, name, "", S3_ADMIN.access_key, S3_ADMIN.secret_key, create_bucket=True).close()
    return name


def admin_store(seaweedfs, bucket, prefix="pre/fix"):
    return S3Store(seaweedfs.address, bucket, prefix, S3_ADMIN.access_key, S3_ADMIN.secret_key)


def test_round_trip_list_stat_delete_under_a_prefix(seaweedfs, bucket):
    store = admin_store(seaweedfs, bucket)
    store.put_json("battles/b1/battle.json", {"id": "b1"})
    store.put_bytes("results/k1.json", b"{}")
    store.put_bytes("results/k2.json", b"[]")
    assert store.get_json("battles/b1/battle.json") == {"id": "b1"}
    assert store.list("results/") == ["results/k1.json", "results/k2.json"]
    assert store.list("") == ["battles/b1/battle.json", "results/k1.json", "results/k2.json"]
    info = store.stat("results/k2.json")
    assert info.size_bytes == 2 and info.etag == hashlib.md5(b"[]").hexdigest()
    assert store.delete("results/k1.json") and not store.delete("results/k1.json")
    assert not store.exists("results/k1.json") and store.exists("results/k2.json")
    with pytest.raises(NotFound, match="results/k1.json"):
        store.get_bytes("results/k1.json")
    other = admin_store(seaweedfs, bucket, prefix="other")  # prefixes isolate stores in one bucket
    assert other.list("") == []


def test_multipart_file_upload_and_atomic_download(seaweedfs, bucket, tmp_path):
    store = admin_store(seaweedfs, bucket)
    src = tmp_path / "weights.bin"
    payload = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32)  # 20 MiB: two parts
    src.write_bytes(payload)
    store.put_file("models/w.bin", src)
    out = store.get_file("models/w.bin", tmp_path / "dl" / "w.bin")
    assert out.read_bytes() == payload
    assert [p.name for p in out.parent.iterdir()] == ["w.bin"]  # no temporary left behind
    with pytest.raises(NotFound):
        store.get_file("models/missing.bin", tmp_path / "dl" / "missing.bin")
    assert not (tmp_path / "dl" / "missing.bin").exists()


def test_wrong_secret_and_read_only_identity_are_refused(seaweedfs, bucket):
    admin_store(seaweedfs, bucket).put_bytes("x", b"1")
    wrong = S3Store(seaweedfs.address, bucket, "pre/fix", S3_ADMIN.access_key, "not-the-secret")
    with pytest.raises(FailedPrecondition, match="SignatureDoesNotMatch|InvalidAccessKeyId"):
        wrong.get_bytes("x")
    reader = S3Store(seaweedfs.address, bucket, "pre/fix", S3_READER.access_key, S3_READER.secret_key)
    assert reader.get_bytes("x") == b"1" and reader.list("") == ["x"]
    with pytest.raises(FailedPrecondition, match="AccessDenied"):
        reader.put_bytes("y", b"2")
    with pytest.raises(FailedPrecondition):
        S3Store(
            seaweedfs.address,
            f"ro-{uuid.uuid4().hex[:8]}",
            "",
            S3_READER.access_key,
            S3_READER.secret_key,
            create_bucket=True,
        )


def test_open_store_from_settings_and_env(seaweedfs, bucket, s3_settings, monkeypatch):
    """The environment reaches the store through the settings a process resolves at its edge."""
    from bobench.config import load_settings

    store = open_store(f"s3://{bucket}/via-url", s3_settings)
    store.put_bytes("a", b"1")
    monkeypatch.setenv("BOBENCH_S3_ENDPOINT", f"http://{seaweedfs.address}")
    monkeypatch.setenv("BOBENCH_S3_ACCESS_KEY", S3_ADMIN.access_key)
    monkeypatch.setenv("BOBENCH_S3_SECRET_KEY", S3_ADMIN.secret_key)
    assert open_store(f"s3://{bucket}/via-url", load_settings()).get_bytes("a") == b"1"


def test_fetch_to_cache_downloads_once_and_refetches_a_replaced_object(
    seaweedfs, bucket, s3_settings, tmp_path
):
    store = admin_store(seaweedfs, bucket, prefix="")
    store.put_bytes("weights/toy.pt", b"v1" * 1000)
    url = f"s3://{bucket}/weights/toy.pt"
    path = fetch_to_cache(url, tmp_path / "c", settings=s3_settings)
    assert path == tmp_path / "c" / "s3" / bucket / "weights" / "toy.pt" and path.read_bytes() == b"v1" * 1000
    mtime = path.stat().st_mtime_ns
    assert fetch_to_cache(url, tmp_path / "c", settings=s3_settings).stat().st_mtime_ns == mtime  # cached
    store.put_bytes("weights/toy.pt", b"v2" * 1000)
    assert fetch_to_cache(url, tmp_path / "c", settings=s3_settings).read_bytes() == b"v2" * 1000
    offline = Settings(
        cache_dir=s3_settings.cache_dir,
        s3_endpoint="http://127.0.0.1:9",
        s3_access_key="a",
        s3_secret_key="b",
    )
    assert fetch_to_cache(url, tmp_path / "c", settings=offline).read_bytes() == b"v2" * 1000  # verified copy
    with pytest.raises(NotFound):
        fetch_to_cache(f"s3://{bucket}/weights/missing.pt", tmp_path / "c", settings=s3_settings)
