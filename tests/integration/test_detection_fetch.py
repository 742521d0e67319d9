"""`bob datasets fetch` also prepares tree_crowns: it fetches the deepforest wheel into the cache.

The fetches run the real pip client with no network: `PIP_NO_INDEX` and `PIP_FIND_LINKS` (pip's own
settings, inherited by the subprocess) point it at a local folder holding the wheel, which is taken
from the user's bobench cache (fetched there once, from the configured index, by the tree_crowns
tests or `make setup`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bobench.cli import main as bob
from bobench.config import Settings
from bobench.data.detection_bundled import DEEPFOREST_VERSION, DEEPFOREST_WHEEL, deepforest_wheel
from bobench.errors import Unavailable
from bobench.exit_codes import UNAVAILABLE


def test_fetch_help_names_the_tree_crowns_wheel(capsys):
    with pytest.raises(SystemExit) as info:
        bob(["datasets", "fetch", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "tree_crowns" in out and "deepforest wheel" in out and "emoji" in out


def test_fetch_list_shows_the_wheel_path_and_whether_it_is_cached(tmp_path, capsys):
    assert bob(["datasets", "fetch", "--list", "--only", "tree_crowns", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "pypi" / DEEPFOREST_WHEEL) in out and "emoji" not in out
    row = next(line for line in out.splitlines() if DEEPFOREST_WHEEL in line)
    assert "False" in row or "no" in row.lower()
    assert not (tmp_path / "pypi").exists()  # listing fetches nothing


@pytest.fixture
def local_index(tmp_path, monkeypatch) -> Path:
    """A find-links folder with the deepforest wheel, and pip told to use only it."""
    try:
        wheel = deepforest_wheel(Path(Settings().cache_dir))
    except Unavailable as exc:
        pytest.skip(f"deepforest wheel not in the user's cache and not fetchable: {exc}")
    links = tmp_path / "links"
    links.mkdir()
    shutil.copy(wheel, links / DEEPFOREST_WHEEL)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_fetch_puts_the_wheel_into_the_cache_with_pip(tmp_path, local_index, capsys):
    cache = tmp_path / "cache"
    assert bob(["datasets", "fetch", "--only", "tree_crowns", "--cache-dir", str(cache)]) == 0
    target = cache / "pypi" / DEEPFOREST_WHEEL
    assert f"tree_crowns wheel: {target}" in capsys.readouterr().out
    assert target.read_bytes() == (local_index / DEEPFOREST_WHEEL).read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == [DEEPFOREST_WHEEL]  # no temp left behind
    assert bob(["datasets", "fetch", "--list", "--only", "tree_crowns", "--cache-dir", str(cache)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if DEEPFOREST_WHEEL in line)
    assert "True" in row or "yes" in row.lower()


def test_fetch_without_the_wheel_anywhere_exits_3_saying_how_to_get_it(tmp_path, local_index, capsys):
    (local_index / DEEPFOREST_WHEEL).unlink()
    cache = tmp_path / "cache"
    assert bob(["datasets", "fetch", "--only", "tree_crowns", "--cache-dir", str(cache)]) == UNAVAILABLE
    err = capsys.readouterr().err
    assert f"deepforest=={DEEPFOREST_VERSION} --no-deps' failed" in err
    assert f"put {DEEPFOREST_WHEEL} into {cache / 'pypi'} by hand" in err
    assert "could not fetch tree_crowns" in err
    assert not (cache / "pypi" / DEEPFOREST_WHEEL).exists()


def test_a_wheel_baked_into_the_image_is_read_when_the_cache_lacks_it(tmp_path, local_index, monkeypatch):
    """A Job pod: empty cache, no package index, the wheel in the image's folder (setting image_wheels,
    env BOBENCH_IMAGE_WHEELS), read through the process's configured settings."""
    from bobench import data
    from bobench.config import load_settings
    from bobench.data import context as data_context

    baked = tmp_path / "image-wheels"
    baked.mkdir()
    shutil.move(str(local_index / DEEPFOREST_WHEEL), baked / DEEPFOREST_WHEEL)  # no index has it now
    cache = tmp_path / "empty-cache"
    try:
        monkeypatch.setenv("BOBENCH_IMAGE_WHEELS", str(baked))
        data.configure(load_settings())
        assert deepforest_wheel(cache) == baked / DEEPFOREST_WHEEL
        assert not (cache / "pypi" / DEEPFOREST_WHEEL).exists()  # read in place, nothing fetched or copied
        monkeypatch.setenv("BOBENCH_IMAGE_WHEELS", str(tmp_path / "nowhere"))
        assert deepforest_wheel(cache) == baked / DEEPFOREST_WHEEL  # settings are read once, at the edge
        data.configure(load_settings())
        with pytest.raises(Unavailable, match="pip download deepforest"):
            deepforest_wheel(cache)
    finally:
        data_context.reset()
