"""A typed registry: the one way an app plugs something into another (``AppConfig.ready``).

Each entry has a name; registering a different entry under a taken name is a start-up error
(``ImproperlyConfigured``), registering the same one again does nothing (``ready`` may run
twice). Entries are kept in registration order. No module exposes a mutable list or dict to
append to, and nothing is hung on a function as an attribute: extension points are instances
of this class (or of a registry built on the same rules, ``messaging.send_rules.SendRegistry``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``what`` names the kind in errors)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing != entry:
            raise ImproperlyConfigured(f"two {self.what}s are named {name!r}")
        self._entries[name] = entry

    def entries(self) -> tuple[T, ...]:
        return tuple(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> tuple[tuple[str, T], ...]:
        return tuple(self._entries.items())

    def __iter__(self) -> Iterator[T]:
        return iter(self.entries())

    def __contains__(self, entry: object) -> bool:
        return entry in self._entries.values()

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def replaced(self, entries: Iterable[tuple[str, T]]) -> Iterator[None]:
        """Within the block, these entries instead of the registered ones (tests)."""
        saved = self._entries
        self._entries = {}
        try:
            for name, entry in entries:
                self.register(name, entry)
            yield
        finally:
            self._entries = saved
