"""The one registration idiom: a name -> object `Registry` that loads its built-in modules on first
lookup, and `lazy` "module:attr" references that import heavy code only when called.

    PROTOCOLS = Registry("protocol", "bob protocols list", builtins=("bobench.protocols.builtin",))
    PROTOCOLS.add("knn", Protocol(..., evaluate=lazy("bobench.protocols.knn:evaluate")))

Why: listing and looking up entries (the scheduler planning a battle, `bob ... list`) must not import
torch, onnx or a data set's decoder. A registry therefore knows which modules register its built-in
entries and imports them the first time it is read (`get`, `in`, iteration), never at import time; an
entry whose implementation is heavy is registered as a `lazy` reference, resolved on the first call.
A built-in module that fails to import raises: nothing is skipped silently.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bobench.errors import AlreadyExists, InvalidArgument

T = TypeVar("T")


def load_attr(ref: str) -> Any:
    """Import `"package.module:attr"` and return the attribute (ImportError/AttributeError if absent)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"lazy reference {ref!r} must be 'package.module:attr'")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class lazy:  # lower case: it reads like a function, lazy("pkg.mod:func")
    """A callable standing for `"module:attr"`: calling it imports the module and calls the attribute.

    Registering `lazy(...)` instead of the function keeps the registering module free of the
    function's imports; `resolve()` returns the real object."""

    ref: str

    def resolve(self) -> Any:
        return load_attr(self.ref)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


class Registry(Generic[T]):
    """Maps unique names to objects. `kind` names the things held, for error messages.

    `builtins` are modules whose import registers the built-in entries: they are imported once, on
    the first read of the registry (`get`, `in`, `iter`, `len`, `items`). `add` never triggers it, so
    those modules can register themselves while they load.
    """

    def __init__(self, kind: str, list_hint: str | None = None, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.list_hint = list_hint  # how a user lists the entries, e.g. "bob backbones list"
        self.builtins = builtins
        self._items: dict[str, T] = {}
        self._loaded = not builtins
        self._lock = threading.RLock()

    def load_builtins(self) -> None:
        """Import the built-in modules (once; a module that fails to import raises, every time)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            for module in self.builtins:
                importlib.import_module(module)
            self._loaded = True

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise AlreadyExists(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def decorator(item: T) -> T:
            return self.add(name, item)

        return decorator

    def get(self, name: str) -> T:
        """Return the entry; an unknown name is a caller error (InvalidArgument) listing close matches."""
        self.load_builtins()
        try:
            return self._items[name]
        except KeyError:
            raise InvalidArgument(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        self.load_builtins()
        close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        if self.list_hint:
            return f"unknown {self.kind} {name!r}{hint} (known: {len(self._items)}; list them with `{self.list_hint}`)"
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})"

    def __contains__(self, name: object) -> bool:
        self.load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self.load_builtins()
        return iter(sorted(self._items))

    def __len__(self) -> int:
        self.load_builtins()
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        self.load_builtins()
        return sorted(self._items.items())
