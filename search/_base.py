"""The search-loop interface the server drives.

A loop owns how the next candidate is chosen. The server calls ``ask(study, space)`` when a
worker needs work and the study has budget left; the loop returns a RUNNING ``optuna.Trial``
whose parameters are set (through the space's ``suggest``) and the architecture it stands for.
Results reach the loop through the Optuna storage (``study.tell`` is called by the server), so
loops that model the history read it from ``study.get_trials`` and keep no state the database
lacks: a restarted server rebuilds every loop from the study's spec and storage.

Contract for subclasses:
    * ``ask`` is called under a per-study lock; it may call ``study.ask`` once (and may
      ``study.enqueue_trial`` before it, to impose parameters chosen by its own model).
    * ``sampler`` is the Optuna sampler the study is opened with (loops that choose candidates
      themselves return a sampler that only replays enqueued parameters).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import optuna

from archsearch.spaces import DesignSpace


class SearchLoop(abc.ABC):
    """Chooses candidates for one study (the contract is in the module docstring).

    Implementations today (``archsearch.search.LOOPS``):
        * :class:`~archsearch.search.OptunaSamplerLoop`: ``random``, ``tpe``, ``nsga2`` and
          ``gp``, each one of Optuna's samplers;
        * :class:`~archsearch.search.BoshnasLoop`: ``boshnas``, BOSHNAS over a library of
          embedded candidates;
        * :class:`~archsearch.search.EmbeddingGPLoop`: ``embedding-gp``, a BoTorch GP over the
          same library.

    A new loop registers its name in ``LOOPS`` (through ``make_loop``) and runs the
    conformance suite ``tests/conformance/loop_suite.py`` (``LoopConformance``) with a
    subclass in ``tests/conformance/test_loops.py``.
    """

    #: Registry name used in search specs.
    name: str = ""

    @property
    @abc.abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The sampler the study object is opened with."""

    def ask(
        self, study: optuna.Study, space: DesignSpace, waiting: bool = True
    ) -> tuple[optuna.Trial, dict[str, Any]]:
        """Creates (or pops a queued) trial and returns it with its architecture.

        Args:
            waiting: False when the caller knows the study has no WAITING trial; the trial is
                then created directly, skipping ``Study.ask``'s scan of every unfinished trial
                for queued ones (the server tracks its queue itself).
        """
        if waiting:
            trial = study.ask()
        else:
            study._thread_local.cached_all_trials = None  # as Study.ask does
            trial = optuna.Trial(study, study._storage.create_new_trial(study._study_id))
        return trial, space.suggest(trial)

    def warm_up(self, space: DesignSpace, on_ready: Callable[[], None] | None = None) -> None:
        """Starts building, in the background, what ``ask`` needs (a library's embeddings);
        ``on_ready`` is called once it is built. The server calls it at launch and at
        start-up, and answers "no work yet" while :meth:`ready` is False instead of blocking
        a worker's call. Default: nothing to build."""
        if on_ready is not None:
            on_ready()

    def ready(self, space: DesignSpace) -> bool:
        """Whether ``ask`` can propose a new candidate without building first."""
        return True

    def recipe_overrides(self, trial_id: int) -> dict[str, Any]:
        """Recipe keys this loop sets for the candidate of a trial it just asked (for example
        a weight-transfer source); the server merges them over the spec's recipe. Default:
        none."""
        return {}
