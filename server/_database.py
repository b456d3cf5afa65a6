"""Opening the Optuna storage: SQLite (WAL) by default, any SQLAlchemy URL for real deployments.

Only Optuna's public ``RDBStorage`` API; what touches Optuna's private tables is ``_storage``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from archsearch.server._errors import InvalidArgument
from archsearch.server._storage_lock import missing_driver, safe_url


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for other URLs or in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    if not path or path == ":memory:":
        return None
    return Path(path)


def open_storage(
    url: str,
    lease_duration_s: int,
    heartbeat_interval_s: int,
    stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> RDBStorage:
    """Opens (creating if needed) the RDB storage at ``url`` with heartbeats enabled.

    SQLite files are switched to WAL mode, so optuna-dashboard can read while the server
    writes, with ``synchronous=NORMAL`` (durable across process crashes, which is what a killed
    server needs; only a power loss can lose the last commits).

    Raises:
        InvalidArgument: the URL is malformed or the database cannot be opened.
    """
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if url.startswith("sqlite"):
        if path is None:
            raise InvalidArgument(
                f"storage {url!r}: in-memory SQLite cannot be shared with workers or the "
                "dashboard; use a file such as sqlite:///archsearch.db"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
        engine_kwargs["pool_size"] = 10
        engine_kwargs["max_overflow"] = 20
    try:
        storage = RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval_s,
            grace_period=lease_duration_s,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as e:
        raise InvalidArgument(
            f"storage {safe_url(url)!r} is not a usable SQLAlchemy URL ({e}); "
            "use sqlite:///FILE.db or postgresql://USER:PASS@HOST/DB"
        ) from e
    except sqlalchemy.exc.OperationalError as e:
        raise InvalidArgument(f"cannot open storage {safe_url(url)!r}: {e.orig}") from e
    except ImportError as e:
        raise InvalidArgument(missing_driver(url, e)) from e
    if path is not None:

        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        storage.engine.dispose()  # connections opened before the listener lack the pragma
    return storage
