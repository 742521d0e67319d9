"""User plugins: the modules named in BOBENCH_PLUGINS (comma-separated) are imported at start-up, so
their `@register_backbone` / `@register_dataset` / `register_protocol` calls take effect in every `bob`
command and in the evaluator and scheduler services (their `main`, before the parser).

An entry is either a module name that Python can import (an installed package, `my_pkg.plugins`) or
the path of a `.py` file (`~/bob/my_plugins.py`, relative to the working directory): a file is
imported under its stem, with no PYTHONPATH to set.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)
PLUGINS_ENV = "BOBENCH_PLUGINS"
_loaded: set[str] = set()


def is_plugin_file(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def _import_file(entry: str) -> None:
    path = Path(entry).expanduser().resolve()
    if not path.is_file():
        raise InvalidArgument(f"{PLUGINS_ENV}: plugin file {entry!r} does not exist")
    name = path.stem
    if not name.isidentifier():
        raise InvalidArgument(f"{PLUGINS_ENV}: plugin file {entry!r}: {name!r} is not a module name")
    if name in sys.modules:
        raise InvalidArgument(
            f"{PLUGINS_ENV}: plugin file {entry!r}: a module named {name!r} is already imported; rename the file"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as `import name` would: dataclasses and pickling look it up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def load_plugins(names: str | None = None) -> list[str]:
    """Import each plugin (module name or .py file) once; returns the entries imported by this call.
    A plugin that cannot be imported is an InvalidArgument naming it."""
    raw = os.environ.get(PLUGINS_ENV, "") if names is None else names
    loaded = []
    for name in (n.strip() for n in raw.split(",")):
        if not name or name in _loaded:
            continue
        try:
            if is_plugin_file(name):
                _import_file(name)
            else:
                importlib.import_module(name)
        except ImportError as exc:
            raise InvalidArgument(f"{PLUGINS_ENV}: cannot import plugin module {name!r}: {exc}") from exc
        _loaded.add(name)
        loaded.append(name)
        log.info("loaded plugin %s", name)
    return loaded
