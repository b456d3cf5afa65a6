"""The server's storage boundary, with ``_deferred_storage``: the only modules that touch
Optuna's private attributes and tables (``Study._study_id``, ``FrozenTrial._trial_id``,
``RDBStorage``'s stale trial query, its ORM models, ``optuna.artifacts``' attribute prefix;
``_deferred_storage``: ``_CachedStorage``),
so an Optuna upgrade is checked here. This module holds the helpers; the one-transaction
trial operations (lease, heartbeat, report, finish, insert) are ``_trial_writes``; opening the
storage (public API only) is ``_database``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial

#: The trial system attribute prefix of ``optuna.artifacts``' records (``artifacts:<id>``).
ARTIFACT_META_PREFIX: str = ARTIFACTS_ATTR_PREFIX


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


def delete_trial_system_attrs(rdb: RDBStorage, trial_id: int, keys: Sequence[str]) -> None:
    """Removes system attributes of a trial in any state (one transaction): what Optuna's API
    cannot do on a finished trial (an artifact record whose bytes were removed)."""
    attrs = models.TrialSystemAttributeModel.__table__
    with rdb.engine.begin() as conn:
        conn.execute(
            sqlalchemy.delete(attrs).where(attrs.c.trial_id == trial_id, attrs.c.key.in_(keys))
        )


def attrs_with_prefix(
    rdb: RDBStorage, study_id: int, prefixes: Sequence[str]
) -> list[tuple[int, str, str]]:
    """(trial number, key, JSON value) of every trial system attribute of the study whose key
    starts with one of ``prefixes``, by trial number: one query, no trial loaded (a study's
    artifact records, ``artifacts:<id>`` as ``optuna.artifacts`` writes them)."""
    attrs = models.TrialSystemAttributeModel.__table__
    trials = models.TrialModel.__table__
    query = (
        sqlalchemy.select(trials.c.number, attrs.c.key, attrs.c.value_json)
        .join(trials, attrs.c.trial_id == trials.c.trial_id)
        .where(
            trials.c.study_id == study_id,
            sqlalchemy.or_(*(attrs.c.key.startswith(p, autoescape=True) for p in prefixes)),
        )
        .order_by(trials.c.number, attrs.c.key)
    )
    with rdb.engine.connect() as conn:
        return [(int(n), str(k), str(v)) for n, k, v in conn.execute(query)]


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
