"""The server's storage boundary: the only module that touches Optuna's private
attributes and tables (``Study._study_id``, ``FrozenTrial._trial_id``, ``RDBStorage``'s stale
trial query, its ORM models and ``_CachedStorage``), so an Optuna upgrade is checked here.
Opening the storage (public API only) is ``_database``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import json
import threading
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._sql import to_stored, upsert_attrs, upsert_statement, utcnow


def study_id_of(study: optuna.Study) -> int:
    """The storage id of an Optuna study (Optuna keeps it private)."""
    return study._study_id


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage an Optuna study was opened on (Optuna keeps it private)."""
    return study._storage


def insert_trial_system_attr(rdb: RDBStorage, trial_id: int, key: str, value: Any) -> None:
    """Adds a system attribute to a trial in any state (a new key; one transaction)."""
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session, True) as session:
        session.add(
            models.TrialSystemAttributeModel(
                trial_id=trial_id, key=key, value_json=json.dumps(value)
            )
        )


def trial_id_of(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage id of a trial, frozen or being asked (Optuna keeps it private)."""
    return trial._trial_id


def stale_trial_ids(rdb: RDBStorage, study_id: int) -> list[int] | None:
    """Ids of the study's RUNNING trials whose heartbeat is older than the grace period:
    ``RDBStorage``'s own query, None when this Optuna lacks it (the caller then falls back to
    the public ``optuna.storages.fail_stale_trials``)."""
    query = getattr(rdb, "_get_stale_trial_ids", None)
    if query is None:  # pragma: no cover - depends on Optuna's internals
        return None
    return list(query(study_id))


def after_trial_acts(sampler: optuna.samplers.BaseSampler) -> bool:
    """Whether a sampler's ``after_trial`` hook may do anything: it is overridden, and the
    sampler has constraint functions (Optuna's built-in samplers act on nothing else; their
    ``_constraints_func`` is private) or is unknown (an unknown sampler is always called)."""
    hook = type(sampler).after_trial is not optuna.samplers.BaseSampler.after_trial
    return hook and getattr(sampler, "_constraints_func", "unknown") is not None


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
        trials = models.TrialModel.__table__
        found = conn.execute(
            sqlalchemy.select(trials.c.state).where(trials.c.trial_id == trial_id)
        ).scalar()
        if found != TrialState.RUNNING:
            raise TrialNotRunning(trial_id, None if found is None else found.name)
        table = models.TrialIntermediateValueModel.__table__
        row = {"intermediate_value": stored, "intermediate_value_type": vtype}
        changed = conn.execute(
            table.update().where(table.c.trial_id == trial_id, table.c.step == step).values(**row)
        ).rowcount
        if not changed:
            conn.execute(table.insert().values(trial_id=trial_id, step=step, **row))
        _heartbeat(conn, trial_id)

    return op


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


def finish_op(
    trial_id: int,
    state: TrialState,
    values: Sequence[float] | None,
    user: dict[str, Any] | None = None,
    expected: TrialState = TrialState.RUNNING,
) -> Callable[[sqlalchemy.Connection], None]:
    """Operation: ``set_trial_state_values`` for a RUNNING trial, plus user attributes.

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


class DeferredTrialStorage(_CachedStorage):
    """Optuna's cached RDB storage, except that trials asked inside :meth:`deferring` live in
    memory until the server stores them, whole, in one transaction.

    ``Study.ask`` followed by a space's ``suggest`` costs Optuna one transaction to create the
    trial, one read to build ``optuna.Trial``, and one transaction per parameter. Here, on the
    thread inside ``deferring()``, creating a trial without a template returns a *provisional*
    (negative) trial id; reads, parameters, attributes and state changes of that trial are kept
    in memory (with Optuna's checks: the trial must be RUNNING to change, and a parameter's
    distribution must be compatible with the study's earlier ones); :meth:`take_provisional`
    then hands the complete ``FrozenTrial`` to the caller, which stores it with
    :func:`insert_trial_op`. Nothing provisional is ever visible to another process, and nothing
    is acknowledged to anyone before it is stored, so principle 1 holds: a server killed
    between the ask and the insert has told nobody about the trial.

    Every other call, and every call on another thread or outside ``deferring()``, is
    ``_CachedStorage``'s own.

    Args:
        backend: the RDB storage.
    """

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._provisional: dict[int, tuple[int, FrozenTrial]] = {}
        self._in_flight: dict[int, tuple[int, FrozenTrial]] = {}
        self._next_provisional_id = -1
        self._next_number: dict[int, int] = {}
        self._plock = threading.RLock()  # Optuna's update checks call get_trial back
        self._local = threading.local()

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Trials created on this thread inside the block are provisional."""
        before = getattr(self._local, "deferring", False)
        self._local.deferring = True
        try:
            yield
        finally:
            self._local.deferring = before

    def is_provisional(self, trial_id: int) -> bool:
        return trial_id in self._provisional

    def take_provisional(self, trial_id: int) -> tuple[int, FrozenTrial]:
        """Hands over a provisional trial: returns (study id, the trial as asked so far).

        The trial can no longer change; until :meth:`forget` it stays visible to the asking
        thread's ``get_all_trials`` (the next ask sees it as running, as it would see a
        stored one) and keeps its number reserved.

        Raises:
            KeyError: ``trial_id`` is not a provisional trial.
        """
        with self._plock:
            study_id, trial = self._provisional.pop(trial_id)
            self._in_flight[trial_id] = (study_id, trial)
            self._next_number[study_id] = max(self._next_number.get(study_id, 0), trial.number + 1)
            return study_id, trial

    def discard_provisional(self, trial_id: int) -> None:
        """Drops a provisional trial that will never be stored (its number is not reserved:
        the next trial asked takes it)."""
        with self._plock:
            self._provisional.pop(trial_id, None)

    def forget(self, trial_id: int) -> None:
        """Drops a handed-over provisional trial (stored now, or given up)."""
        with self._plock:
            self._in_flight.pop(trial_id, None)

    def stored(self, study_id: int, number: int) -> None:
        """Tells the storage that a trial numbered ``number`` now exists in the study."""
        with self._plock:
            self._next_number[study_id] = max(self._next_number.get(study_id, 0), number + 1)

    def _count_trials(self, study_id: int) -> int:
        trials = models.TrialModel.__table__
        with self._backend.engine.connect() as conn:
            return int(
                conn.execute(
                    sqlalchemy.select(sqlalchemy.func.count(trials.c.trial_id)).where(
                        trials.c.study_id == study_id
                    )
                ).scalar_one()
            )

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None or not getattr(self._local, "deferring", False):
            trial_id = super().create_new_trial(study_id, template_trial)
            with self._lock:
                _, number = self._trial_id_to_study_id_and_number[trial_id]
            self.stored(study_id, number)
            return trial_id
        if study_id not in self._next_number:
            counted = self._count_trials(study_id)  # once per study and server life
            with self._plock:
                self._next_number.setdefault(study_id, counted)
        with self._plock:
            trial_id = self._next_provisional_id
            self._next_provisional_id -= 1
            number = self._next_number[study_id] + sum(
                1 for sid, _ in self._provisional.values() if sid == study_id
            )
            self._provisional[trial_id] = (
                study_id,
                FrozenTrial(
                    number=number,
                    state=TrialState.RUNNING,
                    value=None,
                    values=None,
                    datetime_start=datetime.datetime.now(),
                    datetime_complete=None,
                    params={},
                    distributions={},
                    user_attrs={},
                    system_attrs={},
                    intermediate_values={},
                    trial_id=trial_id,
                ),
            )
        return trial_id

    def _updatable(self, trial_id: int) -> tuple[int, FrozenTrial]:
        study_id, trial = self._provisional[trial_id]
        self.check_trial_is_updatable(trial_id, trial.state)
        return study_id, trial

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._plock:
            found = self._provisional.get(trial_id)
            if found is not None:
                return copy.deepcopy(found[1])
        return super().get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if isinstance(states, tuple | list) and tuple(states) == (TrialState.WAITING,):
            return self._waiting_trials(study_id)
        trials = super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if not getattr(self._local, "deferring", False):
            return trials  # other threads (ListTrials, the dashboard's view) see stored trials
        with self._plock:
            extra = [
                t
                for sid, t in [*self._provisional.values(), *self._in_flight.values()]
                if sid == study_id and (states is None or t.state in states)
            ]
        if not extra:
            return trials
        extra = copy.deepcopy(extra) if deepcopy else extra
        return sorted([*trials, *extra], key=lambda t: t.number)

    def _waiting_trials(self, study_id: int) -> list[FrozenTrial]:
        """The study's WAITING trials, read alone (oldest first).

        ``Study.ask`` asks for them first, on every ask. Through ``_CachedStorage`` that read
        reloads every unfinished trial of the study from the database, each leased and each
        prepared one with all its parameters and attributes: O(workers) rows per ask, which
        the soak's profile showed taking a third of the server at 200 workers. Provisional
        trials are RUNNING, never WAITING, so none is missing here.
        """
        trials = models.TrialModel.__table__
        with self._backend.engine.connect() as conn:
            ids = conn.execute(
                sqlalchemy.select(trials.c.trial_id)
                .where(trials.c.study_id == study_id, trials.c.state == TrialState.WAITING)
                .order_by(trials.c.number)
            ).scalars()
            waiting = list(ids)
        return [self._backend.get_trial(tid) for tid in waiting]

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._plock:
            for tid, (sid, t) in self._provisional.items():
                if sid == study_id and t.number == trial_number:
                    return tid
        return super().get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def _study_distribution(
        self, study_id: int, name: str
    ) -> optuna.distributions.BaseDistribution | None:
        """The distribution the study already uses for parameter ``name``, if any."""
        with self._lock:
            if study_id in self._studies:
                known = self._studies[study_id].param_distribution.get(name)
                if known is not None:
                    return known
        params, trials = models.TrialParamModel.__table__, models.TrialModel.__table__
        with self._backend.engine.connect() as conn:
            raw = conn.execute(
                sqlalchemy.select(params.c.distribution_json)
                .join(trials, trials.c.trial_id == params.c.trial_id)
                .where(trials.c.study_id == study_id, params.c.param_name == name)
                .limit(1)
            ).scalar()
        return None if raw is None else optuna.distributions.json_to_distribution(raw)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
    ) -> None:
        if trial_id not in self._provisional:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            return
        study_id, _ = self._updatable(trial_id)
        previous = self._study_distribution(study_id, param_name)
        if previous is not None:
            optuna.distributions.check_distribution_compatibility(previous, distribution)
        with self._lock:
            if study_id not in self._studies:
                self._studies[study_id] = optuna.storages._cached_storage._StudyInfo()
            self._studies[study_id].param_distribution.setdefault(param_name, distribution)
        with self._plock:
            _, trial = self._provisional[trial_id]
            if param_name in trial.params:  # Optuna's unique (trial, param) constraint
                raise optuna.exceptions.StorageInternalError(
                    f"parameter {param_name!r} of trial {trial.number} is already set"
                )
            trial.params[param_name] = distribution.to_external_repr(param_value_internal)
            trial.distributions[param_name] = distribution

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id not in self._provisional:
            super().set_trial_user_attr(trial_id, key, value)
            return
        json.dumps(value)  # what Optuna would store must be JSON, as it would fail there
        with self._plock:
            self._updatable(trial_id)[1].user_attrs[key] = value

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id not in self._provisional:
            super().set_trial_system_attr(trial_id, key, value)
            return
        json.dumps(value)
        with self._plock:
            self._updatable(trial_id)[1].system_attrs[key] = value

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        if trial_id not in self._provisional:
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
            return
        with self._plock:
            self._updatable(trial_id)[1].intermediate_values[step] = intermediate_value

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if trial_id not in self._provisional:
            return super().set_trial_state_values(trial_id, state, values)
        with self._plock:
            _, trial = self._updatable(trial_id)
            if state == TrialState.RUNNING:
                return False  # already RUNNING: Optuna answers False for a non-WAITING trial
            if values is not None:
                trial.values = list(values)
            trial.state = state
            if state.is_finished():
                trial.datetime_complete = datetime.datetime.now()
        return True
