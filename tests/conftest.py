"""Shared fixtures: isolated cache directories and settings; single-threaded torch for determinism."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def cache_dir(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    return d


@pytest.fixture
def settings(cache_dir):
    from bobench.config import Settings

    return Settings(cache_dir=str(cache_dir), batch_size=16, threads=1)
