"""Portable SQL the storage boundary writes with: upserts per dialect, naive UTC datetimes.

Plain SQLAlchemy Core, nothing of Optuna's: ``_storage`` applies these to Optuna's tables.
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any

import sqlalchemy


def utcnow() -> datetime.datetime:
    """What RDBStorage stores for ``datetime.now()``: naive UTC."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def to_stored(value: datetime.datetime | None) -> datetime.datetime | None:
    """A FrozenTrial's naive local datetime as RDBStorage stores it (naive UTC)."""
    if value is None:
        return None
    return value.astimezone(datetime.UTC).replace(tzinfo=None)


@functools.cache
def upsert_statement(dialect: str, table: sqlalchemy.Table) -> Any:
    """One ``INSERT ... ON CONFLICT DO UPDATE`` per dialect and attribute table, built once so
    SQLAlchemy compiles it once (it is executed with a list of rows); None where the dialect
    has no upsert."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        return None
    stmt = insert(table)
    if "key" in table.c:
        return stmt.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.key],
            set_={"value_json": stmt.excluded.value_json},
        )
    now = sqlalchemy.func.current_timestamp()  # the heartbeat table
    return stmt.values(heartbeat=now).on_conflict_do_update(
        index_elements=[table.c.trial_id], set_={"heartbeat": now}
    )


def upsert_attrs(
    conn: sqlalchemy.Connection, model_cls: Any, trial_id: int, attrs: dict[str, Any]
) -> None:
    """Sets several attributes of one trial in one statement (two on other databases)."""
    if not attrs:
        return
    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    table = model_cls.__table__
    stmt = upsert_statement(conn.dialect.name, table)
    if stmt is not None:
        conn.execute(stmt, rows)
        return
    conn.execute(  # portable upsert: the (trial_id, key) rows are replaced
        table.delete().where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs)))
    )
    conn.execute(table.insert(), rows)
