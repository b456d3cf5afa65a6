"""Shared fixtures. The PostgreSQL machinery lives in ``tests/_postgres.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _postgres import fresh_database
from _postgres import postgres_url as postgres_url  # a session fixture: one server per run
from _procs import procs as procs  # the processes a test started, stopped at teardown


def pytest_report_header() -> str:
    """Which shared data the run reads: many tests read ``../shared/data`` (GLUE, the
    FlexiBERT-small table, the NAS tables), as CI has it beside the checkout."""
    shared = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
    if shared.is_dir():
        return f"shared data: {shared}"
    return (
        f"shared data: MISSING ({shared} does not exist); the tests that read GLUE or the "
        "tables fail with the missing path: put the shared data folder beside the checkout"
    )


#: The folders of the slow tests (processes: servers, workers, fleets; 10-60 s each).
SLOW_FIRST = ("integration", "fleet", "benchmarks")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tests first, each folder's in its own order: pytest-xdist hands tests out in
    collection order, and a 60 s service test collected late kept one process busy after the
    other had finished (the longest-first rule)."""
    tests = Path(__file__).resolve().parent

    def slow(item: pytest.Item) -> bool:
        path = Path(str(item.path)).resolve()
        return path.is_relative_to(tests) and path.relative_to(tests).parts[0] in SLOW_FIRST

    items.sort(key=lambda item: not slow(item))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty Optuna storage on every backend: a SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/s.db"
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture(autouse=True)
def _checkpoint_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Kept checkpoints and saved training progress go to each test's own folder (tests that
    need another set ``ARCHSEARCH_CHECKPOINT_DIR`` themselves), never to ``~/.cache``: a test
    that stops a training leaves progress that another test's equal candidate would resume."""
    root = tmp_path / "checkpoints"
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(root))
    return root


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every cache (library embeddings, teachers, pre-trained encoders) goes to one folder per
    test run, shared by the tests and the servers/workers they start, never to ``~/.cache``."""
    import os

    root = tmp_path_factory.mktemp("archsearch-cache")
    old = os.environ.get("ARCHSEARCH_CACHE_DIR")
    os.environ["ARCHSEARCH_CACHE_DIR"] = str(root)
    yield root
    if old is None:
        os.environ.pop("ARCHSEARCH_CACHE_DIR", None)
    else:
        os.environ["ARCHSEARCH_CACHE_DIR"] = old


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The storage URL of ``sqlite_server()``'s default file."""
    return f"sqlite:///{tmp_path / 's.db'}"


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts in-process servers on SQLite files in the test's folder:
    ``sqlite_server(**ServerConfig fields)`` (``db="s.db"`` names the file; the same file
    again is a restart); every one started is stopped at teardown."""
    from archsearch.server.app import ArchsearchServer, ServerConfig

    started: list[ArchsearchServer] = []

    def start(db: str = "s.db", **config: Any) -> ArchsearchServer:
        srv = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / db}", port=0, **config))
        srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in reversed(started):
        srv.stop(0)
