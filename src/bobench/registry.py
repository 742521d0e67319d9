"""A small name -> object registry with decorator registration and "did you mean" errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bobench.errors import AlreadyExists, InvalidArgument

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps unique names to objects. `kind` names the things held, for error messages."""

    def __init__(self, kind: str, list_hint: str | None = None) -> None:
        self.kind = kind
        self.list_hint = list_hint  # how a user lists the entries, e.g. "bob backbones list"
        self._items: dict[str, T] = {}

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
        try:
            return self._items[name]
        except KeyError:
            raise InvalidArgument(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        if self.list_hint:
            return f"unknown {self.kind} {name!r}{hint} (known: {len(self._items)}; list them with `{self.list_hint}`)"
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
