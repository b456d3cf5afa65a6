"""``DeferredTrialStorage``: Optuna's cached RDB storage with trials kept in memory until
the server stores them whole (part of the storage boundary that ``_storage`` describes: it
subclasses Optuna's private ``_CachedStorage`` and reads its ORM models).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import sys
import threading
from collections.abc import Container, Iterator, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState


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
        #: per study: one distribution object per parameter, shared by its cached trials
        self._shared_distributions: dict[int, dict[str, optuna.distributions.BaseDistribution]] = {}

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

    def provisional_study(self, trial_id: int) -> int | None:
        """The study id of a provisional trial; None when ``trial_id`` is none."""
        found = self._provisional.get(trial_id)
        return None if found is None else found[0]

    def provisional_of(self, study_id: int) -> set[int]:
        """The ids of ``study_id``'s provisional trials (not handed over)."""
        with self._plock:
            return {tid for tid, (sid, _) in self._provisional.items() if sid == study_id}

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

    def _add_trials_to_cache(self, study_id: int, trials: list[FrozenTrial]) -> None:
        """Caches trials read from the database, sharing what every trial repeats.

        ``_CachedStorage`` keeps every finished trial in memory for the life of the server (a
        sampler reads them all on each ask), and Optuna builds each one with its own copy of
        every parameter's distribution and of every attribute's names and strings (the candidate
        JSON repeats the same keys and values in every trial). Equal distributions are one
        object per study here, and strings are interned: the soak's server grew about 15 KB
        per finished trial of the flexibert-small space before (issue 16).
        """
        shared = self._shared_distributions.setdefault(study_id, {})
        for trial in trials:
            dists = {}
            for name, dist in trial._distributions.items():
                known = shared.setdefault(name, dist)
                dists[sys.intern(name)] = known if known == dist else dist
            trial._distributions = dists
            trial._params = {sys.intern(k): v for k, v in trial._params.items()}
            trial._user_attrs = _interned(trial._user_attrs)
            trial._system_attrs = _interned(trial._system_attrs)
        super()._add_trials_to_cache(study_id, trials)

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


def _interned(value: Any) -> Any:
    """``value`` (decoded JSON) with every string, key or value, interned."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(k): _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    return value
