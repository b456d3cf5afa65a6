"""Loops, spaces and table formats that installed packages publish as entry points are found by
name everywhere (``spaces/_registry.py``).

Before, only trainers had entry points: a plugin loop was found only when the module of a
plugin trainer happened to register it on import, so a loop-only plugin could not be used, and
``archsearch replay`` (which imports no trainer) refused a loop the server accepted.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import pytest

from archsearch.search import LOOPS
from archsearch.server import cli
from archsearch.spaces import Registry, UnknownName

PLUGIN = '''
import random
from archsearch.search import SearchLoop, Suggestion


class FirstRows(SearchLoop):
    """Suggests random rows (a stand-in for a user's own algorithm)."""

    name = "plug-loop"

    def __init__(self, seed, n_objectives, options=None):
        self.rng = random.Random(seed)

    def suggest(self, snapshot, count=1):
        return [Suggestion(architecture=snapshot.space.sample(self.rng)) for _ in range(count)]
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A package ``plugmod`` publishing ``plug-loop`` and a broken ``bad-loop`` in the group
    ``archsearch.loops`` (the entry points of this environment otherwise)."""
    (tmp_path / "plugmod.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points
    ours = [
        importlib.metadata.EntryPoint("plug-loop", "plugmod:FirstRows", "archsearch.loops"),
        importlib.metadata.EntryPoint("bad-loop", "nosuchmodule:Loop", "archsearch.loops"),
        importlib.metadata.EntryPoint("random", "plugmod:FirstRows", "archsearch.loops"),
    ]

    def entry_points(**kw: Any) -> Any:
        if kw.get("group") == "archsearch.loops":
            return importlib.metadata.EntryPoints(ours)
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    # the global registry as if this process had not looked at its plugins yet
    monkeypatch.setattr(LOOPS, "_items", dict(LOOPS._items))
    monkeypatch.setattr(LOOPS, "_broken", {})
    monkeypatch.setattr(LOOPS, "_loaded", False)
    yield
    sys.modules.pop("plugmod", None)


def test_a_published_loop_is_found_by_name_and_listed(plugin: Any) -> None:
    assert "plug-loop" in LOOPS and LOOPS["plug-loop"].__name__ == "FirstRows"
    assert "plug-loop" in LOOPS.names() and "bad-loop" not in LOOPS.names()
    assert LOOPS["random"].__module__ != "plugmod"  # a built-in name is never replaced
    with pytest.raises(UnknownName) as said:
        LOOPS["bad-loop"]
    assert "'bad-loop' is an installed plugin that does not load (nosuchmodule:Loop: " in str(
        said.value
    )
    assert "fix or reinstall the package" in str(said.value)


def test_replay_runs_a_plugin_loop(
    plugin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,b,score\n" + "".join(f"{i},{i % 3},{i / 10}\n" for i in range(10)))
    plot = str(tmp_path / "p.png")
    args = [str(table), "--loops", "plug-loop", "--seeds", "2", "--evals", "4", "--plot", plot]
    code = cli.main(["replay", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "| plug-loop | 2 |" in out.out


def test_a_registry_without_a_group_never_reads_entry_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def entry_points(**kw: Any) -> Any:
        raise AssertionError("read")

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    assert "b" not in reg and reg.names() == ("a",)


def test_a_plugin_that_looks_names_up_while_it_loads_does_not_deadlock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its import ran under the lock its own loading held: the process hung."""
    import logging
    import threading

    (tmp_path / "plugreent.py").write_text(
        PLUGIN.replace("FirstRows", "Reentrant")
        + "\nfrom archsearch.search import LOOPS\nSEEN = len(LOOPS)\n"
    )
    (tmp_path / "plugtwin.py").write_text(PLUGIN.replace("FirstRows", "Twin"))
    monkeypatch.syspath_prepend(str(tmp_path))
    ours = [
        importlib.metadata.EntryPoint("reent", "plugreent:Reentrant", "archsearch.loops"),
        importlib.metadata.EntryPoint("reent", "plugtwin:Twin", "archsearch.loops"),
    ]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **kw: (
            importlib.metadata.EntryPoints(ours)
            if kw.get("group") == "archsearch.loops"
            else real(**kw)
        ),
    )
    monkeypatch.setattr(LOOPS, "_items", dict(LOOPS._items))
    monkeypatch.setattr(LOOPS, "_broken", {})
    monkeypatch.setattr(LOOPS, "_loaded", False)
    caplog.set_level(logging.INFO, logger="archsearch")
    found: list[Any] = []
    looker = threading.Thread(target=lambda: found.append(LOOPS.get("reent")), daemon=True)
    looker.start()
    looker.join(20)
    try:
        assert not looker.is_alive(), "the look-up hung"
        assert found and found[0].__name__ == "Reentrant"  # the first to publish the name
        said = "loop plugin reent (plugtwin:Twin) is ignored: the name is taken (plugreent:"
        assert said in caplog.text
    finally:
        sys.modules.pop("plugreent", None)
        sys.modules.pop("plugtwin", None)


def test_an_entry_point_naming_the_class_its_decorator_registered_is_not_said_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's pattern: ``@REG.register("toy")`` and an entry point ``toy``. When another
    group imported the module first, the entry point was logged "ignored: the name is taken
    (archsearch's own)", though it is the same class, and a plugin's."""
    import logging

    reg: Registry[type] = Registry("thing", plugins="test.things")
    (tmp_path / "plugdeco.py").write_text("class Toy:\n    pass\n\nclass Other:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import plugdeco  # type: ignore[import-not-found]

    reg.register("toy", plugdeco.Toy)  # its decorator, run by the import of another group
    ours = [
        importlib.metadata.EntryPoint("toy", "plugdeco:Toy", "test.things"),
        importlib.metadata.EntryPoint("toy", "plugdeco:Other", "test.things"),
    ]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **kw: (
            importlib.metadata.EntryPoints(ours) if kw.get("group") == "test.things" else real(**kw)
        ),
    )
    caplog.set_level(logging.INFO, logger="archsearch")
    try:
        assert reg["toy"] is plugdeco.Toy and reg.names() == ("toy",)
    finally:
        sys.modules.pop("plugdeco", None)
    assert "(plugdeco:Toy) is ignored" not in caplog.text  # the same class: nothing to say
    said = "thing plugin toy (plugdeco:Other) is ignored: the name is taken (registered by "
    assert (
        said + "plugdeco:Toy); rename it" in caplog.text and "archsearch's own" not in caplog.text
    )
    assert any(r.levelno == logging.WARNING and said in r.getMessage() for r in caplog.records)
