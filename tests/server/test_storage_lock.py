"""One server per storage, a busy port, a relative SQLite path: what ``archsearch serve`` says.

A second server on the same storage would keep its own in-memory view of the studies (a study
launched through one is "not found" through the other), so it refuses to start, naming the one
that holds the storage; the lock goes with the first server's ``stop`` or death.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _postgres import fresh_database
from _procs import ServerProc, cli, table_spec

from archsearch.server import app
from archsearch.server._storage_lock import StorageInUse, lock_storage, relative_sqlite_note
from archsearch.server.app import ArchsearchServer, ConfigError, ServerConfig
from archsearch.server.client import ClientError, SearchClient

HOST = socket.gethostname()


def refusal(url: str, pid: int) -> str:
    return (
        rf"^another archsearch server already serves {re.escape(url)} \(pid {pid} on host "
        rf"{re.escape(HOST)}, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d [^)]*\); stop it, or give "
        r"this one another --storage$"
    )


def started(url: str, **kw: object) -> ArchsearchServer:
    srv = ArchsearchServer(ServerConfig(storage=url, port=0, **kw))  # type: ignore[arg-type]
    srv.start()
    return srv


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another socket listens on (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_second_server_on_the_same_sqlite_file_is_refused_until_the_first_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    first = started(url)
    try:
        with SearchClient(first.address) as admin:
            admin.launch(table_spec("tab1", 2))
        with pytest.raises(ConfigError, match=refusal(url, os.getpid())):
            ArchsearchServer(ServerConfig(storage=url, port=0))
        monkeypatch.chdir(tmp_path)  # the same file through a relative URL: the same lock
        with pytest.raises(ConfigError, match=refusal("sqlite:///s.db", os.getpid())):
            ArchsearchServer(ServerConfig(storage="sqlite:///s.db", port=0))
        other = started(f"sqlite:///{tmp_path}/other.db")  # another file: no conflict
        other.stop(0)
    finally:
        first.stop(0)
    again = started(url)  # stop() released it
    try:
        with SearchClient(again.address) as admin:
            assert admin.get_study("tab1").name == "tab1"
    finally:
        again.stop(0)


def through_another_name(url: str, pid: int, real: Path) -> str:
    """The refusal of a server whose database another one serves under another name."""
    return (
        rf"^another archsearch server already serves {re.escape(url)} \(pid {pid} on host "
        rf"{re.escape(HOST)}, through another name of {re.escape(str(real))} \(a symlink or "
        r"hard link\)\); stop it, or give this one another --storage$"
    )


def test_a_symlink_or_a_hard_link_to_a_served_database_is_refused(tmp_path: Path) -> None:
    """The lock file was named after the path as typed in the real folder, so a server on
    ``alias.db -> s.db`` locked ``alias.db.lock`` and one on a hard link ``hard.db`` locked
    ``hard.db.lock``: two servers served one database and trained every candidate twice."""
    url = f"sqlite:///{tmp_path}/s.db"
    (tmp_path / "alias.db").symlink_to("s.db")
    (tmp_path / "dir").symlink_to(tmp_path, target_is_directory=True)
    first = started(url)
    try:
        with SearchClient(first.address) as admin:
            admin.launch(table_spec("tab1", 2))
        os.link(tmp_path / "s.db", tmp_path / "hard.db")
        for alias in (f"sqlite:///{tmp_path}/alias.db", f"sqlite:///{tmp_path}/dir/s.db"):
            with pytest.raises(ConfigError, match=refusal(alias, os.getpid())):
                ArchsearchServer(ServerConfig(storage=alias, port=0))
        hard = f"sqlite:///{tmp_path}/hard.db"
        with pytest.raises(
            ConfigError, match=through_another_name(hard, os.getpid(), tmp_path / "hard.db")
        ):
            ArchsearchServer(ServerConfig(storage=hard, port=0))
    finally:
        first.stop(0)
    again = started(hard)  # the first one's stop released both locks
    try:
        with SearchClient(again.address) as admin:
            assert admin.get_study("tab1").name == "tab1"
        with pytest.raises(
            ConfigError, match=through_another_name(url, os.getpid(), tmp_path / "s.db")
        ):
            ArchsearchServer(ServerConfig(storage=url, port=0))
    finally:
        again.stop(0)


def test_a_hard_link_to_a_database_another_process_serves_is_refused(
    tmp_path: Path, procs: list[ServerProc]
) -> None:
    """The same across processes: the refusal names the pid holding the database's lock."""
    first = ServerProc(f"sqlite:///{tmp_path}/s.db", tmp_path / "a.log").start()
    procs.append(first)
    os.link(tmp_path / "s.db", tmp_path / "hard.db")
    (tmp_path / "alias.db").symlink_to("hard.db")
    for name in ("hard.db", "alias.db"):
        url = f"sqlite:///{tmp_path}/{name}"
        with pytest.raises(
            ConfigError, match=through_another_name(url, first.pid, tmp_path / "hard.db")
        ):
            ArchsearchServer(ServerConfig(storage=url, port=0))
    with SearchClient(first.address) as admin:  # SQLite's own locks are not in the way
        admin.launch(table_spec("tab1", 1))
        assert admin.get_study("tab1").n_trials == 1


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads /proc/locks (Linux)")
def test_the_database_lock_leaves_sqlites_own_locks_alone(tmp_path: Path) -> None:
    """The lock opens the database file itself; closing a descriptor of a file drops every
    ``fcntl`` lock of the process on it, the shared lock SQLite holds in WAL mode included
    (another process could then take the database as unused and checkpoint it away). Taking,
    refusing and giving up the lock keep that lock."""
    db = tmp_path / "s.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (a)")
    conn.commit()
    conn.execute("SELECT * FROM t").fetchall()
    st = db.stat()
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"

    def sqlite_locks() -> list[str]:
        lines = Path("/proc/locks").read_text().splitlines()
        return [x for x in lines if " POSIX " in x and f" {os.getpid()} {where} " in x]

    before = sqlite_locks()
    assert before, "SQLite in WAL mode holds a shared lock on the database"
    lock = lock_storage(f"sqlite:///{db}")
    assert lock is not None
    with pytest.raises(StorageInUse):
        lock_storage(f"sqlite:///{db}")
    os.link(db, tmp_path / "hard.db")
    with pytest.raises(StorageInUse):
        lock_storage(f"sqlite:///{tmp_path}/hard.db")
    lock.release()
    assert sqlite_locks() == before
    again = lock_storage(f"sqlite:///{tmp_path}/hard.db")  # given up: free again
    assert again is not None
    again.release()
    conn.close()


def test_in_memory_sqlite_takes_no_lock() -> None:
    assert lock_storage("sqlite://") is None
    assert lock_storage("sqlite:///:memory:") is None


def test_a_second_serve_exits_with_one_line_and_a_killed_server_blocks_nothing(
    tmp_path: Path, procs: list[ServerProc]
) -> None:
    url = f"sqlite:///{tmp_path}/s3.db"
    first = ServerProc(url, tmp_path / "a.log").start()
    procs.append(first)
    done = subprocess.run(
        cli("serve", "--storage", url, "--port", "0"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.match(refusal(url, first.pid).replace("^", "^archsearch: ", 1), lines[0])
    first.signal(signal.SIGKILL)  # the OS drops the lock with the process
    first.wait(10)
    again = started(url)
    again.stop(0)


def test_a_refused_start_leaves_the_storage_unlocked(tmp_path: Path, busy_port: int) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(ConfigError, match="is in use"):
        ArchsearchServer(ServerConfig(storage=url, port=busy_port))
    srv = started(url)
    srv.stop(0)


def test_a_busy_port_says_so_and_how_to_pick_another(tmp_path: Path, busy_port: int) -> None:
    expected = (
        f"port {busy_port} on 127.0.0.1 is in use (another server?); "
        "pass another --port (0 picks a free one)"
    )
    cfg = ServerConfig(storage=f"sqlite:///{tmp_path}/s.db", port=busy_port)
    with pytest.raises(ConfigError) as e:
        ArchsearchServer(cfg)
    assert str(e.value) == expected
    done = subprocess.run(
        cli("serve", "--storage", cfg.storage, "--port", str(busy_port)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"archsearch: {expected}"]


def test_a_port_taken_between_the_check_and_the_bind_says_the_same(
    tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port is taken after the first check: grpc's bind fails (RuntimeError in grpc 1.85),
    and the message is still ours."""
    real = app._addresses_in_use
    calls: list[int] = []

    def free_at_first(host: str, port: int) -> tuple[int, int]:
        calls.append(port)
        return (1, 0) if len(calls) == 1 else real(host, port)

    monkeypatch.setattr(app, "_addresses_in_use", free_at_first)
    with pytest.raises(ConfigError) as e:
        ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path}/s.db", port=busy_port))
    assert str(e.value).startswith(f"port {busy_port} on 127.0.0.1 is in use (another server?)")
    assert len(calls) == 2


def test_a_relative_sqlite_path_is_named_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    cwd = os.getcwd()
    url = "sqlite:///tmp/wtA/a.db"
    note = (
        f"sqlite:///tmp/wtA/a.db is relative to {cwd}: the database is {cwd}/tmp/wtA/a.db; "
        "for /tmp/wtA/a.db write sqlite:////tmp/wtA/a.db"
    )
    assert relative_sqlite_note(url) == note
    assert relative_sqlite_note(f"sqlite:///{cwd}/a.db") is None
    assert relative_sqlite_note("postgresql://u@h/db") is None
    with caplog.at_level(logging.INFO, logger="archsearch.server"):
        srv = started(url)
    try:
        messages = [r.getMessage() for r in caplog.records]
        assert messages.count(note) == 1
        assert srv.database == f"{cwd}/tmp/wtA/a.db"
        assert srv.artifact_dir == f"{cwd}/tmp/wtA/a-artifacts"
        banner = [m for m in messages if m.startswith("archsearch server on")]
        assert banner[0].endswith(
            f"storage {url} (database {cwd}/tmp/wtA/a.db, artifacts {cwd}/tmp/wtA/a-artifacts)"
        )
    finally:
        srv.stop(0)
    assert (tmp_path / "tmp" / "wtA" / "a.db").is_file()  # the same file as before: cwd-relative


def test_an_absolute_sqlite_path_logs_no_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="archsearch.server"):
        srv = started(f"sqlite:///{tmp_path}/s.db")
    srv.stop(0)
    assert not [r for r in caplog.records if "is relative to" in r.getMessage()]


@pytest.mark.postgres
def test_a_second_server_on_the_same_postgres_database_is_refused(postgres_url: str) -> None:
    with fresh_database(postgres_url) as url, fresh_database(postgres_url) as other_url:
        first = started(url)
        try:
            with pytest.raises(ConfigError, match=refusal(url, os.getpid())):
                ArchsearchServer(ServerConfig(storage=url, port=0))
            other = started(other_url)  # advisory locks are per database
            other.stop(0)
        finally:
            first.stop(0)
        again = started(url)  # stop() released it
        again.stop(0)


@pytest.mark.postgres
def test_the_readmes_plain_postgresql_url_serves_and_hides_its_password(
    postgres_url: str, tmp_path: Path
) -> None:
    """`postgresql://` (no driver named: SQLAlchemy 2.1 dials psycopg 3) crashed `serve` with
    a traceback, and the start-up lines printed the database password."""
    import sqlalchemy

    with fresh_database(postgres_url) as url:
        # the test server trusts local connections: any password is taken, none is checked
        parsed = sqlalchemy.engine.make_url(url).set(drivername="postgresql", password="S3cret")
        plain = parsed.render_as_string(hide_password=False)
        assert plain.startswith("postgresql://") and ":S3cret@" in plain
        server = ServerProc(plain, tmp_path / "serve.log").start()
        try:
            with SearchClient(server.address) as c:
                wait = time.monotonic() + 60
                while time.monotonic() < wait:
                    try:
                        c.launch(table_spec("pg", 1))
                        break
                    except Exception:
                        time.sleep(0.2)
                assert c.get_study("pg").n_trials == 1
                # no --artifact-dir: no uploads, so a study that needs them is refused
                kept = {**table_spec("kept", 1), "recipe": {"keep_checkpoint": True}}
                with pytest.raises(ClientError) as refused:
                    c.launch(kept)
                assert refused.value.code.name == "FAILED_PRECONDITION"
                assert refused.value.details.startswith("recipe.keep_checkpoint needs the server")
                assert "restart it with --artifact-dir DIR" in refused.value.details
        finally:
            server.stop()
        out = server.output()
        assert "Traceback" not in out and "serving on" in out
        assert "S3cret" not in out, out
        assert ":***@" in out


def test_a_missing_database_driver_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        cli("serve", "--storage", "postgresql+pg8000://u:secret@127.0.0.1:1/db", "--port", "0"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert "its database driver is not installed (pg8000)" in line and "secret" not in line
