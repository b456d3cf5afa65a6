"""One server per storage: the server keeps per-study state in memory, so it must be the only
writer. ``lock_storage`` takes a lock held for the server's life:

* SQLite: an exclusive, non-blocking ``flock`` on ``<database>.lock`` beside the database file
  (symlinks resolved: named after the file the path ends at), holding the holder's pid, host
  and start time as text (for the refusal message), and one on the database file itself, so
  that every name of one database (a symlink, a hard link, a symlinked folder) is one lock. The
  OS drops both when the process dies, so a SIGKILLed server does not block a restart.
  ``flock`` and SQLite's own ``fcntl`` locks on the database are independent on Linux (a local
  file system; on NFS ``flock`` is emulated with ``fcntl``, and SQLite should not be there),
  but closing *any* descriptor of a file drops every ``fcntl`` lock the process holds on it,
  SQLite's included: so the descriptor this lock opens on a database is never closed (one per
  database per process; giving the lock up only unlocks it).
* PostgreSQL: a session-level ``pg_try_advisory_lock`` on a dedicated connection (advisory locks
  are per database); the holder's pid and host are in that connection's ``application_name``.
  The session can end under a running server (a database restart, a killed session,
  ``idle_session_timeout``), and the lock with it, so the server watches it (``_pg_lock``).
* In-memory SQLite, other databases: no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy


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
    """A held lock; ``release`` (idempotent) gives it up; ``watch`` checks it is still held,
    where it can be lost while the server runs (PostgreSQL)."""

    def __init__(self, release: Any, watch: Any = None) -> None:
        self._release = release
        self._watch = watch

    def watch(self, on_lost: Callable[[str], None], interval_s: float) -> None:
        """Checks the lock every ``interval_s`` seconds, retaking it when it was lost and is
        free; calls ``on_lost(message)`` once (from the watching thread) when another server
        holds it now. Nothing to do for a lock the OS holds for the process (SQLite)."""
        if self._watch is not None:
            self._watch(on_lost, interval_s)

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
        real = Path(os.path.realpath(db))  # every symlink on the way resolved
        held = _lock_file(url, real.with_name(real.name + ".lock"))
        try:
            unlock_database = _lock_database(url, real)
        except BaseException:
            held.release()
            raise

        def release() -> None:
            unlock_database()
            held.release()

        return StorageLock(release)
    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError:
        return None  # opening the storage says what is wrong with the URL
    if backend == "postgresql":
        from archsearch.server._pg_lock import lock_postgres

        return lock_postgres(url)
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


#: the descriptor this process opened on each SQLite database it locked, by (device, inode):
#: never closed, since that would drop the process's ``fcntl`` locks on it (SQLite's)
_DB_FDS: dict[tuple[int, int], int] = {}
#: the databases a server of this process holds (``flock`` on one descriptor never refuses)
_DB_HELD: set[tuple[int, int]] = set()
_DB_GUARD = threading.Lock()


def _lock_database(url: str, real: Path) -> Callable[[], None]:
    """An exclusive ``flock`` on the database file ``real`` itself (created empty when it does
    not exist yet: SQLite takes an empty file as a new database); returns its release.

    Raises:
        StorageInUse: another server, of this process or another, holds it.
    """
    with _DB_GUARD:
        try:
            st = os.stat(real)
            fd = _DB_FDS.get((st.st_dev, st.st_ino))
        except FileNotFoundError:
            fd = None
        if fd is None:
            try:
                fd = os.open(real, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                return lambda: None  # nobody can open it, SQLite neither: it says why
            st = os.fstat(fd)
            fd = _DB_FDS.setdefault((st.st_dev, st.st_ino), fd)  # a lost race: one stays open
        key, held = (st.st_dev, st.st_ino), fd
        if key in _DB_HELD:
            raise _refusal(url, f"pid {os.getpid()} on host {socket.gethostname()}, {_via(real)}")
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(url, _flock_holder(key, real)) from None
        _DB_HELD.add(key)

    def release() -> None:
        with _DB_GUARD, contextlib.suppress(OSError):
            _DB_HELD.discard(key)
            fcntl.flock(held, fcntl.LOCK_UN)  # not close: see _DB_FDS

    return release


def _via(real: Path) -> str:
    return f"through another name of {real} (a symlink or hard link)"


def _flock_holder(key: tuple[int, int], real: Path) -> str:
    """'pid N on host H, through another name of ...' of the process holding the ``flock`` on
    database ``key`` (from ``/proc/locks``, on Linux); a description without the pid otherwise."""
    dev, ino = key
    where = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:  # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146714 0 EOF"
                parts = line.split()
                if parts[1:2] == ["FLOCK"] and parts[5:6] == [where] and parts[4] != "0":
                    return f"pid {parts[4]} on host {socket.gethostname()}, {_via(real)}"
    except (OSError, IndexError):
        pass
    return f"a process that serves it {_via(real)}"


def missing_driver(url: str, e: ImportError) -> str:
    """One line for a storage URL whose database driver is not installed."""
    if not url.startswith("postgresql"):  # archsearch[server] brings PostgreSQL's only
        return (
            f"cannot open storage {safe_url(url)}: its database driver is not installed "
            f"({e.name or e}); install it with pip (archsearch is tested on SQLite and "
            "PostgreSQL)"
        )
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
