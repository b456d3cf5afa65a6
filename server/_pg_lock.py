"""PostgreSQL's one-server lock: a session-level advisory lock, and a watch that keeps it.

The lock is ``pg_try_advisory_lock`` (one fixed key, per database) on a connection of the
server's own; the holder's pid and host are that connection's ``application_name``. It ends
with the session, and a session can end under a running server: a database restart, a session
killed (``pg_terminate_backend``), ``idle_session_timeout``. It was taken once and never
checked: a second server then started on the same database, and the two handed out more
candidates than a study's budget. ``_Lock.watch`` checks it on its connection every few
seconds; once lost it retakes it when it is free (one warning), and when another server holds
it now calls the server's ``on_lost``, which stops serving: never two servers on one database.
While the database cannot be reached the watch keeps trying (nobody can take the lock then).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable

import sqlalchemy

from archsearch.server._rpc import storage_down
from archsearch.server._storage_lock import StorageLock, _refusal, _when, safe_url

log = logging.getLogger("archsearch.server")

#: the advisory-lock key of every archsearch server: a fixed constant's hash, as a signed bigint
PG_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"archsearch: one server per storage").digest()[:8], "big", signed=True
)
APP_NAME_PREFIX = "archsearch serve "
_KEY_PARTS = {"hi": (PG_LOCK_KEY >> 32) & 0xFFFFFFFF, "lo": PG_LOCK_KEY & 0xFFFFFFFF}
_OURS = (
    "l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def lock_postgres(url: str) -> StorageLock:
    """Takes the lock of the database of ``url``; the lock's ``watch`` keeps it.

    Raises:
        StorageInUse: another server holds it.
        sqlalchemy.exc.SQLAlchemyError: PostgreSQL cannot be reached.
    """
    lock = _Lock(url)
    conn = lock.take()
    if conn is None:
        raise _refusal(safe_url(url), lock.refused_by)
    lock.conn = conn
    return StorageLock(lock.release, lock.watch)


class _Lock:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT"
        )
        self.conn: sqlalchemy.Connection | None = None
        self.refused_by = ""
        #: the application name of the session holding the lock when it was refused
        self.holder_app = ""
        #: this server's sessions' application name (pid and host: who holds the lock)
        self.app_name = f"{APP_NAME_PREFIX}{os.getpid()}@{socket.gethostname()}"[:63]
        self._guard = threading.Lock()  # the connection: the watch's check against release
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> sqlalchemy.Connection | None:
        """A new connection holding the lock; None (``refused_by`` set) when another session
        holds it. Raises what connecting raises."""
        try:
            conn = self.engine.connect()
        except BaseException:
            self.engine.dispose()
            raise
        try:
            name = self.app_name
            conn.execute(
                sqlalchemy.text("SELECT set_config('application_name', :n, false)"), {"n": name}
            )
            got = conn.execute(
                sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}
            )
            if got.scalar():
                return conn
            self.refused_by, self.holder_app = _pg_holder(conn)
        except BaseException:
            conn.close()
            self.engine.dispose()
            raise
        conn.close()
        self.engine.dispose()
        return None

    def watch(self, on_lost: Callable[[str], None], interval_s: float) -> None:
        self._thread = threading.Thread(
            target=self._watch, args=(on_lost, interval_s), name="storage-lock", daemon=True
        )
        self._thread.start()

    def _watch(self, on_lost: Callable[[str], None], interval_s: float) -> None:
        away = False  # the database could not be reached at the last check
        own_session_said = False  # said that our own old session still holds the lock
        while not self._stop.wait(interval_s):
            with self._guard:
                if self._stop.is_set():
                    return
                try:
                    if self.conn is not None and self._still_held(self.conn):
                        continue
                except sqlalchemy.exc.SQLAlchemyError:
                    pass  # the session ended (or the database is away): take it anew
                self._drop()
                try:
                    self.conn = self.take()
                except sqlalchemy.exc.SQLAlchemyError as e:
                    if not away:  # the writer and the RPCs say the outage; this, the lock
                        log.warning(
                            "the one-server lock of %s cannot be checked (%s); retaking it "
                            "once the database answers",
                            safe_url(self.url),
                            storage_down(e) or type(e).__name__,
                        )
                        log.debug("checking the storage lock", exc_info=e)
                    away = True
                    continue
                away = False
                if self.conn is None and self.holder_app == self.app_name:
                    # this server's own earlier session still holds it (its backend outlives
                    # a network blip until TCP gives up on it): nobody else can take it
                    # meanwhile; keep trying rather than stop a healthy server
                    if not own_session_said:
                        log.warning(
                            "the one-server lock of %s is still held by this server's earlier "
                            "database session; retaking it once that session ends",
                            safe_url(self.url),
                        )
                        own_session_said = True
                    continue
                own_session_said = False
                if self.conn is not None:
                    log.warning(
                        "lost the one-server lock of %s (its database session ended: a "
                        "database restart, a killed session or idle_session_timeout); retaken",
                        safe_url(self.url),
                    )
                    continue
            on_lost(
                f"another archsearch server ({self.refused_by}) took the one-server lock of "
                f"{safe_url(self.url)} after this server's database session ended (a database "
                "restart, a killed session or idle_session_timeout); this server stops serving "
                "so that one server writes the database: stop one of them, then restart this "
                "one if needed"
            )
            return

    @staticmethod
    def _still_held(conn: sqlalchemy.Connection) -> bool:
        row = conn.execute(
            sqlalchemy.text(f"SELECT count(*) FROM pg_locks l WHERE {_OURS} AND l.pid = "
                            "pg_backend_pid()"),
            _KEY_PARTS,
        )  # fmt: skip
        return bool(row.scalar())

    def _drop(self) -> None:
        """Closes the lost connection (a dead one raises; nothing to give up then)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                conn.invalidate()
                conn.close()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)
        with self._guard:
            conn, self.conn = self.conn, None
            if conn is not None:
                with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                    conn.execute(
                        sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY}
                    )
                conn.close()
            self.engine.dispose()


def _pg_holder(conn: sqlalchemy.Connection) -> tuple[str, str]:
    """'pid N on host H, since T' of the session holding the lock, from ``pg_stat_activity``,
    and that session's application name ("" when not known)."""
    row = conn.execute(
        sqlalchemy.text(
            "SELECT a.application_name, a.backend_start FROM pg_locks l "
            f"JOIN pg_stat_activity a ON a.pid = l.pid WHERE {_OURS}"
        ),
        _KEY_PARTS,
    ).first()
    if row is None or not (row[0] or "").startswith(APP_NAME_PREFIX):
        return "a session of this database holds the archsearch advisory lock", ""
    pid, _, host = row[0][len(APP_NAME_PREFIX) :].partition("@")
    since = f", since {_when(row[1].timestamp())}" if row[1] is not None else ""
    return f"pid {pid} on host {host}{since}", row[0]
