"""Optuna storage wiring: SQLite (WAL) by default, any SQLAlchemy URL for real deployments."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from archsearch.server._errors import InvalidArgument


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
            f"storage {url!r} is not a usable SQLAlchemy URL ({e}); "
            "use sqlite:///FILE.db or postgresql://USER:PASS@HOST/DB"
        ) from e
    except sqlalchemy.exc.OperationalError as e:
        raise InvalidArgument(f"cannot open storage {url!r}: {e.orig}") from e
    if path is not None:

        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        storage.engine.dispose()  # connections opened before the listener lack the pragma
    return storage


def write_trial_attrs(
    rdb: RDBStorage,
    trial_id: int,
    user: dict[str, Any] | None = None,
    system: dict[str, Any] | None = None,
    heartbeat: bool = False,
) -> None:
    """Sets several attributes of one unfinished trial (and its heartbeat) in one transaction.

    Optuna's public storage API commits once per attribute; a lease needs four writes and a
    commit costs milliseconds on SQLite, so the hot path batches them through RDBStorage's own
    ``_set_trial_attr_without_commit``. If a future Optuna drops that private method, this
    falls back to the public calls (same result, more commits).
    """
    user = user or {}
    system = system or {}
    setter = getattr(rdb, "_set_trial_attr_without_commit", None)
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:  # pragma: no cover - depends on Optuna's internals
        setter = None
    if setter is None:
        for k, v in user.items():
            rdb.set_trial_user_attr(trial_id, k, v)
        for k, v in system.items():
            rdb.set_trial_system_attr(trial_id, k, v)
        if heartbeat:
            rdb.record_heartbeat(trial_id)
        return
    dialect = rdb.engine.dialect.name
    with _create_scoped_session(rdb.scoped_session, True) as session:
        if dialect in ("sqlite", "postgresql"):
            # Upsert every attribute in one statement per table: no per-attribute reload of the
            # trial row (the caller knows the trial is unfinished: this server owns it).
            for model_cls, attrs in (
                (models.TrialUserAttributeModel, user),
                (models.TrialSystemAttributeModel, system),
            ):
                if attrs:
                    _upsert_attrs(session, dialect, model_cls, trial_id, attrs)
        else:
            for k, v in user.items():
                setter(session, models.TrialUserAttributeModel, trial_id, k, v)
            for k, v in system.items():
                setter(session, models.TrialSystemAttributeModel, trial_id, k, v)
        if heartbeat:
            beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, True)
            if beat is None:
                session.add(models.TrialHeartbeatModel(trial_id=trial_id))
            else:
                beat.heartbeat = session.execute(sqlalchemy.func.now()).scalar()


def _upsert_attrs(
    session: Any, dialect: str, model_cls: Any, trial_id: int, attrs: dict[str, Any]
) -> None:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    stmt = insert(model_cls).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[model_cls.trial_id, model_cls.key],
        set_={"value_json": stmt.excluded.value_json},
    )
    session.execute(stmt)
