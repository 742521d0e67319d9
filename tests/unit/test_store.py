"""LocalStore and store URL resolution (the S3 store is tested against SeaweedFS in tests/integration)."""

from __future__ import annotations

import threading

import pytest

from bobench.config import Settings
from bobench.errors import InvalidArgument, NotFound
from bobench.store import LocalStore, S3Store, check_key, open_store, parse_s3_url


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def test_put_get_stat_exists_delete_round_trip(store):
    store.put_bytes("battles/b1/plan.json", b"[1, 2]")
    assert store.get_bytes("battles/b1/plan.json") == b"[1, 2]"
    assert store.exists("battles/b1/plan.json")
    assert store.stat("battles/b1/plan.json").size_bytes == 6
    assert not store.exists("battles/b1")  # a prefix is not an object
    assert store.delete("battles/b1/plan.json") is True
    assert store.delete("battles/b1/plan.json") is False
    assert not store.exists("battles/b1/plan.json")


def test_missing_object_raises_not_found_naming_the_key(store):
    with pytest.raises(NotFound, match="results/abc.json"):
        store.get_bytes("results/abc.json")
    with pytest.raises(NotFound, match="nope"):
        store.stat("nope")


def test_list_is_recursive_sorted_and_prefix_filtered(store):
    for key in ["results/b.json", "results/a.json", "battles/x/runs/k.json", "battles/xy/battle.json"]:
        store.put_bytes(key, b"1")
    assert store.list("results/") == ["results/a.json", "results/b.json"]
    assert store.list("battles/x/") == ["battles/x/runs/k.json"]
    assert store.list("battles/x") == ["battles/x/runs/k.json", "battles/xy/battle.json"]
    assert store.list("") == sorted(store.list("battles/") + store.list("results/"))
    assert store.list("nothing/here/") == []


def test_json_helpers_and_corrupt_json_names_the_object(store):
    store.put_json("a.json", {"b": [1, 2], "a": None})
    assert store.get_json("a.json") == {"a": None, "b": [1, 2]}
    store.put_bytes("bad.json", b"{not json")
    with pytest.raises(InvalidArgument, match="bad.json"):
        store.get_json("bad.json")


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "../escape", "a/../b", ".hidden", "a/.tmp-x", "sp ace", "a/"]
)
def test_bad_keys_are_refused(store, key):
    with pytest.raises(InvalidArgument, match="store key"):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidArgument):
        check_key(key)


def test_put_file_get_file_stream_and_create_parents(store, tmp_path):
    src = tmp_path / "weights.bin"
    payload = bytes(range(256)) * 5000
    src.write_bytes(payload)
    store.put_file("models/w.bin", src)
    out = store.get_file("models/w.bin", tmp_path / "down" / "deep" / "w.bin")
    assert out.read_bytes() == payload
    with pytest.raises(NotFound):
        store.put_file("models/x.bin", tmp_path / "missing.bin")
    with pytest.raises(NotFound):
        store.get_file("models/missing.bin", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


def test_readers_never_see_partial_objects_and_no_temp_files_remain(store):
    big_a, big_b = b"a" * 2_000_000, b"b" * 2_000_000
    store.put_bytes("obj", big_a)
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(store.get_bytes("obj"))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(20):
        store.put_bytes("obj", big_b if i % 2 == 0 else big_a)
    stop.set()
    t.join()
    assert seen <= {big_a, big_b}
    assert store.list("") == ["obj"]
    assert not [p for p in store.root.rglob("*") if p.name.startswith(".tmp-")]


def test_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidArgument, match="not a directory"):
        LocalStore(tmp_path / "f")


def test_open_store_resolves_paths_defaults_and_s3(tmp_path):
    settings = Settings(cache_dir=str(tmp_path / "cache"))
    assert isinstance(open_store("", settings), LocalStore)
    assert open_store("", settings).root == (tmp_path / "cache" / "store").resolve()
    assert open_store(str(tmp_path / "s"), settings).root == (tmp_path / "s").resolve()
    assert open_store(f"file://{tmp_path}/f", settings).root == (tmp_path / "f").resolve()
    s3 = open_store(
        Settings(
            cache_dir=str(tmp_path),
            store="s3://bobench-art/runs/v1",
            s3_endpoint="http://127.0.0.1:1",
            s3_access_key="a",
            s3_secret_key="b",
        )
    )
    assert (
        isinstance(s3, S3Store)
        and s3.url == "s3://bobench-art/runs/v1"
        and s3.endpoint == "http://127.0.0.1:1"
    )


def test_open_store_errors_name_the_problem(tmp_path):
    settings = Settings(cache_dir=str(tmp_path))
    with pytest.raises(InvalidArgument, match="no S3 endpoint"):
        open_store("s3://bucket-a/x", settings)
    with pytest.raises(InvalidArgument, match="unknown scheme"):
        open_store("gs://bucket/x", settings)
    with pytest.raises(InvalidArgument, match="no bucket"):
        parse_s3_url("s3:///key")
    with pytest.raises(InvalidArgument, match="bucket name"):
        S3Store("127.0.0.1:1", "B", "")
    assert parse_s3_url("s3://bkt/a/b/") == ("bkt", "a/b")


def test_unreachable_s3_endpoint_is_unavailable(tmp_path):
    from bobench.errors import Unavailable

    s3 = S3Store("127.0.0.1:9", "bucket-a", "p", "a", "b", retries=0, timeout_s=2)
    with pytest.raises(Unavailable, match="127.0.0.1:9"):
        s3.get_bytes("x")
