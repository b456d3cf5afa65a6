"""A plugin design space that cannot be built is the plugin's fault, said as such, and contained
(``make_space`` in ``spaces/__init__.py``, ``StudyRegistry.load``).

Before, a space constructor that raised stopped the whole server at start-up with a traceback
(no study served), answered a launch INTERNAL, printed a traceback from ``archsearch launch``
with no server, and any TypeError inside a constructor (an abstract method missing included)
was blamed on the user's ``space_options``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from _procs import table_spec

from archsearch.server import _trainers
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.spaces import SPACES, FlexiBertSmallSpace, SpecError, make_space


class Toy(FlexiBertSmallSpace):
    """A plugin's space: flexibert-small's, whose constructor fails as ``mode`` says."""

    name = "test-toy"
    mode: ClassVar[str] = "ok"

    def __init__(self, **options: Any) -> None:
        if Toy.mode == "raise":
            raise RuntimeError("ToySpace: cannot read my lookup file")
        if Toy.mode == "typeerror":
            len(5)  # type: ignore[arg-type]  # a bug of the plugin's own
        super().__init__(**options)


class Strict(Toy):
    """A space whose constructor names its options (the user's mistakes are bound to them)."""

    def __init__(self, table: str = "", depths: list[int] | None = None) -> None:
        super().__init__(table=table)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``test-toy`` registered, and a trainer ``test-toy-t`` of it installed (the table
    trainer's scores)."""
    real = _trainers.installed_trainers()
    table = next(i for i in real if i.name == "table")
    ours = dataclasses.replace(table, name="test-toy-t", spaces=("test-toy",))
    monkeypatch.setattr(_trainers, "installed_trainers", lambda: (*real, ours))
    SPACES.register("test-toy", Toy)
    Toy.mode = "ok"
    try:
        yield Toy
    finally:
        SPACES.unregister("test-toy")
        Toy.mode = "ok"


def toy_spec(name: str, n_trials: int = 2) -> dict[str, Any]:
    return table_spec(name, n_trials, space="test-toy", trainer="test-toy-t")


def test_only_options_the_constructor_does_not_take_are_the_users(toy: Any) -> None:
    SPACES.register("test-strict", Strict)
    try:
        with pytest.raises(SpecError) as said:
            make_space("test-strict", {"nope": 1})
        assert said.value.field == "space_options.nope" and "known: table, depths" in str(
            said.value
        )
        Toy.mode = "typeerror"
        with pytest.raises(SpecError) as failed:
            make_space("test-strict", {"table": "x"})
    finally:
        SPACES.unregister("test-strict")
    assert failed.value.field == "space"
    blamed = "test-strict space (test_space_failures:Strict) failed in its constructor: TypeError"
    assert blamed in str(failed.value)
    assert "space_options" not in str(failed.value)


def test_a_space_missing_an_abstract_method_is_the_plugins_fault(toy: Any) -> None:
    class NoDescribe(Toy):
        pass

    NoDescribe.__abstractmethods__ = frozenset({"describe"})  # as if it had not written it
    SPACES.register("test-abstract", NoDescribe)
    try:
        with pytest.raises(SpecError) as said:
            make_space("test-abstract", {"table": "x"})
    finally:
        SPACES.unregister("test-abstract")
    assert said.value.field == "space"
    assert "cannot be built: it does not implement describe" in str(said.value)


def test_a_server_starts_when_a_stored_studys_space_fails_to_build(
    toy: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    first.launch(SearchSpec.from_dict(toy_spec("bad"), first.trainers))
    first.launch(SearchSpec.from_dict(table_spec("good", 5)))
    first.close()
    Toy.mode = "raise"
    caplog.set_level(logging.ERROR, logger="archsearch")
    again = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        why = again.registry.unserved["bad"]
        assert "test-toy space (test_space_failures:Toy) failed in its constructor" in why
        assert "RuntimeError: ToySpace: cannot read my lookup file" in why
        grant = again.acquire("w", ("table",))
        assert grant is not None and grant.study_name == "good"
    finally:
        again.close()
    logged = [r for r in caplog.records if "not serving it" in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback its message promises


def test_a_study_whose_rebuild_fails_is_not_served_and_the_others_are(
    toy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any per-study step of the start-up, not only a spec error, is contained."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    first.launch(SearchSpec.from_dict(table_spec("bad", 2)))
    first.launch(SearchSpec.from_dict(table_spec("good", 5)))
    first.close()
    from archsearch.server import _manager_wiring

    real = _manager_wiring.rebuild_index

    def rebuild(h: Any, *args: Any) -> None:
        if h.spec.name == "bad":
            raise KeyError("a stored candidate this version cannot read")
        real(h, *args)

    monkeypatch.setattr(_manager_wiring, "rebuild_index", rebuild)
    again = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        assert "KeyError" in again.registry.unserved["bad"]
        assert again.registry.named("bad") is None
        grant = again.acquire("w", ("table",))
        assert grant is not None and grant.study_name == "good"
    finally:
        again.close()


def test_a_launch_of_a_space_that_fails_to_build_is_invalid_argument(
    toy: Any, sqlite_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from archsearch.server.client import ClientError, SearchClient

    srv = sqlite_server()
    Toy.mode = "raise"
    caplog.set_level(logging.ERROR, logger="archsearch")
    with SearchClient(srv.address) as client, pytest.raises(ClientError) as said:
        client.launch(toy_spec("bad"))
    assert said.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "space: the test-toy space (test_space_failures:Toy) failed in its constructor" in (
        said.value.details
    )
    assert any(r.exc_info is not None and "LaunchSearch" in r.getMessage() for r in caplog.records)


def test_launch_with_no_server_says_the_space_fails_in_one_line(
    toy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from archsearch.server import cli

    Toy.mode = "raise"
    args = ["launch", "--server", "127.0.0.1:1", "--name", "bad", "--trials", "2"]
    args += ["--space", "test-toy", "--set", "trainer=test-toy-t"]
    args += ["--set", f"space_options.table={table_spec('x', 1)['space_options']['table']}"]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "test-toy space (test_space_failures:Toy) failed in its constructor" in err
    assert "server log" not in err  # no server was asked


def test_studies_names_the_stored_studies_the_server_cannot_serve(
    toy: Any, tmp_path: Path, sqlite_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``studies`` said "no studies yet" (``--json``: []) while a broken plugin left every
    stored study unserved."""
    from archsearch.server import cli
    from archsearch.server.client import SearchClient

    first = StudyManager(f"sqlite:///{tmp_path / 's.db'}", 30, 5)
    first.launch(SearchSpec.from_dict(toy_spec("bad"), first.trainers))
    first.close()
    Toy.mode = "raise"
    srv = sqlite_server()  # the same s.db
    with SearchClient(srv.address) as client:
        unserved: dict[str, str] = {}
        assert client.list_studies(unserved) == []
        assert "test-toy space (test_space_failures:Toy) failed in its" in unserved["bad"]
        assert client.list_studies() == []  # a caller that does not ask is as before
    assert cli.main(["studies", "--server", srv.address]) == 0
    out = capsys.readouterr().out
    assert "no studies yet" not in out
    assert "1 stored study this server cannot serve: bad (`archsearch show NAME` says why" in out
    assert cli.main(["studies", "--json", "--server", srv.address]) == 0
    said = capsys.readouterr()
    assert said.out.strip() == "[]" and "cannot serve: bad" in said.err
