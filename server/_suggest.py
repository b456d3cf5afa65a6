"""The server's side of a loop's ``suggest``: the snapshot it reads, the Optuna bookkeeping.

Loops (``archsearch.search``) see a study as frozen data and answer with
:class:`~archsearch.search.Suggestion` s; everything Optuna-shaped happens here:

* :func:`loop_snapshot` builds the :class:`~archsearch.search.LoopSnapshot` of a study, whose
  trials are read (once, lazily) from the storage as :class:`~archsearch.search.TrialView` s.
  DyLoRA rank trials (``_rank_trials``) are left out of it, from the trial views and from the
  Optuna study a sampler reads (:class:`SamplerStorage`), unless the space searches
  ``lora_rank`` itself: they are r_max copies of one training's setting, and a sampler fed
  them would weigh each setting r_max times (TPE's densities, the start-up count). The
  study, the dashboard and ``archsearch show`` keep them;
* :func:`ask_candidate` pops a re-queued trial (``Study.ask`` with its fixed parameters), or
  asks the loop for one suggestion and realises it: a trial the Optuna-sampler loop already
  asked is used as is; otherwise the trial is created here, with the parameters of the
  architecture (the space's ``to_params``, with the distributions its ``suggest`` declares, so
  the dashboard shows them like a sampler's) and the loop's attributes as system attributes.

Inside the server's ``DeferredTrialStorage.deferring()`` every trial created here is
provisional until the candidate pool stores it, whole, in one transaction. The same functions
drive loops on any Optuna storage (``benchmarks/nas_table.py``, the loop conformance suite).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import types
from collections.abc import Container, Mapping, Sequence
from typing import Any, cast

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FixedTrial, FrozenTrial

from archsearch.search import LoopSnapshot, SearchLoop, Suggestion, TrialView
from archsearch.server import _storage
from archsearch.server._index import LOOP_ATTRS_ATTR
from archsearch.server._loop_guard import loop_mistake, suggest_one
from archsearch.server._rank_trials import RANK_PARAM, is_rank_trial
from archsearch.spaces import DataSpace, DesignSpace, SpecError, validate_data, validate_recipe


@dataclasses.dataclass(frozen=True)
class AskedCandidate:
    """A trial created (or popped) for a suggestion, with what the pool stores on it.

    Attributes:
        trial_id: The trial's storage id (provisional inside ``deferring()``).
        number: Its number in the study.
        architecture: The architecture, as the space rebuilds it from the trial's parameters.
        suggestion: The loop's suggestion (a popped re-queued trial: the architecture alone).
        requeued: The trial was re-queued (a retry or a user's enqueued candidate), not
            suggested by the loop.
    """

    trial_id: int
    number: int
    architecture: dict[str, Any]
    suggestion: Suggestion
    requeued: bool = False


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(mapping or {}))


def trial_view(t: FrozenTrial) -> TrialView:
    """A loop's read-only view of a stored trial."""
    cand = t.user_attrs.get("candidate")
    arch = cand.get("architecture") if isinstance(cand, dict) else None
    info = t.user_attrs.get("info")
    kind = cand.get("kind", "train") if isinstance(cand, dict) else "train"
    metrics = t.user_attrs.get("metrics") if t.state.name == "COMPLETE" else None
    return TrialView(
        number=t.number,
        state=t.state.name,
        params=_frozen(t.params),
        values=None if t.values is None else tuple(t.values),
        architecture=_frozen(arch) if isinstance(arch, dict) else None,
        attrs=_frozen(t.system_attrs),
        info=_frozen(info if isinstance(info, dict) else None),
        completed_at=t.datetime_complete,
        kind=str(kind),
        metrics=_frozen(metrics if isinstance(metrics, dict) else None),
        cancelled=t.state.name == "FAIL" and bool(t.user_attrs.get("cancelled")),
    )


class SamplerStorage:
    """The storage as a loop's sampler sees it: every call goes to ``storage`` except the trial
    listings, which leave out DyLoRA rank trials (see the module docstring).

    Not a ``BaseStorage`` subclass: its abstract methods would shadow the delegation.
    """

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self._inner = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[optuna.trial.TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [t for t in trials if not is_rank_trial(t)]

    def get_n_trials(
        self,
        study_id: int,
        state: tuple[optuna.trial.TrialState, ...] | optuna.trial.TrialState | None = None,
    ) -> int:
        states = (state,) if isinstance(state, optuna.trial.TrialState) else state
        return len(self.get_all_trials(study_id, deepcopy=False, states=states))


def searches_rank(space: DesignSpace) -> bool:
    """Whether ``space`` has the rank trials' parameter (``lora_rank``) among its own: then each
    rank trial is an observation of a point the space can suggest, and loops see them."""
    return RANK_PARAM in space.to_params(space.sample(random.Random(0)))


def sampler_study(study: optuna.Study, space: DesignSpace) -> optuna.Study:
    """``study`` as a loop's sampler reads it: on a :class:`SamplerStorage` (the same trials
    are created and written; rank trials are not listed), or ``study`` itself when the space
    searches the rank."""
    if searches_rank(space):
        return study
    view = copy.copy(study)  # Study's __getstate__/__setstate__: its own thread-local cache
    view._storage = cast(optuna.storages.BaseStorage, SamplerStorage(_storage.storage_of(study)))
    return view


def loop_snapshot(
    study: optuna.Study,
    space: DesignSpace,
    storage: optuna.storages.BaseStorage | None = None,
    directions: Sequence[str] | None = None,
    data_space: DataSpace | None = None,
) -> LoopSnapshot:
    """The snapshot a loop is asked with; its trials are read on first use, without DyLoRA
    rank trials (unless the space searches the rank: :func:`sampler_study`).

    Args:
        study: The study (opened with the loop's ``sampler``).
        space: The study's design space.
        storage: The storage ``study`` was opened on (default: the study's own).
        directions: The study's directions when the caller knows them (the server: from the
            spec); otherwise read from the storage (one query per call).
        data_space: The data fields the study searches (``SearchSpec.data_choices``).
    """
    storage = _storage.storage_of(study) if storage is None else storage
    if directions is None:
        directions = [d.name.lower() for d in study.directions]
    study_id = _storage.study_id_of(study)
    shown = sampler_study(study, space)
    hide_ranks = shown is not study

    def load() -> tuple[TrialView, ...]:
        return tuple(
            trial_view(t)
            for t in storage.get_all_trials(study_id, deepcopy=False)
            if not (hide_ranks and is_rank_trial(t))
        )

    return LoopSnapshot(
        study_name=study.study_name,
        directions=tuple(directions),
        space=space,
        load_trials=load,
        optuna_study=shown,
        data_space=data_space,
    )


def ask_candidate(
    loop: SearchLoop,
    study: optuna.Study,
    space: DesignSpace,
    storage: optuna.storages.BaseStorage | None = None,
    waiting: bool = False,
    directions: Sequence[str] | None = None,
    data_space: DataSpace | None = None,
) -> AskedCandidate:
    """The next candidate of ``study``: a re-queued trial when ``waiting``, else the loop's.

    Args:
        waiting: The study has WAITING trials (the server tracks its queue): the next one is
            popped with its fixed parameters and the loop is not asked.
        directions, data_space: See :func:`loop_snapshot`.

    Raises:
        NoSuggestion: The loop has nothing to propose now (or ever: ``finished``).
        LoopFailed: The loop raised anything else, or its suggestion cannot be a trial (its
            architecture is not in the space, its recipe or data keys are bad):
            ``_loop_guard``.
    """
    storage = _storage.storage_of(study) if storage is None else storage
    if waiting:
        trial = study.ask()
        arch = space.suggest(trial)
        data = data_space.suggest(trial) if data_space is not None else {}
        tid = _storage.trial_id_of(trial)
        requeued = Suggestion(architecture=arch, data=data)
        return AskedCandidate(tid, trial.number, arch, requeued, True)
    snapshot = loop_snapshot(study, space, storage, directions, data_space)
    suggestion = suggest_one(loop, snapshot)
    try:
        checked = check_suggestion(space, suggestion, data_space)
        if suggestion.asked_trial is not None:
            check_asked_trial(storage, _storage.study_id_of(study), suggestion)
    except Exception as e:  # the space's own error for an architecture it does not hold
        raise loop_mistake(loop, snapshot, e) from e
    return realise(storage, _storage.study_id_of(study), space, suggestion, data_space, checked)


@dataclasses.dataclass(frozen=True)
class CheckedSuggestion:
    """A suggestion :func:`check_suggestion` found sound, with what its trial is written from.

    Attributes:
        fixed: The architecture's parameters and distributions (None for a trial the
            Optuna-sampler loop asked itself).
        architecture: The architecture as the space rebuilds it from its parameters.
        data_params: The data space's parameters: name -> (label, distribution).
    """

    fixed: FixedTrial | None
    architecture: dict[str, Any]
    data_params: dict[str, tuple[str, CategoricalDistribution]]


def check_suggestion(
    space: DesignSpace, suggestion: Suggestion, data_space: DataSpace | None = None
) -> CheckedSuggestion:
    """Checks ``suggestion`` before anything is written: its kind, recipe and data keys, its
    data space values, and that its architecture is one of ``space`` (the space's
    ``to_params``, ``suggest`` and ``describe`` all take it).

    Raises:
        SpecError: The suggestion's kind, recipe or data keys are not valid, or it lacks a
            value of the data space (or holds one the space does not list).
        Exception: whatever the space raises for an architecture it does not hold.
    """
    if not isinstance(suggestion.kind, str) or not suggestion.kind:
        raise SpecError("suggestion.kind", f"must be a non-empty string, got {suggestion.kind!r}")
    if suggestion.recipe:
        validate_recipe(dict(suggestion.recipe))
    if suggestion.data:
        validate_data(dict(suggestion.data))
    data_params: dict[str, tuple[str, CategoricalDistribution]] = {}
    if data_space is not None:
        try:
            labels = data_space.to_params(suggestion.data)
            data_params = {
                data_space.param(f): (labels[data_space.param(f)], CategoricalDistribution(ls))
                for f, ls in data_space.labels.items()
            }
        except KeyError as e:
            raise SpecError(
                "suggestion.data", f"not a choice of the study's data_space: {e}"
            ) from e
    fixed = None
    if suggestion.asked_trial is not None:
        arch = dict(suggestion.architecture)
    else:
        fixed = FixedTrial(space.to_params(dict(suggestion.architecture)))
        arch = space.suggest(fixed)  # type: ignore[arg-type]  # records the distributions
    space.describe(arch)  # the pool names the trial by it
    json.dumps(arch)  # the candidate is JSON (a numpy int passed through to_params is not)
    return CheckedSuggestion(fixed, arch, data_params)


def check_asked_trial(
    storage: optuna.storages.BaseStorage, study_id: int, suggestion: Suggestion
) -> None:
    """A suggestion's ``asked_trial`` (set by the Optuna-sampler loop only) is a trial this
    study's loop just asked: a plugin loop that set another id had a worker train another
    study's trial (refused at its completion) or crashed the acquire on an id that does not
    exist.

    Raises:
        ValueError: what is wrong with it.
    """
    tid = suggestion.asked_trial
    if isinstance(tid, bool) or not isinstance(tid, int):
        raise ValueError(f"asked_trial must be a trial id (an int), got {tid!r}")
    where = getattr(storage, "provisional_study", None)  # the server's deferred storage
    if where is not None:  # what this ask created (in memory, no query)
        if where(tid) != study_id:
            raise ValueError(f"asked_trial {tid} is no trial this study's loop just asked")
        return
    try:
        storage.get_trial(tid)
    except KeyError as e:
        raise ValueError(f"asked_trial {tid} is no trial") from e


def realise(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    space: DesignSpace,
    suggestion: Suggestion,
    data_space: DataSpace | None = None,
    checked: CheckedSuggestion | None = None,
) -> AskedCandidate:
    """The trial of ``suggestion``: the one the loop asked, or a new one with the
    architecture's parameters, the data space's (``data.<field>``, categorical over the
    values' labels) and the loop's attributes.

    Args:
        checked: ``check_suggestion``'s answer, when the caller checked it already.

    Raises:
        SpecError, Exception: as :func:`check_suggestion`, when ``checked`` is None.
    """
    if checked is None:
        checked = check_suggestion(space, suggestion, data_space)
    if suggestion.asked_trial is not None:
        tid = suggestion.asked_trial
        number = storage.get_trial(tid).number
        return AskedCandidate(tid, number, checked.architecture, suggestion)
    fixed = checked.fixed
    assert fixed is not None
    tid = storage.create_new_trial(study_id)
    for name, value in fixed.params.items():
        dist = fixed.distributions[name]
        storage.set_trial_param(tid, name, dist.to_internal_repr(value), dist)
    for name, (label, choices) in checked.data_params.items():
        storage.set_trial_param(tid, name, choices.to_internal_repr(label), choices)
    for key, value in suggestion.attrs.items():
        storage.set_trial_system_attr(tid, key, value)
    if suggestion.attrs:  # a retry copies them (``Retries.requeue``)
        storage.set_trial_system_attr(tid, LOOP_ATTRS_ATTR, sorted(suggestion.attrs))
    return AskedCandidate(tid, storage.get_trial(tid).number, checked.architecture, suggestion)
