"""The search-loop interface the server drives, modelled on OSS Vizier's ``Designer``.

A loop owns how the next candidates are chosen, and nothing else. When workers need work and
the study has budget left, the server builds a :class:`LoopSnapshot` (a frozen view of the
study: its directions, its space and its trials as :class:`TrialView` data) and calls
``suggest(snapshot, count)``; the loop returns :class:`Suggestion` s: an architecture, the recipe
and data keys it sets for that candidate, the kind of job, and attributes it wants to read back
later. The server does all of Optuna's bookkeeping for each suggestion: it creates the trial,
sets its parameters from the architecture (the space's ``to_params``, so the dashboard shows
them), stores the loop's attributes, merges recipe and data over the spec's and hands the
candidate to a worker. Results come back to the loop as the next snapshot's trials, so a loop
keeps no state the database lacks: a restarted server rebuilds every loop from the study's
spec and storage.

Contract for subclasses:
    * ``suggest`` is called under a per-study lock (one call at a time per study) and returns
      exactly ``count`` suggestions whose architectures the snapshot's space validates, or
      raises :class:`NoSuggestion` when it has fewer to give: a staged loop (``autodistil``)
      waiting for trials in flight, or one that has finished. It must not change the snapshot.
    * Re-queued trials (retries, a user's enqueued candidates) never reach the loop: the
      server pops them itself, with their fixed parameters.
    * A loop that sets ``avoids_known`` never suggests an architecture that a trial of the
      snapshot holds (observed, in flight or failed), nor one twice in a call.
    * ``sampler`` is the Optuna sampler the study is opened with. Only the Optuna-sampler
      loop samples with it; for the others it only replays the fixed parameters of
      re-queued trials.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import optuna

from archsearch.spaces import DataSpace, DesignSpace, Registry

#: Kinds of job a suggestion may ask for: ``train`` (a worker trains and evaluates the
#: candidate), ``supernet`` (trains a weight-sharing supernet) and ``rank`` (scores every
#: student of a trained supernet); trainers refuse the kinds they do not do.
JOB_KINDS = ("train", "supernet", "rank")


class NoSuggestion(Exception):
    """``suggest`` has nothing to propose now (the server answers "no work yet").

    Args:
        reason: Why, for the log and, when ``finished``, the study's completed reason.
        finished: The loop will never propose anything again: the study completes once
            nothing is in flight. False: it waits for trials in flight.
    """

    def __init__(self, reason: str, finished: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.finished = finished


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """One candidate a loop proposes.

    Attributes:
        architecture: The architecture (the space validates it; the server stores its
            parameters).
        recipe: Recipe keys this loop sets for the candidate, merged over the spec's recipe
            (for example a weight-transfer source).
        data: Data keys merged over the spec's data choices.
        kind: The job a worker does with it (see ``JOB_KINDS``).
        attrs: Attributes the loop reads back from the trial (``TrialView.attrs``), stored as
            the trial's system attributes (JSON values).
        asked_trial: Set only by the Optuna-sampler loop: the storage id of the trial Optuna's
            ``ask`` already created (Optuna's samplers write their own per-trial state into it).
            None: the server creates the trial.
    """

    architecture: Mapping[str, Any]
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "train"
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    asked_trial: int | None = None


@dataclasses.dataclass(frozen=True)
class TrialView:
    """One trial of the study as frozen data (read-only mappings).

    Attributes:
        number: The trial's number in the study.
        state: Optuna's state name: ``COMPLETE``, ``RUNNING``, ``WAITING``, ``PRUNED`` or
            ``FAIL``.
        params: Its Optuna parameters (the space's ``to_params`` of its architecture).
        values: Objective values of a COMPLETE trial, else None.
        architecture: The architecture of its stored candidate; None before the candidate is
            stored (``space.from_params(params)`` then rebuilds it).
        attrs: Its system attributes (a loop's ``Suggestion.attrs`` among them).
        info: What its worker reported (``checkpoint``, ``checkpoint_artifacts``, ...).
        completed_at: When it finished, or None.
        kind: The job kind it was suggested as.
        metrics: The raw metrics of a COMPLETE trial (its worker's report, or what the server
            recorded for a trial it derived from another's report), else empty.
        cancelled: A FAIL trial that ``stop --cancel-running`` ended: the user's stop, not
            the candidate's failure (a staged loop asks its job again when resumed).
    """

    number: int
    state: str
    params: Mapping[str, Any]
    values: tuple[float, ...] | None
    architecture: Mapping[str, Any] | None
    attrs: Mapping[str, Any]
    info: Mapping[str, Any]
    completed_at: datetime.datetime | None = None
    kind: str = "train"
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    cancelled: bool = False

    @property
    def active(self) -> bool:
        """In flight: running, or waiting to be re-run."""
        return self.state in ("RUNNING", "WAITING")


@dataclasses.dataclass(frozen=True)
class LoopSnapshot:
    """What a loop sees of a study when it is asked for suggestions.

    Attributes:
        study_name: The study.
        directions: ``"maximize"`` or ``"minimize"`` per objective.
        space: The study's design space.
        load_trials: Reads the trials (called once, on the first use of :attr:`trials`; a
            loop that does not read the history costs nothing).
        optuna_study: The server's Optuna study, for the Optuna-sampler loop alone (Optuna's
            samplers read the history from the study and write into the trial they are asked
            for); every other loop reads :attr:`trials`.
        data_space: The data fields the study searches with the architecture (None: none);
            a loop that ``chooses_data`` sets one value per field in each suggestion's
            ``data``, and the server records them as the trial's ``data.<field>`` parameters.
    """

    study_name: str
    directions: tuple[str, ...]
    space: DesignSpace
    load_trials: Callable[[], Sequence[TrialView]] = dataclasses.field(
        default=tuple, repr=False, compare=False
    )
    optuna_study: Any = dataclasses.field(default=None, repr=False, compare=False)
    data_space: DataSpace | None = None

    @functools.cached_property
    def trials(self) -> tuple[TrialView, ...]:
        """Every trial of the study, in storage order."""
        return tuple(self.load_trials())

    @property
    def completed(self) -> tuple[TrialView, ...]:
        """COMPLETE trials (Vizier's ``CompletedTrials``)."""
        return tuple(t for t in self.trials if t.state == "COMPLETE")

    @property
    def active(self) -> tuple[TrialView, ...]:
        """Trials in flight (Vizier's ``ActiveTrials``)."""
        return tuple(t for t in self.trials if t.active)


class SearchLoop(abc.ABC):
    """Chooses candidates for one study (the contract is in the module docstring).

    Implementations today (``archsearch.search.LOOPS``):
        * :class:`~archsearch.search.OptunaSamplerLoop`: ``random``, ``tpe``, ``nsga2`` and
          ``gp``, each one of Optuna's samplers;
        * :class:`~archsearch.search.BoshnasLoop`: ``boshnas``, BOSHNAS over a library of
          embedded candidates;
        * :class:`~archsearch.search.EmbeddingGPLoop`: ``embedding-gp``, a BoTorch GP over the
          same library, and ``numeric-gp`` (:class:`~archsearch.search.NumericGPLoop`), that GP
          on the rows' parameters with numbers kept as numbers;
        * :class:`~archsearch.search.RegularisedEvolutionLoop`: ``evolution``, aging evolution
          (Real et al.);
        * :class:`~archsearch.search.LocalSearchLoop`: ``local-search``, local search with
          restarts (White et al.);
        * :class:`~archsearch.search.AutoDistilLoop`: ``autodistil``, AutoDistil's stages
          (sub-space supernets, every student ranked, the budgeted top students trained).

    A new loop is one module: a subclass registered with ``@LOOPS.register("name")`` (the
    registry of ``spaces/_registry.py``; the factory is called as ``cls(seed, n_objectives,
    options)`` and raises ``SpecError`` for bad options), imported by
    ``archsearch/search/__init__.py``. It runs the conformance suite
    ``tests/conformance/loop_suite.py`` (``LoopConformance``) with a subclass in
    ``tests/conformance/test_loops.py``.
    """

    #: Registry name used in search specs.
    name: str = ""
    #: The loop never suggests an architecture a trial of the snapshot holds.
    avoids_known: ClassVar[bool] = False
    #: The loop embeds architecture graphs: it needs a ``GraphSpace``.
    needs_graph_space: ClassVar[bool] = False
    #: The loop mutates architectures: it needs a ``MutableSpace``.
    needs_mutable_space: ClassVar[bool] = False
    #: The loop chooses the data fields of a study's ``data_space`` (``LoopSnapshot.data_space``)
    #: and sets them in each ``Suggestion.data``; a study with a data space needs such a loop.
    chooses_data: ClassVar[bool] = False
    #: The loop's jobs are fixed by its options, and a study's ``n_trials`` is their count
    #: (``check_study`` refuses another): once they are done, more trials change nothing, so
    #: ``resume`` refuses its completed study whatever ``--n-trials`` says.
    plans_its_budget: ClassVar[bool] = False
    #: Why a pruner cannot serve this loop's studies ("" when it can): launch refuses one.
    refuses_pruner: ClassVar[str] = ""

    @property
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The sampler the study object is opened with (default: one that only replays the
        fixed parameters of re-queued trials)."""
        sampler = self.__dict__.get("_replay_sampler")
        if sampler is None:
            sampler = self.__dict__["_replay_sampler"] = optuna.samplers.RandomSampler(seed=0)
        return sampler

    @abc.abstractmethod
    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        """Proposes ``count`` candidates for the study of ``snapshot``.

        Returns:
            Exactly ``count`` suggestions.

        Raises:
            NoSuggestion: Nothing to propose now (it waits for trials in flight), or, with
                ``finished=True``, never again (for example, a library whose every row is
                observed): the study completes with its reason once nothing is in flight.

        Anything else it raises, or an answer that is not a list of ``count`` ``Suggestion``
        s whose architectures the space holds, stops the study on the server with the error
        as its reason (``show`` says it; the traceback is in the server log); the workers go
        on with other studies, and ``archsearch resume`` runs it again once the loop is fixed.
        """

    def warm_up(self, space: DesignSpace, on_ready: Callable[[], None] | None = None) -> None:
        """Starts building, in the background, what ``suggest`` needs (a library's
        embeddings); ``on_ready`` is called once it is built. The server calls it at launch
        and at start-up, and answers "no work yet" while :meth:`ready` is False instead of
        blocking a worker's call. Default: nothing to build."""
        if on_ready is not None:
            on_ready()

    def ready(self, space: DesignSpace) -> bool:
        """Whether ``suggest`` can propose without building first."""
        return True

    def check_study(self, space: DesignSpace, n_trials: int) -> None:
        """Raises SpecError when this loop cannot search ``space`` within ``n_trials`` (called
        at launch, after the options are validated). Default: any space, any budget."""
        return None

    def check_metrics(self, produced: Sequence[str]) -> None:
        """Raises SpecError when an option names a metric no trial reports (``produced``: the
        trainer's metric names for this study; called at launch). Default: no such option."""
        return None


#: ``factory(seed, n_objectives, options) -> SearchLoop``.
LoopFactory = Callable[[int | None, int, "dict[str, Any] | None"], SearchLoop]

#: Every search loop by name, registered where each is defined (``@LOOPS.register``).
LOOPS: Registry[LoopFactory] = Registry("loop", plugins="archsearch.loops")
