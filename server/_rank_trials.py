"""DyLoRA rank trials: each rank a LoRA trial scored becomes its own COMPLETE trial.

A trial of the ``lora`` trainer trains once and reports its metrics at every rank b it scored
as ``<metric>@r<b>`` (``accuracy@r3``, ``sst2.accuracy@r3``, ``trainable_params@r3``). When
such a trial completes, :func:`record_rank_trials` adds one COMPLETE trial per rank to the
study, so the dashboard plots score against rank, and the Pareto front of score against
trainable parameters, with no extra work:

* parameters: the training trial's, plus :data:`RANK_PARAM` (an int in 1..largest rank);
* metrics (user attribute ``metrics`` and its ``metric.<name>`` rows): the training trial's
  metrics with every ranked one taken at that rank (``accuracy`` is ``accuracy@r<b>``,
  ``trainable_params`` is ``trainable_params@r<b>``), no ``<name>@r<k>`` entries, and every
  ``train_seconds`` 0: a rank costs no worker time;
* values: the study's objectives computed from those metrics; a rank whose metrics lack an
  objective is not recorded;
* user attribute :data:`RANK_OF_ATTR`: the training trial's number (and ``lora_rank``).

Rank trials hold no ``candidate`` attribute: nothing re-leases, re-trains or de-duplicates them,
and they do not count against ``n_trials`` (:func:`is_rank_trial`; the start-up rebuild in
``_registry`` skips them). ``TrialOutcomes.complete`` stores them with the training trial's
completion, in one transaction (:func:`finish_with_ranks_op`): a restart finds a completed
DyLoRA trial with all its ranks or an unfinished one with none, and a repeated completion report
is answered from the stored trial without recording anything. ``archsearch show`` notes each as
``rank b of #N`` (``_format.rank_trials_of``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from archsearch.server import _storage
from archsearch.server._dashboard_attrs import completion_attrs
from archsearch.server._errors import InvalidArgument
from archsearch.server._objectives import objective_values
from archsearch.server._spec import SearchSpec

#: The parameter a rank trial adds to its training trial's parameters.
RANK_PARAM = "lora_rank"
#: User attribute of a rank trial: the number of the trial that trained it.
RANK_OF_ATTR = "rank_of"

_RANKED = re.compile(r"^(?P<name>.+)@r(?P<rank>[1-9][0-9]*)$")


def metrics_by_rank(metrics: Mapping[str, float]) -> dict[int, dict[str, float]]:
    """Each rank's metrics (see the module docstring), by rank; empty for a trial that
    reported no ``<metric>@r<b>``."""
    shared: dict[str, float] = {}
    ranked: dict[int, dict[str, float]] = {}
    for name, value in metrics.items():
        found = _RANKED.match(name)
        if found is None:
            shared[name] = float(value)
        else:
            ranked.setdefault(int(found["rank"]), {})[found["name"]] = float(value)
    no_time = {name: 0.0 for name in shared if name.rsplit(".", 1)[-1] == "train_seconds"}
    return {b: {**shared, **values, **no_time} for b, values in sorted(ranked.items())}


def is_rank_trial(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was added by :func:`record_rank_trials` (not a trained candidate)."""
    return RANK_OF_ATTR in trial.user_attrs


def rank_trials(
    spec: SearchSpec, training: FrozenTrial, metrics: Mapping[str, float]
) -> list[FrozenTrial]:
    """The rank trials of the completed ``training`` trial, which reported ``metrics``
    (see the module docstring); none for a trial that is not a DyLoRA trial."""
    per_rank = metrics_by_rank(metrics)
    if not per_rank:
        return []
    distributions: dict[str, Any] = {
        **training.distributions,
        RANK_PARAM: IntDistribution(1, max(per_rank)),
    }
    trials = []
    for rank, rank_metrics in per_rank.items():
        try:
            values = objective_values(spec, rank_metrics)
        except InvalidArgument:
            continue  # this rank lacks an objective's metric: there is nothing to rank it by
        user = {
            **completion_attrs(rank_metrics, {}),
            RANK_OF_ATTR: training.number,
            RANK_PARAM: rank,
        }
        trials.append(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                params={**training.params, RANK_PARAM: rank},
                distributions=distributions,
                values=values,
                user_attrs=user,
            )
        )
    return trials


def record_rank_trials(
    study: optuna.Study, spec: SearchSpec, training: FrozenTrial, metrics: Mapping[str, float]
) -> list[int]:
    """Adds :func:`rank_trials` to ``study`` through Optuna's own API (the server stores them
    with the training trial's completion instead: :func:`finish_with_ranks_op`).

    Returns:
        The ranks recorded, in order (none for a trial that is not a DyLoRA trial).
    """
    trials = rank_trials(spec, training, metrics)
    for t in trials:
        study.add_trial(t)
    return [t.params[RANK_PARAM] for t in trials]


def finish_with_ranks_op(
    finish: Callable[[sqlalchemy.Connection], None],
    study_id: int,
    ranks: Sequence[FrozenTrial],
) -> Callable[[sqlalchemy.Connection], list[_storage.StoredTrial]]:
    """Operation: a training trial's ``finish`` write and the insert of its rank trials, in one
    transaction: a trial is never COMPLETE without its rank trials, so a restart never has
    ranks to re-record, and a repeated completion report (answered from the stored trial)
    never records them twice."""
    inserts = [_storage.insert_trial_op(study_id, t) for t in ranks]

    def op(conn: sqlalchemy.Connection) -> list[_storage.StoredTrial]:
        finish(conn)
        return [insert(conn) for insert in inserts]

    return op
