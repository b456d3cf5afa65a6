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
``rank b of #N`` (``_trial_notes.rank_trials_of``).

The same mechanism serves every job whose completion adds trials or attributes to the study
(:class:`CompletedJob` -> :class:`JobExtras`, rules listed in ``server/_derived_trials.py``):
DyLoRA's ranks here, AutoDistil's students in ``server/_student_trials.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from archsearch.server import _trial_writes
from archsearch.server._dashboard_attrs import completion_attrs
from archsearch.server._errors import InvalidArgument
from archsearch.server._objectives import objective_values
from archsearch.server._spec import SearchSpec
from archsearch.spaces import Candidate, DesignSpace, SpecError
from archsearch.spaces._lora_spec import eval_ranks_of

#: The parameter a rank trial adds to its training trial's parameters.
RANK_PARAM = "lora_rank"
#: User attribute of a rank trial: the number of the trial that trained it.
RANK_OF_ATTR = "rank_of"

_RANK_LABEL = re.compile(r"r[1-9][0-9]*")


@dataclasses.dataclass(frozen=True)
class CompletedJob:
    """A job a worker just completed, as the completion rules read it.

    Attributes:
        spec: Its study's spec.
        space: Its study's design space.
        number: The job's trial number.
        load_trial: Reads the job's trial as stored (still RUNNING), on first use of
            :attr:`trial` (most completions need no rule, and no read).
        candidate: What the worker was given.
        metrics: What the worker reported.
        load_trials: Reads every trial of the study (for a rule that links to another).
    """

    spec: SearchSpec
    space: DesignSpace
    number: int
    load_trial: Callable[[], FrozenTrial]
    candidate: Candidate
    metrics: Mapping[str, float]
    load_trials: Callable[[], Sequence[FrozenTrial]] = tuple

    @functools.cached_property
    def trial(self) -> FrozenTrial:
        """The job's trial (read once)."""
        return self.load_trial()


@dataclasses.dataclass(frozen=True)
class JobExtras:
    """What a completed job adds: COMPLETE trials stored with its completion (each marked
    by its rule's user attribute), and user attributes stored on the job's own trial."""

    trials: list[FrozenTrial] = dataclasses.field(default_factory=list)
    user_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)


def metrics_by_label(
    metrics: Mapping[str, float], label: re.Pattern[str]
) -> dict[str, dict[str, float]]:
    """Each label's metrics, by label: every ``<name>@<label>`` whose label ``label`` matches
    whole taken as ``<name>``, over the unlabelled metrics, with every ``train_seconds`` 0 (a
    configuration scored from shared weights costs no worker time of its own); empty when no
    metric carries such a label."""
    shared: dict[str, float] = {}
    labelled: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        base, at, tag = name.partition("@")
        if at and label.fullmatch(tag):
            labelled.setdefault(tag, {})[base] = float(value)
        elif not at:
            shared[name] = float(value)
    no_time = {name: 0.0 for name in shared if name.rsplit(".", 1)[-1] == "train_seconds"}
    return {tag: {**shared, **values, **no_time} for tag, values in labelled.items()}


def metrics_by_rank(metrics: Mapping[str, float]) -> dict[int, dict[str, float]]:
    """Each rank's metrics (see the module docstring), by rank; empty for a trial that
    reported no ``<metric>@r<b>``."""
    per_tag = metrics_by_label(metrics, _RANK_LABEL)
    return {int(tag[1:]): m for tag, m in sorted(per_tag.items(), key=lambda kv: int(kv[0][1:]))}


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


def scored_ranks(candidate: Candidate) -> tuple[int, ...]:
    """The ranks a LoRA candidate is scored at (``recipe.lora``'s ``eval_ranks``, read as at
    launch: ``eval_ranks_of``); none for a candidate without ``recipe.lora`` (or a malformed
    one of an old study)."""
    lora = candidate.recipe.get("lora")
    if not isinstance(lora, Mapping):
        return ()
    r_max = lora.get("r_max", 8)
    if not isinstance(r_max, int) or isinstance(r_max, bool) or r_max < 1:
        return ()
    try:
        return eval_ranks_of(lora.get("eval_ranks"), lora.get("mode", "dylora"), r_max)
    except SpecError:
        return ()


def check_ranks(candidate: Candidate, metrics: Mapping[str, float]) -> None:
    """Refuses metrics at ranks the candidate was not scored at: rank trials become trials of
    the study (its best among them), so a report must not add ranks of a candidate that has
    none, or beyond its ``eval_ranks``.

    Raises:
        InvalidArgument: a ``<metric>@r<b>`` at a rank b outside :func:`scored_ranks`.
    """
    reported = set(metrics_by_rank(metrics))
    if candidate.kind != "train" or not reported:
        return
    allowed = scored_ranks(candidate)
    if extra := sorted(reported - set(allowed)):
        scored = f"at ranks {list(allowed)} only" if allowed else "at no rank: it has no LoRA"
        raise InvalidArgument(
            f"metrics at ranks {extra} (@r<b>): this trial's candidate is scored {scored} "
            "(recipe.lora.eval_ranks)"
        )


def dylora_extras(job: CompletedJob) -> JobExtras:
    """The completion rule of DyLoRA trials: their :func:`rank_trials`."""
    if job.candidate.kind != "train" or not metrics_by_rank(job.metrics):
        return JobExtras()
    return JobExtras(trials=rank_trials(job.spec, job.trial, job.metrics))


def finish_with_ranks_op(
    finish: Callable[[sqlalchemy.Connection], None],
    study_id: int,
    ranks: Sequence[FrozenTrial],
) -> Callable[[sqlalchemy.Connection], list[_trial_writes.StoredTrial]]:
    """Operation: a job's ``finish`` write and the insert of the trials it adds (DyLoRA's
    ranks, AutoDistil's students), in one transaction: a job is never COMPLETE without them,
    so a restart never has any to re-record, and a repeated completion report (answered from
    the stored trial) never records them twice."""
    inserts = [_trial_writes.insert_trial_op(study_id, t) for t in ranks]

    def op(conn: sqlalchemy.Connection) -> list[_trial_writes.StoredTrial]:
        finish(conn)
        return [insert(conn) for insert in inserts]

    return op
