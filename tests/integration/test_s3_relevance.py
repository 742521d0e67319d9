"""Per-query retrieval ground truth (positives / junk columns) in a manifest stored in a real SeaweedFS S3:
read like a local manifest's, by item source (the objects' s3:// URLs), and part of the fingerprint
through the manifest object."""

from __future__ import annotations

import uuid

import pytest
from PIL import Image
from s3_fixtures import S3_ADMIN

from bobench.data import configure, load_dataset
from bobench.data.context import reset
from bobench.store import S3Store

pytestmark = pytest.mark.integration

ROWS = [
    "im0.png,a,query,im2.png;im3.png,im4.png",
    "im1.png,b,query,im5.png,",
    "im2.png,a,gallery,,",
    "im3.png,a,gallery,,",
    "im4.png,a,gallery,,",
    "im5.png,b,gallery,,",
]


@pytest.fixture
def store(s3_settings, seaweedfs, tmp_path):
    configure(s3_settings)
    bucket = f"r-{uuid.uuid4().hex[:12]}"
    s3 = S3Store(
        seaweedfs.address, bucket, "gnd", S3_ADMIN.access_key, S3_ADMIN.secret_key, create_bucket=True
    )
    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / f"im{i}.png")
        s3.put_file(f"im{i}.png", tmp_path / f"im{i}.png")
    yield s3, bucket
    s3.close()
    reset()


def _put_manifest(s3, tmp_path, rows) -> None:
    (tmp_path / "gnd.csv").write_text("path,label,split,positives,junk\n" + "\n".join(rows) + "\n")
    s3.put_file("gnd.csv", tmp_path / "gnd.csv")


def test_s3_manifest_carries_per_query_ground_truth_by_object_url(store, tmp_path):
    s3, bucket = store
    _put_manifest(s3, tmp_path, ROWS)
    ds = load_dataset({"type": "manifest", "path": f"s3://{bucket}/gnd/gnd.csv"})
    url = [f"s3://{bucket}/gnd/im{i}.png" for i in range(6)]
    assert ds.meta["relevance"] == {
        "queries": url[:2],
        "positives": [url[2:4], [url[5]]],
        "junk": [[url[4]], []],
    }
    before = ds.fingerprint
    _put_manifest(s3, tmp_path, ["im0.png,a,query,im3.png,im4.png;im2.png", *ROWS[1:]])  # ROxford Hard
    hard = load_dataset({"type": "manifest", "path": f"s3://{bucket}/gnd/gnd.csv"})
    assert hard.meta["relevance"]["junk"][0] == [url[2], url[4]] and hard.fingerprint != before
