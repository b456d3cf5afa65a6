"""One server per storage: the server keeps per-study state in memory, so it must be the only
writer. ``lock_storage`` takes a lock held for the server's life:

* SQLite: an exclusive, non-blocking ``flock`` on ``<database>.lock`` beside the database file,
  holding the holder's pid, host and start time as text (for the refusal message). The OS drops
  it when the process dies, so a SIGKILLed server does not block a restart.
* PostgreSQL: a session-level ``pg_try_advisory_lock`` on a dedicated connection (advisory locks
  are per database); the holder's pid and host are in that connection's ``application_name``.
* In-memory SQLite, other databases: no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import sqlalchemy

#: the advisory-lock key of every archsearch server: a fixed constant's hash, as a signed bigint
PG_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"archsearch: one server per storage").digest()[:8], "big", signed=True
)
APP_NAME_PREFIX = "archsearch serve "


class StorageInUse(RuntimeError):
    """Another archsearch server holds the storage; the message says which and what to do."""


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _refusal(url: str, who: str) -> StorageInUse:
    return StorageInUse(
        f"another archsearch server already serves {url} ({who}); "
        "stop it, or give this one another --storage"
    )


def sqlite_database(url: str) -> Path | None:
    """The absolute path of a SQLite URL's database file as SQLAlchemy opens it (a relative
    path is relative to the current directory); None for in-memory or non-SQLite URLs."""
    try:
        u = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    if u.database.startswith("file:"):
        return None
    return Path(os.path.abspath(u.database))


def relative_sqlite_note(url: str) -> str | None:
    """For a SQLite URL with a relative path (three slashes), a line naming the file it opens
    and how to write the absolute one; None otherwise."""
    db = sqlite_database(url)
    if db is None:
        return None
    given = sqlalchemy.engine.make_url(url).database or ""
    if os.path.isabs(given):
        return None
    return (
        f"{url} is relative to {os.getcwd()}: the database is {db}; "
        f"for /{given} write sqlite:////{given}"
    )


class StorageLock:
    """A held lock; ``release`` (idempotent) gives it up."""

    def __init__(self, release: Any) -> None:
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def lock_storage(url: str) -> StorageLock | None:
    """Locks the storage at ``url`` for this process; None where no lock applies.

    Raises:
        StorageInUse: another server holds it.
        OSError: the SQLite lock file cannot be created.
        sqlalchemy.exc.SQLAlchemyError: PostgreSQL cannot be reached.
    """
    db = sqlite_database(url)
    if db is not None:
        return _lock_file(url, Path(os.path.realpath(db)).with_name(db.name + ".lock"))
    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError:
        return None  # opening the storage says what is wrong with the URL
    if backend == "postgresql":
        return _lock_postgres(url)
    return None


def _lock_file(url: str, path: Path) -> StorageLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 - held for the server's life; closing releases the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        text = f.read()
        f.close()
        try:
            held = json.loads(text)
            who = f"pid {held['pid']} on host {held['host']}, since {_when(held['since'])}"
        except (ValueError, KeyError, TypeError, OverflowError, OSError):
            who = f"the process holding {path}"  # just started, its line not written yet
        raise _refusal(url, who) from None
    except BaseException:
        f.close()
        raise
    f.seek(0)
    f.truncate()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    f.write(json.dumps(holder) + "\n")
    f.flush()

    def release() -> None:
        with contextlib.suppress(OSError):
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)  # for the open file, even if a forked child shares it
        f.close()  # the file stays: removing it would let two servers lock different files

    return StorageLock(release)


def _lock_postgres(url: str) -> StorageLock:
    engine = sqlalchemy.create_engine(
        url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        conn = engine.connect()
    except BaseException:
        engine.dispose()
        raise
    try:
        name = f"{APP_NAME_PREFIX}{os.getpid()}@{socket.gethostname()}"[:63]
        conn.execute(
            sqlalchemy.text("SELECT set_config('application_name', :n, false)"), {"n": name}
        )
        got = conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
        if not got.scalar():
            raise _refusal(safe_url(url), _pg_holder(conn))
    except BaseException:
        conn.close()
        engine.dispose()
        raise

    def release() -> None:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
        conn.close()
        engine.dispose()

    return StorageLock(release)


def missing_driver(url: str, e: ImportError) -> str:
    """One line for a storage URL whose database driver is not installed."""
    return (
        f"cannot open storage {safe_url(url)}: its database driver is not installed "
        f"({e.name or e}); install it (pip install 'archsearch[server]' has psycopg and "
        "psycopg2), or name an installed one: postgresql+psycopg2://..."
    )


def safe_url(url: str) -> str:
    """``url`` with its password hidden (as given when it is not a URL)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def _pg_holder(conn: sqlalchemy.Connection) -> str:
    """'pid N on host H, since T' of the session holding the lock, from ``pg_stat_activity``."""
    row = conn.execute(
        sqlalchemy.text(
            "SELECT a.application_name, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"hi": (PG_LOCK_KEY >> 32) & 0xFFFFFFFF, "lo": PG_LOCK_KEY & 0xFFFFFFFF},
    ).first()
    if row is None or not (row[0] or "").startswith(APP_NAME_PREFIX):
        return "a session of this database holds the archsearch advisory lock"
    pid, _, host = row[0][len(APP_NAME_PREFIX) :].partition("@")
    since = f", since {_when(row[1].timestamp())}" if row[1] is not None else ""
    return f"pid {pid} on host {host}{since}"
