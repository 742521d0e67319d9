"""User plugins: modules named in BOBENCH_PLUGINS (comma-separated) are imported at start-up, so their
`@register_backbone` / `@register_dataset` / `register_protocol` calls take effect in the CLI and services."""

from __future__ import annotations

import importlib
import logging
import os

from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)
PLUGINS_ENV = "BOBENCH_PLUGINS"
_loaded: set[str] = set()


def load_plugins(names: str | None = None) -> list[str]:
    """Import each plugin module once; a module that fails to import is an InvalidArgument naming it."""
    raw = os.environ.get(PLUGINS_ENV, "") if names is None else names
    loaded = []
    for name in (n.strip() for n in raw.split(",")):
        if not name or name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise InvalidArgument(f"{PLUGINS_ENV}: cannot import plugin module {name!r}: {exc}") from exc
        _loaded.add(name)
        loaded.append(name)
        log.info("loaded plugin %s", name)
    return loaded
