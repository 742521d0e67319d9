"""Datasets in S3 against a real SeaweedFS: upload, load as imagefolder / manifest / webdataset, caching,
fingerprints from listings, errors, and a battle on an s3:// dataset.

Object reads are counted by wrapping the real `S3Store.get_file` (every dataset object read goes
through it; listings use `list_info` and read no object): the wrapper calls through to SeaweedFS.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from s3_fixtures import S3_ADMIN, S3Identity

from bobench.config import Settings
from bobench.data import configure, load_dataset, validate_dataset
from bobench.data.context import reset
from bobench.data.upload import upload_dataset
from bobench.errors import FailedPrecondition, InvalidArgument, Unavailable
from bobench.stack.procs import stop_pid
from bobench.stack.seaweedfs import start_seaweedfs
from bobench.store import S3Store

pytestmark = pytest.mark.integration

CLASSES = ("zero", "one", "two", "three")
PER_CLASS = 10


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A small real ImageFolder: the first 10 UCI digits of 0-3, as PNGs in class folders."""
    digits = load_dataset("uci_digits")
    root = tmp_path_factory.mktemp("digits") / "tree"
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        members = np.flatnonzero(digits.labels == label)[:PER_CLASS]
        for n, i in enumerate(members):
            Image.fromarray(digits.load(int(i))).save(root / name / f"{n:02d}.png")
    return root


@pytest.fixture
def settings(s3_settings):
    configure(s3_settings)
    yield s3_settings
    reset()


@pytest.fixture
def bucket(seaweedfs):
    name = f"d-{uuid.uuid4().hex[:12]}"
    S3Store(seaweedfs.address, name, "", S3_ADMIN.access_key, S3_ADMIN.secret_key, create_bucket=True).close()
    return name


@pytest.fixture
def object_reads(monkeypatch):
    """Keys of the objects read from S3 (bodies downloaded), in order."""
    reads: list[str] = []
    real = S3Store.get_file

    def counting(self, key, path):
        reads.append(key)
        return real(self, key, path)

    monkeypatch.setattr(S3Store, "get_file", counting)
    return reads


def assert_same_items(a, b) -> None:
    assert a.classes == b.classes and len(a) == len(b)
    assert np.array_equal(a.labels, b.labels)
    assert {k: v.tolist() for k, v in a.splits.items()} == {k: v.tolist() for k, v in b.splits.items()}
    for i in range(len(a)):
        assert np.array_equal(a.load(i), b.load(i)), a.describe(i)


def write_manifest(path, rows) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)


def test_upload_then_every_format_loads_like_the_local_folder(settings, bucket, tree, tmp_path):
    local = load_dataset({"type": "imagefolder", "path": str(tree)}, seed=2)
    result = upload_dataset(tree, f"s3://{bucket}/digits", settings)
    assert result.ref == {"type": "imagefolder", "path": f"s3://{bucket}/digits"}
    assert result.uploaded == len(local) == 40 and result.skipped == 0
    assert_same_items(load_dataset(result.ref, seed=2), local)
    assert_same_items(load_dataset(f"s3://{bucket}/digits/", seed=2), local)

    shards = upload_dataset(tree, f"s3://{bucket}/digits-wds", settings, shards=3)
    assert shards.ref == {"type": "webdataset", "path": f"s3://{bucket}/digits-wds"}
    assert shards.uploaded == 4  # three shards and classes.txt
    assert_same_items(load_dataset(shards.ref, seed=2), local)

    relative = [(f"{c}/{n:02d}.png", c) for c in CLASSES for n in range(PER_CLASS)]
    relative[0] = (f"s3://{bucket}/digits/zero/00.png", "zero")  # absolute keys work too
    write_manifest(tmp_path / "manifest.csv", relative)
    S3Store(settings.s3_endpoint, bucket, "digits", S3_ADMIN.access_key, S3_ADMIN.secret_key).put_file(
        "manifest.csv", tmp_path / "manifest.csv"
    )
    write_manifest(tmp_path / "local.csv", [(str(tree / p.split("digits/")[-1]), c) for p, c in relative])
    from_s3 = load_dataset({"type": "manifest", "path": f"s3://{bucket}/digits/manifest.csv"}, seed=2)
    assert_same_items(
        from_s3, load_dataset({"type": "manifest", "path": str(tmp_path / "local.csv")}, seed=2)
    )
    assert from_s3.describe(1) == f"s3://{bucket}/digits/zero/01.png"


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset"])
def test_fingerprint_needs_no_object_reads_and_a_second_load_reads_none(
    settings, bucket, tree, object_reads, fmt
):
    ref = upload_dataset(tree, f"s3://{bucket}/d", settings, format=fmt).ref
    ds = load_dataset(ref)
    fingerprint = ds.fingerprint
    assert object_reads == []  # listing only: no image, no shard
    validate_dataset(ds)
    assert len(object_reads) == (40 if fmt == "imagefolder" else 2)  # every image / shard + classes.txt
    object_reads.clear()
    again = load_dataset(ref)
    validate_dataset(again)
    assert again.fingerprint == fingerprint and object_reads == []  # served from the digest cache
    blobs = list(Path(settings.cache_dir).glob("datasets/blobs/*"))
    assert len(blobs) == (40 if fmt == "imagefolder" else 2)


def test_manifest_fingerprint_reads_only_the_manifest(settings, bucket, tree, tmp_path, object_reads):
    upload_dataset(tree, f"s3://{bucket}/d", settings)
    write_manifest(tmp_path / "m.csv", [(f"{c}/{n:02d}.png", c) for c in CLASSES for n in range(PER_CLASS)])
    S3Store(settings.s3_endpoint, bucket, "", S3_ADMIN.access_key, S3_ADMIN.secret_key).put_file(
        "d/m.csv", tmp_path / "m.csv"
    )
    ds = load_dataset({"type": "manifest", "path": f"s3://{bucket}/d/m.csv"})
    assert len(ds.fingerprint) == 16 and object_reads == ["d/m.csv"]


def test_same_content_twice_same_fingerprint_a_changed_object_changes_it(settings, bucket, tree):
    for fmt in ("imagefolder", "webdataset"):
        first = upload_dataset(tree, f"s3://{bucket}/a-{fmt}", settings, format=fmt)
        again = upload_dataset(tree, f"s3://{bucket}/a-{fmt}", settings, format=fmt)
        assert again.uploaded == 0 and again.skipped == first.uploaded  # idempotent
        other = upload_dataset(tree, f"s3://{bucket}/b-{fmt}", settings, format=fmt)
        assert load_dataset(first.ref).fingerprint == load_dataset(other.ref).fingerprint
    ref = {"type": "imagefolder", "path": f"s3://{bucket}/a-imagefolder"}
    before = load_dataset(ref)
    before_fp, first_image = before.fingerprint, before.load(0)
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(buf, format="PNG")
    store = S3Store(settings.s3_endpoint, bucket, "a-imagefolder", S3_ADMIN.access_key, S3_ADMIN.secret_key)
    store.put_bytes(
        "one/00.png", buf.getvalue()
    )  # item 0 is one/00.png (classes sort: one, three, two, zero)
    after = load_dataset(ref)
    assert after.fingerprint != before_fp
    assert not np.array_equal(after.load(0), first_image) and after.load(0).min() == 255


def test_a_loaded_dataset_loads_again_when_the_store_is_down(seaweedfs, tmp_path, tree):
    """A SeaweedFS of its own, stopped after the first load (the session's one keeps serving)."""
    admin = S3Identity("admin", "own-admin", "own-admin-secret-0123")
    service = start_seaweedfs(tmp_path / "weed", [admin])
    try:
        settings = Settings(
            cache_dir=str(tmp_path / "cache"),
            s3_endpoint=f"http://{service.address}",
            s3_access_key=admin.access_key,
            s3_secret_key=admin.secret_key,
        )
        configure(settings)
        ref = upload_dataset(tree, "s3://offline/d", settings, shards=2).ref
        online = load_dataset(ref)
        validate_dataset(online)
    finally:
        stop_pid(service.pid, timeout_s=10)
    try:
        offline = load_dataset(ref)  # the saved listing and the cached shards
        assert offline.fingerprint == online.fingerprint
        assert_same_items(offline, online)
        configure(replace(settings, cache_dir=str(tmp_path / "fresh")))
        with pytest.raises(Unavailable, match=service.address):
            load_dataset(ref)
    finally:
        reset()


def test_errors_name_what_and_where(settings, seaweedfs, bucket, tree, tmp_path):
    with pytest.raises(InvalidArgument, match=r"bucket 'no-such-bucket-x' does not exist"):
        load_dataset("s3://no-such-bucket-x/d/")
    with pytest.raises(InvalidArgument, match=rf"s3://{bucket}/empty: no objects under prefix 'empty/'"):
        load_dataset({"type": "webdataset", "path": f"s3://{bucket}/empty"})
    upload_dataset(tree, f"s3://{bucket}/d", settings)
    write_manifest(tmp_path / "m.csv", [("zero/00.png", "zero"), ("zero/gone.png", "zero")])
    store = S3Store(settings.s3_endpoint, bucket, "d", S3_ADMIN.access_key, S3_ADMIN.secret_key)
    store.put_file("m.csv", tmp_path / "m.csv")
    with pytest.raises(
        InvalidArgument, match=r"m\.csv: row 3: field 'path': the object it names does not exist"
    ):
        load_dataset({"type": "manifest", "path": f"s3://{bucket}/d/m.csv"})
    with pytest.raises(InvalidArgument, match=r"manifest: object .*/nope\.csv does not exist"):
        load_dataset({"type": "manifest", "path": f"s3://{bucket}/d/nope.csv"})

    import tarfile

    with tarfile.open(tmp_path / "test-0.tar", "w") as tar:
        for name, data in (("a.png", b"not a png"), ("a.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    store.put_file("bad/test-0.tar", tmp_path / "test-0.tar")
    bad = load_dataset({"type": "webdataset", "path": f"s3://{bucket}/d/bad/"})
    with pytest.raises(InvalidArgument, match=rf"s3://{bucket}/d/bad/test-0\.tar: member a\.png"):
        validate_dataset(bad)

    wrong = replace(settings, s3_secret_key="not-the-secret")
    configure(wrong)
    with pytest.raises(FailedPrecondition, match="SignatureDoesNotMatch|InvalidAccessKeyId"):
        load_dataset(f"s3://{bucket}/d/")
    configure(replace(settings, s3_endpoint="http://127.0.0.1:9"))
    with pytest.raises(Unavailable, match="127.0.0.1:9"):
        load_dataset(f"s3://{bucket}/d/")
    reset()
    with pytest.raises(FailedPrecondition, match=r"never called bobench.data.configure"):
        load_dataset(f"s3://{bucket}/d/")


def test_cli_upload_prints_the_ref_and_a_battle_runs_on_it(
    settings, bucket, tree, tmp_path, monkeypatch, capsys
):
    from bobench.battle.runner import run_battle
    from bobench.battle.spec import parse_spec
    from bobench.cli import main as bob

    monkeypatch.setenv("BOBENCH_S3_ENDPOINT", settings.s3_endpoint)
    monkeypatch.setenv("BOBENCH_S3_ACCESS_KEY", settings.s3_access_key)
    monkeypatch.setenv("BOBENCH_S3_SECRET_KEY", settings.s3_secret_key)
    url = f"s3://{bucket}/cli"
    argv = [
        "datasets",
        "upload",
        str(tree),
        url,
        "--shards",
        "2",
        "--cache-dir",
        settings.cache_dir,
        "--no-progress",
    ]
    assert bob(argv) == 0
    out = capsys.readouterr().out
    ref = json.loads(out.strip().splitlines()[-1])
    assert ref == {"type": "webdataset", "path": url} and "3 object(s) uploaded" in out
    assert bob(argv) == 0 and "0 object(s) uploaded" in capsys.readouterr().out

    spec = parse_spec(
        {
            "name": "s3",
            "backbones": ["toy"],
            "datasets": [{"name": "digits-s3", "ref": ref}, {"name": "digits-folder", "ref": f"{url}-if/"}],
            "protocols": [{"name": "knn", "config": {"ks": [1, 3]}}],
        },
        base_dir=tmp_path,
    )
    upload_dataset(tree, f"{url}-if", settings)
    outcome = run_battle(spec, tmp_path / "out", replace(settings, threads=1), progress=False)
    assert outcome.failed == 0, [r.error for r in outcome.records]
    assert {r.dataset for r in outcome.records} == {"digits-s3", "digits-folder"}
    assert all(0.0 <= r.metrics["top1"] <= 1.0 for r in outcome.records)


def test_multipart_etag_is_predicted_so_large_shards_are_skipped_too(s3_settings, bucket, tmp_path):
    from bobench.data.upload import s3_etag

    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, 17 * 1024 * 1024, dtype=np.uint8).tobytes())
    store = S3Store(s3_settings.s3_endpoint, bucket, "", S3_ADMIN.access_key, S3_ADMIN.secret_key)
    store.put_file("big.bin", big)
    assert store.stat("big.bin").etag == s3_etag(big)
    assert s3_etag(big).endswith("-2")
