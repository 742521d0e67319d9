"""Shared fixtures: isolated cache directories and settings; single-threaded torch for determinism.

The tiers are folders, by what a test starts: tests/unit (pure library, in process), tests/service
(servicers in process, no sockets) and tests/integration (anything that starts a process or a server).
The `integration` marker follows the folder, so `-m "not integration"` deselects exactly that tier.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

INTEGRATION = Path(__file__).resolve().parent / "integration"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    misplaced = []
    for item in items:
        if INTEGRATION in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)
        elif item.get_closest_marker("integration") is not None:
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "marked integration outside tests/integration (move them there): " + ", ".join(misplaced)
        )


@pytest.fixture
def cache_dir(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    return d


@pytest.fixture
def settings(cache_dir):
    from bobench.config import Settings

    return Settings(cache_dir=str(cache_dir), batch_size=16, threads=1)
