"""One registry style for every extension point: spaces, loops, trainers, model factories.

An implementation registers itself where it lives, with a decorator::

    SPACES = Registry[type[DesignSpace]]("space")

    @SPACES.register("bert")
    class BertSpace(DesignSpace): ...

and callers look it up by name: ``SPACES[name]`` raises :class:`UnknownName`, whose message
lists every registered name (sorted, so it does not depend on import order). A registry is a
read-only mapping (``name in SPACES``, ``SPACES.get(name)``, iteration in sorted order). It
imports nothing heavy, so both the server and the worker use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar, overload

from archsearch.spaces._errors import SpecError

T = TypeVar("T")


class UnknownName(SpecError, KeyError):
    """No implementation has this name; the message lists the registered ones.

    A ``SpecError`` (the server answers INVALID_ARGUMENT, the CLI prints it) and a
    ``KeyError`` (what a mapping look-up raises).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return ValueError.__str__(self)


class Registry(Mapping[str, T], Generic[T]):
    """Implementations of one extension point, by name.

    Args:
        kind: What is registered ("space", "loop", "trainer"), for error messages.
        field: The spec field that names it, for :class:`UnknownName` (default: ``kind``).
    """

    def __init__(self, kind: str, field: str | None = None) -> None:
        self.kind = kind
        self.field = kind if field is None else field
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, item: T) -> T: ...

    def register(self, name: str, item: T | None = None) -> T | Callable[[T], T]:
        """Registers ``item`` as ``name``; without ``item``, a decorator that does.

        Raises:
            ValueError: The name is empty, or another implementation has it.
        """

        def add(obj: T) -> T:
            if not name:
                raise ValueError(f"a {self.kind} needs a name to register")
            known = self._items.get(name)
            if known is not None and known is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered ({known!r})")
            self._items[name] = obj
            return obj

        return add if item is None else add(item)

    def unregister(self, name: str) -> None:
        """Removes ``name`` (a test's temporary registration); no-op when absent."""
        self._items.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Every registered name, sorted."""
        return tuple(sorted(self._items))

    def __getitem__(self, name: str) -> T:
        """The implementation registered as ``name``.

        Raises:
            UnknownName: No implementation has that name; the message lists the known ones.
        """
        found = self._items.get(name) if isinstance(name, str) else None
        if found is None:
            raise UnknownName(
                self.field, f"unknown {self.kind} {name!r}", f"one of {', '.join(self.names())}"
            )
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items  # a spec's value may be any JSON

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
