"""The one-server lock is kept while the server runs, not only taken at its start.

PostgreSQL's lock is a session's: a database restart, a killed session or
``idle_session_timeout`` ended it under a running server, which noticed nothing, and a second
server then started on the same database (the two handed out more candidates than a budget).
The server now checks its lock: retaken when free, and when another server took it meanwhile,
this one stops serving. SQLite's lock is the OS's (``flock``), held as long as the process.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy
from _postgres import fresh_database
from _procs import ServerProc, table_spec

from archsearch.server._pg_lock import PG_LOCK_KEY
from archsearch.server.app import ArchsearchServer, ConfigError, ServerConfig
from archsearch.server.client import ClientError, SearchClient

pytestmark = pytest.mark.timeout(120)

#: the sessions of archsearch servers on the current database
SERVERS = "application_name LIKE 'archsearch serve %' AND datname = current_database()"


def started(url: str, **kw: object) -> ArchsearchServer:
    srv = ArchsearchServer(ServerConfig(storage=url, port=0, **kw))  # type: ignore[arg-type]
    srv.start()
    return srv


def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[str, sqlalchemy.Engine]]:
    """A fresh database and an AUTOCOMMIT engine on it (the operator's psql)."""
    with fresh_database(postgres_url) as url:
        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            yield url, engine
        finally:
            engine.dispose()


def lock_holders(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as c:
        return int(
            c.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = "
                    "current_database())"
                )
            ).scalar_one()
        )


def kill_servers_sessions(engine: sqlalchemy.Engine) -> int:
    """pg_terminate_backend on every archsearch server's session (waiting until they end)."""
    with engine.connect() as c:
        return kill_from(c)


def kill_from(c: sqlalchemy.Connection) -> int:
    sql = (
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        f"WHERE {SERVERS} AND pid <> pg_backend_pid()"
    )
    return len(c.execute(sqlalchemy.text(sql)).all())


def take_the_lock_as_another_server(engine: sqlalchemy.Engine) -> sqlalchemy.Connection:
    """A session that kills the server's lock session and takes the lock the moment it is
    free (``pg_advisory_lock`` waits), as a second server of pid 4242 on host elsewhere."""
    c = engine.connect()
    c.execute(sqlalchemy.text("SET application_name = 'archsearch serve 4242@elsewhere'"))
    assert kill_from(c) >= 1
    c.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
    return c


@pytest.mark.postgres
def test_a_lock_lost_with_its_session_is_retaken_and_still_refuses_a_second_server(
    pg: tuple[str, sqlalchemy.Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's repro: the lock session killed, then a second server started."""
    url, engine = pg
    caplog.set_level(logging.INFO, logger="archsearch.server")
    first = started(url, lock_check_s=0.2)
    try:
        with SearchClient(first.address) as admin:
            admin.launch(table_spec("tab1", 2))
        assert lock_holders(engine) == 1
        assert kill_servers_sessions(engine) >= 1
        until(lambda: lock_holders(engine) == 1)
        until(lambda: any("retaken" in r.getMessage() for r in caplog.records))
        (said,) = [r for r in caplog.records if "retaken" in r.getMessage()]
        assert said.levelno == logging.WARNING
        assert said.getMessage().startswith("lost the one-server lock of ")
        with pytest.raises(ConfigError, match=r"^another archsearch server already serves "):
            ArchsearchServer(ServerConfig(storage=url, port=0))
        with SearchClient(first.address) as admin:  # still serving, storage and all
            assert admin.get_study("tab1").n_trials == 2
        assert first.lost is None
    finally:
        first.stop(0)
    assert lock_holders(engine) == 0  # stop() gave it up


@pytest.mark.postgres
def test_a_server_whose_lock_another_server_took_stops_serving(
    pg: tuple[str, sqlalchemy.Engine], caplog: pytest.LogCaptureFixture
) -> None:
    url, engine = pg
    caplog.set_level(logging.INFO, logger="archsearch.server")
    first = started(url, lock_check_s=0.5)
    other = None
    try:
        with SearchClient(first.address) as admin:
            admin.launch(table_spec("tab1", 2))
        other = take_the_lock_as_another_server(engine)
        until(lambda: first.lost is not None)
        assert re.match(
            r"another archsearch server \(pid 4242 on host elsewhere, since [^)]+\) took the "
            r"one-server lock of .* after this server's database session ended \(a database "
            r"restart, a killed session or idle_session_timeout\); this server stops serving",
            first.lost or "",
        )
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.getMessage() for r in errors] == [first.lost]
        with SearchClient(first.address) as admin, pytest.raises(ClientError) as refused:
            admin.get_study("tab1")
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE  # no server answers there
    finally:
        first.stop(0)
        if other is not None:
            other.close()


@pytest.mark.postgres
def test_serve_exits_with_one_line_when_another_server_took_its_lock(
    pg: tuple[str, sqlalchemy.Engine], tmp_path: Path, procs: list[ServerProc]
) -> None:
    url, engine = pg
    server = ServerProc(url, tmp_path / "serve.log").start()
    procs.append(server)
    other = take_the_lock_as_another_server(engine)
    try:
        assert server.wait(30) != 0
    finally:
        other.close()
    out = server.output()
    assert "Traceback" not in out, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("archsearch: another archsearch server (pid 4242 on host elsewhere")
    assert "this server stops serving" in last


def test_a_deleted_sqlite_lock_file_still_refuses_a_second_server(tmp_path: Path) -> None:
    """SQLite's lock has no such hole: the OS holds both ``flock`` locks for the process, and
    the one on the database file itself stays when ``<database>.lock`` is deleted."""
    url = f"sqlite:///{tmp_path}/s.db"
    holder = subprocess.Popen(  # another process holding the lock, as a server does
        [sys.executable, "-c", HOLD, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        os.remove(tmp_path / "s.db.lock")
        with pytest.raises(
            ConfigError,
            match=rf"^another archsearch server already serves .*pid {holder.pid} on host",
        ):
            ArchsearchServer(ServerConfig(storage=url, port=0))
    finally:
        holder.kill()
        holder.wait(10)


HOLD = """
import sys
from archsearch.server._storage_lock import lock_storage
lock = lock_storage(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.postgres
def test_its_own_earlier_session_holding_the_lock_does_not_stop_the_server(
    pg: tuple[str, sqlalchemy.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that failed once (a network blip) while the server's old session lived on (its
    backend outlives the client until TCP gives up on it) read the server's own session as
    "another server" and stopped a healthy server."""
    from archsearch.server import _pg_lock

    url, engine = pg
    kept: list[sqlalchemy.Connection] = []
    failed_once: list[bool] = []

    def flaky(conn: sqlalchemy.Connection) -> bool:
        if not failed_once:
            failed_once.append(True)
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("connection reset"))
        return bool(real_still_held(conn))

    def keep_alive(self: _pg_lock._Lock) -> None:  # the old backend lives on
        conn, self.conn = self.conn, None
        if conn is not None:
            kept.append(conn)

    real_still_held = _pg_lock._Lock._still_held
    monkeypatch.setattr(_pg_lock._Lock, "_still_held", staticmethod(flaky))
    monkeypatch.setattr(_pg_lock._Lock, "_drop", keep_alive)
    first = started(url, lock_check_s=0.2)
    try:
        until(lambda: kept)  # the check failed and the old session was left alive
        time.sleep(1.0)  # several checks find its own session holding the lock
        assert first.lost is None
        kept.pop().close()  # the old session ends: the lock is retaken
        until(lambda: first._lock is not None and lock_holders(engine) == 1)
        time.sleep(0.5)
        assert first.lost is None
    finally:
        first.stop(0)
        for c in kept:
            c.close()
