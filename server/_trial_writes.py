"""The hot path's one-transaction trial writes (lease, heartbeat, report, progress, finish,
insert), as operations the group-commit writer runs (``_writer.StorageWriter``); with
``_storage``, the only code that writes Optuna's tables directly."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._sql import to_stored, upsert_attrs, upsert_statement, utcnow

# ---------------------------------------------------------------------------------------------
# Hot-path writes as group-commit operations (see ``_writer.StorageWriter``).
#
# Each function below returns an operation: a function of one connection that writes exactly the
# rows Optuna's ``RDBStorage`` would write for the same change (same tables, same JSON, naive
# UTC datetimes, the same trial numbering), with SQLAlchemy Core statements on Optuna's own
# models instead of one ORM session and one commit per call. ``tests/server/test_writer.py``
# checks that ``optuna.load_study`` reads the result exactly as it reads Optuna's own writes.
# ---------------------------------------------------------------------------------------------


def _heartbeat(conn: sqlalchemy.Connection, trial_id: int) -> None:
    """``RDBStorage.record_heartbeat``: the database's own clock, one row per trial."""
    table = models.TrialHeartbeatModel.__table__
    stmt = upsert_statement(conn.dialect.name, table)
    if stmt is not None:
        conn.execute(stmt, {"trial_id": trial_id})
        return
    now = sqlalchemy.func.current_timestamp()
    updated = conn.execute(
        table.update().where(table.c.trial_id == trial_id).values(heartbeat=now)
    ).rowcount
    if not updated:
        conn.execute(table.insert().values(trial_id=trial_id, heartbeat=now))


class TrialNotRunning(Exception):
    """A write for a RUNNING trial found it finished (or gone); nothing was changed."""

    def __init__(self, trial_id: int, state: str | None) -> None:
        super().__init__(f"trial id {trial_id} is {state or 'missing'}, not RUNNING")
        self.trial_id = trial_id
        self.state = state


def lease_op(
    trial_id: int, user: dict[str, Any], system: dict[str, Any]
) -> Callable[[sqlalchemy.Connection], None]:
    """Operation: a lease's attributes and a fresh heartbeat for one RUNNING trial."""

    def op(conn: sqlalchemy.Connection) -> None:
        upsert_attrs(conn, models.TrialUserAttributeModel, trial_id, user)
        upsert_attrs(conn, models.TrialSystemAttributeModel, trial_id, system)
        _heartbeat(conn, trial_id)

    return op


def heartbeat_op(trial_id: int) -> Callable[[sqlalchemy.Connection], None]:
    """Operation: ``RDBStorage.record_heartbeat(trial_id)``."""
    return lambda conn: _heartbeat(conn, trial_id)


def intermediate_op(
    trial_id: int, step: int, value: float
) -> Callable[[sqlalchemy.Connection], None]:
    """Operation: ``set_trial_intermediate_value`` and ``record_heartbeat`` of a RUNNING trial,
    in one transaction (a worker's intermediate report).

    Raises (inside the operation) :class:`TrialNotRunning` when the trial is finished or gone,
    changing nothing. The server is the storage's only writer and its writer thread applies
    operations one at a time, so the check and the writes see the same trial state.
    """
    stored, vtype = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)

    def op(conn: sqlalchemy.Connection) -> None:
        _require_running(conn, trial_id)
        table = models.TrialIntermediateValueModel.__table__
        row = {"intermediate_value": stored, "intermediate_value_type": vtype}
        changed = conn.execute(
            table.update().where(table.c.trial_id == trial_id, table.c.step == step).values(**row)
        ).rowcount
        if not changed:
            conn.execute(table.insert().values(trial_id=trial_id, step=step, **row))
        _heartbeat(conn, trial_id)

    return op


#: User attributes of a job's latest report (:func:`progress_op`).
PROGRESS_STEP_ATTR = "progress.step"
PROGRESS_VALUE_ATTR = "progress.value"


def progress_op(trial_id: int, step: int, value: float) -> Callable[[sqlalchemy.Connection], None]:
    """Operation: a job's report (a trial that scores no candidate of its own, such as an
    AutoDistil supernet job reporting its distillation loss) as the user attributes
    :data:`PROGRESS_STEP_ATTR` and :data:`PROGRESS_VALUE_ATTR`, with a heartbeat, in one
    transaction. Not an intermediate value: those are the objective's learning curve, which
    the pruner and optuna-dashboard read. Raises :class:`TrialNotRunning` as
    :func:`intermediate_op` does."""

    def op(conn: sqlalchemy.Connection) -> None:
        _require_running(conn, trial_id)
        row = {PROGRESS_STEP_ATTR: step, PROGRESS_VALUE_ATTR: value}
        upsert_attrs(conn, models.TrialUserAttributeModel, trial_id, row)
        _heartbeat(conn, trial_id)

    return op


def _require_running(conn: sqlalchemy.Connection, trial_id: int) -> None:
    trials = models.TrialModel.__table__
    found = conn.execute(
        sqlalchemy.select(trials.c.state).where(trials.c.trial_id == trial_id)
    ).scalar()
    if found != TrialState.RUNNING:
        raise TrialNotRunning(trial_id, None if found is None else found.name)


def attrs_op(
    trial_id: int, user: dict[str, Any] | None = None, system: dict[str, Any] | None = None
) -> Callable[[sqlalchemy.Connection], None]:
    """Operation: sets user and system attributes of one trial."""

    def op(conn: sqlalchemy.Connection) -> None:
        upsert_attrs(conn, models.TrialUserAttributeModel, trial_id, user or {})
        upsert_attrs(conn, models.TrialSystemAttributeModel, trial_id, system or {})

    return op


def _insert_values(conn: sqlalchemy.Connection, trial_id: int, values: Sequence[float]) -> None:
    rows = []
    for objective, v in enumerate(values):
        stored, value_type = models.TrialValueModel.value_to_stored_repr(v)
        rows.append(
            {
                "trial_id": trial_id,
                "objective": objective,
                "value": stored,
                "value_type": value_type,
            }
        )
    if rows:
        conn.execute(models.TrialValueModel.__table__.insert(), rows)


def _intermediate_row(trial_id: int, step: int, value: float) -> dict[str, Any]:
    """A row of Optuna's intermediate values table."""
    stored, vtype = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
    return {
        "trial_id": trial_id,
        "step": step,
        "intermediate_value": stored,
        "intermediate_value_type": vtype,
    }


def finish_op(
    trial_id: int,
    state: TrialState,
    values: Sequence[float] | None,
    user: dict[str, Any] | None = None,
    expected: TrialState = TrialState.RUNNING,
    curve: Mapping[int, float] | None = None,
) -> Callable[[sqlalchemy.Connection], None]:
    """Operation: ``set_trial_state_values`` for a RUNNING trial, plus user attributes (and
    ``curve``, intermediate values by step: a repeat of a pruned candidate carries its
    original's).

    The attributes are written in the same transaction as the state, so a reader never sees
    the finished trial without them (a FAIL always with its ``fail_reason``; Optuna refuses
    attributes on finished trials, and its cache would keep the trial as first read).

    Args:
        expected: the state the trial must be in (WAITING to end a queued retry unrun).

    Raises (inside the operation) :class:`TrialNotRunning` when the trial is not in the
    expected state any more, changing nothing: the state check and the update are one
    statement.
    """
    if not state.is_finished():
        raise ValueError(f"finish_op finishes trials; {state.name} is not a finished state")
    values = list(values) if values is not None else None
    steps = [_intermediate_row(trial_id, step, v) for step, v in (curve or {}).items()]

    def op(conn: sqlalchemy.Connection) -> None:
        trials = models.TrialModel.__table__
        changed = conn.execute(
            trials.update()
            .where(trials.c.trial_id == trial_id, trials.c.state == expected)
            .values(state=state, datetime_complete=utcnow())
        ).rowcount
        if changed != 1:
            found = conn.execute(
                sqlalchemy.select(trials.c.state).where(trials.c.trial_id == trial_id)
            ).scalar()
            raise TrialNotRunning(trial_id, None if found is None else found.name)
        if values is not None:
            _insert_values(conn, trial_id, values)
        if curve:
            conn.execute(models.TrialIntermediateValueModel.__table__.insert(), steps)
        upsert_attrs(conn, models.TrialUserAttributeModel, trial_id, user or {})

    return op


def unlease_op(trial_id: int, system: dict[str, Any]) -> Callable[[sqlalchemy.Connection], None]:
    """Operation: takes a RUNNING trial's lease back (``system`` clears the lease attribute)
    and drops its heartbeat row, so the trial is a prepared one again: the lease reaper only
    sees trials with a heartbeat, and a restarted server puts it back into the pool."""

    def op(conn: sqlalchemy.Connection) -> None:
        upsert_attrs(conn, models.TrialSystemAttributeModel, trial_id, system)
        beats = models.TrialHeartbeatModel.__table__
        conn.execute(beats.delete().where(beats.c.trial_id == trial_id))

    return op


@dataclasses.dataclass(frozen=True)
class StoredTrial:
    """Where an inserted trial landed: its id, its number and its (local) start time."""

    trial_id: int
    number: int
    datetime_start: datetime.datetime | None


def insert_trial_op(
    study_id: int, trial: FrozenTrial
) -> Callable[[sqlalchemy.Connection], StoredTrial]:
    """Operation: stores ``trial`` (state, values, params, attributes, intermediate values) as a
    new trial of the study, numbered as Optuna numbers it (trials of the study with a smaller
    id). ``trial``'s own id and number are ignored."""
    params = []
    for name, value in trial.params.items():
        dist = trial.distributions[name]
        params.append(
            {
                "param_name": name,
                "param_value": dist.to_internal_repr(value),
                "distribution_json": optuna.distributions.distribution_to_json(dist),
            }
        )
    values = trial.values
    state = trial.state
    start = to_stored(trial.datetime_start)
    complete = to_stored(trial.datetime_complete)
    if state.is_finished() and complete is None:
        complete = utcnow()
    intermediate = []
    for step, v in trial.intermediate_values.items():
        stored, vtype = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(v)
        intermediate.append(
            {"step": step, "intermediate_value": stored, "intermediate_value_type": vtype}
        )
    user, system = dict(trial.user_attrs), dict(trial.system_attrs)

    def op(conn: sqlalchemy.Connection) -> StoredTrial:
        trials = models.TrialModel.__table__
        if conn.dialect.name != "sqlite":
            # Optuna locks the study row so that concurrent creators number trials apart.
            studies = models.StudyModel.__table__
            conn.execute(
                sqlalchemy.select(studies.c.study_id)
                .where(studies.c.study_id == study_id)
                .with_for_update()
            )
        # Optuna numbers a trial by counting the study's trials with a smaller id. A new id is
        # larger than every id in the table (SQLite's rowid is max + 1; PostgreSQL's sequence
        # grows, and the study row is locked), so that count is the number of the study's
        # trials now; numbers being dense, it is the latest trial's number + 1: an index seek
        # instead of a count that grows with the study (the count stays the fallback).
        latest = conn.execute(
            sqlalchemy.select(trials.c.number)
            .where(trials.c.study_id == study_id)
            .order_by(trials.c.trial_id.desc())
            .limit(1)
        ).first()
        if latest is None:
            number = 0
        elif latest[0] is not None:
            number = int(latest[0]) + 1
        else:
            number = conn.execute(
                sqlalchemy.select(sqlalchemy.func.count(trials.c.trial_id)).where(
                    trials.c.study_id == study_id
                )
            ).scalar_one()
        inserted = conn.execute(
            trials.insert().values(
                study_id=study_id,
                number=number,
                state=state,
                datetime_start=start,
                datetime_complete=complete,
            )
        ).inserted_primary_key
        assert inserted is not None  # an INSERT always has a primary key
        tid = inserted[0]
        if params:
            conn.execute(
                models.TrialParamModel.__table__.insert(),
                [{"trial_id": tid, **p} for p in params],
            )
        if values is not None:
            _insert_values(conn, tid, values)
        if intermediate:
            conn.execute(
                models.TrialIntermediateValueModel.__table__.insert(),
                [{"trial_id": tid, **iv} for iv in intermediate],
            )
        upsert_attrs(conn, models.TrialUserAttributeModel, tid, user)
        upsert_attrs(conn, models.TrialSystemAttributeModel, tid, system)
        return StoredTrial(int(tid), int(number), trial.datetime_start)

    return op
