"""The conformance suite every search loop runs (like Optuna's ``SamplerTestCase``).

A new loop registers itself in ``archsearch.search.LOOPS`` and adds, in
``tests/conformance/test_loops.py``, a subclass of :class:`LoopConformance` that provides:

* ``make_loop(seed, n_objectives)``: the loop as ``make_loop`` builds it from a spec (small
  options, so the suite runs in seconds);
* ``make_space()``: a design space the loop works on (a library loop needs a graph space);
* ``distinct_after_restart``: True when the loop promises never to propose a candidate the
  storage already holds, also after a restart (the library loops do; Optuna's samplers only
  avoid replays through the server's seed offset, which is no promise);
* ``multi_objective``: whether the loop supports studies with several objectives.

The tests drive the loop the way the server does: a study opened with ``loop.sampler``,
``loop.ask(study, space, waiting=...)`` under one thread, results told through ``study.tell``,
and a restart modelled as a new loop object on the same storage. Each checks one clause of the
contract in ``archsearch/search/_base.py``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any, ClassVar

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from archsearch.search import LOOPS, SearchLoop
from archsearch.spaces import DesignSpace


def _score(arch: dict[str, Any]) -> float:
    """A deterministic objective of an architecture (a hash in [0, 1))."""
    return random.Random(json.dumps(arch, sort_keys=True)).random()


class LoopConformance:
    """What every :class:`~archsearch.search.SearchLoop` must do. See the module docstring."""

    #: Registry name of the loop under test (a key of ``archsearch.search.LOOPS``).
    loop_name: ClassVar[str] = ""
    #: The loop never proposes a candidate the storage holds, across restarts.
    distinct_after_restart: ClassVar[bool] = False
    #: The loop accepts studies with more than one objective.
    multi_objective: ClassVar[bool] = True
    #: Asks per test (past the initial random design of the model-based loops).
    n_asks: ClassVar[int] = 8

    def make_loop(self, seed: int, n_objectives: int) -> SearchLoop:
        raise NotImplementedError

    def make_space(self) -> DesignSpace:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------

    def _study(self, loop: SearchLoop, n_objectives: int = 1) -> optuna.Study:
        return optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            sampler=loop.sampler,
            directions=["maximize", "minimize"][:n_objectives],  # type: ignore[arg-type]
        )

    def _ask_and_tell(
        self, loop: SearchLoop, space: DesignSpace, study: optuna.Study, n: int
    ) -> list[dict[str, Any]]:
        archs = []
        for _ in range(n):
            trial, arch = loop.ask(study, space, waiting=False)
            assert isinstance(loop.recipe_overrides(trial._trial_id), dict)
            values = [_score(arch), float(len(json.dumps(arch)))]
            study.tell(trial, values[: len(study.directions)])
            archs.append(arch)
        return archs

    # -- the contract -----------------------------------------------------------------------

    def test_is_registered(self) -> None:
        loop = self.make_loop(0, 1)
        assert isinstance(loop, SearchLoop)
        assert loop.name == self.loop_name and self.loop_name in LOOPS
        assert isinstance(loop.sampler, optuna.samplers.BaseSampler)

    def test_asks_return_architectures_the_space_validates(self) -> None:
        space, loop = self.make_space(), self.make_loop(1, 1)
        study = self._study(loop)
        for arch in self._ask_and_tell(loop, space, study, self.n_asks):
            assert space.validate(arch) == arch
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == self.n_asks

    def test_parameters_round_trip(self) -> None:
        """A trial's stored parameters are exactly ``space.to_params(arch)`` and rebuild it,
        so the dashboard shows the space's own parameters and a retry re-trains the same."""
        space, loop = self.make_space(), self.make_loop(2, 1)
        study = self._study(loop)
        archs = self._ask_and_tell(loop, space, study, self.n_asks)
        for t, arch in zip(study.get_trials(), archs, strict=True):
            assert t.params == space.to_params(arch)
            assert space.suggest(FixedTrial(dict(t.params))) == arch  # type: ignore[arg-type]

    def test_a_queued_trial_keeps_its_parameters(self) -> None:
        """``ask(waiting=True)`` pops an enqueued trial (a retry, a user's candidate) as is."""
        space, loop = self.make_space(), self.make_loop(3, 1)
        study = self._study(loop)
        self._ask_and_tell(loop, space, study, 2)
        wanted = space.sample(random.Random(11))
        study.enqueue_trial(space.to_params(wanted))
        trial, arch = loop.ask(study, space, waiting=True)
        assert arch == wanted and trial.params == space.to_params(wanted)

    def test_a_restarted_loop_keeps_going(self) -> None:
        """A new loop object built from the spec continues the study from the storage."""
        space = self.make_space()
        first = self.make_loop(4, 1)
        study = self._study(first)
        before = self._ask_and_tell(first, space, study, self.n_asks // 2)
        again = self.make_loop(4, 1)  # a new server process: same spec, same storage
        study = optuna.load_study(
            study_name=study.study_name, storage=study._storage, sampler=again.sampler
        )
        after = self._ask_and_tell(again, space, study, self.n_asks // 2)
        assert all(space.validate(a) == a for a in after)
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == self.n_asks
        if self.distinct_after_restart:
            keys = [json.dumps(a, sort_keys=True) for a in before + after]
            assert len(set(keys)) == len(keys), "a stored candidate was proposed again"

    def test_multi_objective_support_is_as_declared(self) -> None:
        if not self.multi_objective:
            pytest.skip(f"{self.loop_name} declares single-objective only")
        space, loop = self.make_space(), self.make_loop(5, 2)
        study = self._study(loop, n_objectives=2)
        archs = self._ask_and_tell(loop, space, study, self.n_asks)
        assert all(space.validate(a) == a for a in archs)
        assert all(len(t.values) == 2 for t in study.get_trials())

    def test_warm_up_signals_ready(self) -> None:
        space, loop = self.make_space(), self.make_loop(6, 1)
        done = threading.Event()
        loop.warm_up(space, on_ready=done.set)
        assert done.wait(120), "warm_up never called on_ready"
        deadline = time.monotonic() + 30
        while not loop.ready(space):  # on_ready may run just before the builder ends
            assert time.monotonic() < deadline, "ready() stayed False after on_ready"
            time.sleep(0.01)
        _, arch = loop.ask(self._study(loop), space, waiting=False)
        assert space.validate(arch) == arch

    def test_recipe_overrides_is_a_dict_for_unknown_trials(self) -> None:
        assert self.make_loop(7, 1).recipe_overrides(123456) == {}
