"""One registry style for every extension point: spaces, loops, trainers, model factories.

An implementation registers itself where it lives, with a decorator::

    SPACES = Registry[type[DesignSpace]]("space")

    @SPACES.register("bert")
    class BertSpace(DesignSpace): ...

and callers look it up by name: ``SPACES[name]`` raises :class:`UnknownName`, whose message
lists every registered name (sorted, so it does not depend on import order). A registry is a
read-only mapping (``name in SPACES``, ``SPACES.get(name)``, iteration in sorted order). It
imports nothing heavy, so both the server and the worker use it.

A registry with an entry point group (``plugins``; loops: ``archsearch.loops``, spaces:
``archsearch.spaces``, table formats: ``archsearch.table_formats``) also holds what installed
packages publish there, each entry point naming the class (``name = "pkg.module:Class"``).
They are loaded once, the first time a name is not found or the names are listed, so every
process that looks a name up (server, ``launch``'s offline checks, ``replay``, a test) sees
them without a call of its own. A built-in name wins over a plugin's (logged); a plugin that
does not load is logged, and looking its name up says why.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar, overload

from archsearch.spaces._errors import SpecError

T = TypeVar("T")

log = logging.getLogger("archsearch")


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
        plugins: The entry point group installed packages publish implementations in, or
            None (see the module docstring).
    """

    def __init__(self, kind: str, field: str | None = None, plugins: str | None = None) -> None:
        self.kind = kind
        self.field = kind if field is None else field
        self.plugins = plugins
        self._items: dict[str, T] = {}
        self._broken: dict[str, str] = {}  # plugin name -> why it does not load
        self._loaded = plugins is None
        self._load_lock = threading.Lock()
        self._loading: int | None = None  # the thread loading the plugins

    def _load_plugins(self) -> None:
        """Registers the entry points of ``plugins``, once (see the module docstring). A
        plugin that looks a name up while it is imported sees what is registered so far (it
        deadlocked on the lock its own loading held)."""
        if self._loaded or self._loading == threading.get_ident():
            return
        with self._load_lock:
            if self._loaded:
                return
            self._loading = threading.get_ident()
            try:
                self._load_entry_points()
            finally:
                self._loading = None
            self._loaded = True

    def _load_entry_points(self) -> None:
        """Imports each entry point of ``plugins`` not named already. A plugin that does not
        load is said at INFO (looking its name up says why); one whose name archsearch or an
        earlier plugin has, at WARNING (it would never run, and `launch --loop tpe` quietly
        ran Optuna's TPE). An entry
        point naming the very class registered under its name says nothing: the README's
        pattern (a decorator and an entry point), its module imported first by another group,
        was logged as ignored and "archsearch's own"."""
        try:
            eps = list(importlib.metadata.entry_points(group=self.plugins or ""))
        except Exception as e:  # a broken installed distribution's metadata
            log.error("cannot list the %s plugins (%s): %s", self.kind, self.plugins, e)
            return
        origin: dict[str, str] = {}  # plugin name -> the entry point that gave it
        for ep in eps:
            if ep.name in self._items or ep.name in self._broken:
                known = self._items.get(ep.name)
                if not ep.value.startswith("archsearch.") and _where(known) != ep.value:
                    had = origin.get(ep.name) or _owner(known)
                    log.warning(  # a plugin that never runs, silently: worth a warning
                        "%s plugin %s (%s) is ignored: the name is taken (%s); rename it",
                        self.kind,
                        ep.name,
                        ep.value,
                        had,
                    )
                continue
            origin[ep.name] = ep.value
            try:
                obj = ep.load()
            except Exception as e:  # one broken plugin does not stop the others
                self._broken[ep.name] = f"{ep.value}: {type(e).__name__}: {e}"
                log.info("%s plugin %s does not load: %s", self.kind, ep.name, e)
                continue
            if ep.name not in self._items:  # its import may have registered it
                self._items[ep.name] = obj

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
        """Every registered name, sorted (installed plugins' included)."""
        self._load_plugins()
        return tuple(sorted(self._items))

    def __getitem__(self, name: str) -> T:
        """The implementation registered as ``name``.

        Raises:
            UnknownName: No implementation has that name; the message lists the known ones.
        """
        found = self._items.get(name) if isinstance(name, str) else None
        if found is None and not self._loaded:
            self._load_plugins()
            found = self._items.get(name) if isinstance(name, str) else None
        if found is None and isinstance(name, str) and name in self._broken:
            raise UnknownName(
                self.field,
                f"{self.kind} {name!r} is an installed plugin that does not load "
                f"({self._broken[name]})",
                "fix or reinstall the package that publishes it",
            )
        if found is None:
            raise UnknownName(
                self.field, f"unknown {self.kind} {name!r}", f"one of {', '.join(self.names())}"
            )
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):  # a spec's value may be any JSON
            return False
        if name not in self._items:
            self._load_plugins()
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _where(obj: object) -> str:
    """``module:qualname`` of a registered class (an entry point's value when it names it)."""
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"


def _owner(obj: object) -> str:
    """Who has a name taken before the entry points: archsearch's own, or a plugin's class
    whose module registered it on import."""
    if obj is None or str(getattr(obj, "__module__", "")).startswith("archsearch."):
        return "archsearch's own"
    return f"registered by {_where(obj)}"
