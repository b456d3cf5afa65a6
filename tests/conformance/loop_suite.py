"""The conformance suite every search loop runs (like Optuna's ``SamplerTestCase``).

A new loop registers itself in ``archsearch.search.LOOPS`` and adds, in
``tests/conformance/test_loops.py``, a subclass of :class:`LoopConformance` that provides:

* ``make_loop(seed, n_objectives)``: the loop as ``make_loop`` builds it from a spec (small
  options, so the suite runs in seconds);
* ``make_space()``: a design space the loop works on (a library loop needs a graph space);
* ``multi_objective``: whether the loop supports studies with several objectives;
* ``tell(study, asked, values)`` when the loop reads more than a trial's values (a staged loop
  reads the trials the server records when a job completes): what the server stores then.

The loop's own ``avoids_known`` says whether it promises never to suggest a candidate a trial
of the snapshot holds (the library loops do; Optuna's samplers only avoid replays through the
server's seed offset and the server's in-flight check, which is no promise of theirs).

The tests drive the loop the way the server does: a study opened with ``loop.sampler``, the
server's ``ask_candidate`` (snapshot, ``loop.suggest``, the trial created with the
architecture's parameters) under one thread, results told through ``study.tell``, and a
restart modelled as a new loop object on the same storage. Each checks one clause of the
contract in ``archsearch/search/_base.py``.

A plugin (a package of its own) does the same in its own test file and runs it with this
folder importable: ``PYTHONPATH=<archsearch checkout>/tests pytest`` (see the README's
"Your own trainer and search space" and ``examples/mlp_plugin``).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from typing import Any, ClassVar

import optuna
import pytest
from optuna.trial import TrialState

from archsearch.search import JOB_KINDS, LOOPS, LoopSnapshot, NoSuggestion, SearchLoop, Suggestion
from archsearch.server._derived_trials import is_derived_trial
from archsearch.server._suggest import AskedCandidate, ask_candidate, loop_snapshot
from archsearch.spaces import DesignSpace


def _score(arch: dict[str, Any]) -> float:
    """A deterministic objective of an architecture (a hash in [0, 1))."""
    return random.Random(json.dumps(arch, sort_keys=True)).random()


def _key(arch: Any) -> str:
    return json.dumps(dict(arch), sort_keys=True)


def _plain(snapshot: LoopSnapshot) -> str:
    """Everything a loop can see of a snapshot, as JSON (to compare before and after)."""
    return json.dumps(
        [
            snapshot.study_name,
            snapshot.directions,
            [
                [
                    t.number,
                    t.state,
                    dict(t.params),
                    t.values,
                    None if t.architecture is None else dict(t.architecture),
                    dict(t.attrs),
                    dict(t.info),
                    str(t.completed_at),
                    t.kind,
                ]
                for t in snapshot.trials
            ],
        ],
        sort_keys=True,
        default=str,
    )


class LoopConformance:
    """What every :class:`~archsearch.search.SearchLoop` must do. See the module docstring."""

    #: Registry name of the loop under test (a key of ``archsearch.search.LOOPS``).
    loop_name: ClassVar[str] = ""
    #: The loop accepts studies with more than one objective.
    multi_objective: ClassVar[bool] = True
    #: Asks per test (past the initial random design of the model-based loops).
    n_asks: ClassVar[int] = 8

    def make_loop(self, seed: int, n_objectives: int) -> SearchLoop:
        raise NotImplementedError

    def make_space(self) -> DesignSpace:
        raise NotImplementedError

    def tell(self, study: optuna.Study, asked: AskedCandidate, values: list[float]) -> None:
        """Finishes an asked trial with ``values`` as the server would (default: ``tell``)."""
        study.tell(asked.number, values)

    # -- helpers ----------------------------------------------------------------------------

    def _study(self, loop: SearchLoop, n_objectives: int = 1) -> optuna.Study:
        return optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            sampler=loop.sampler,
            directions=["maximize", "minimize"][:n_objectives],  # type: ignore[arg-type]
        )

    def _ask_and_tell(
        self, loop: SearchLoop, space: DesignSpace, study: optuna.Study, n: int, tell: bool = True
    ) -> list[dict[str, Any]]:
        archs = []
        for _ in range(n):
            asked = ask_candidate(loop, study, space)
            assert isinstance(asked.suggestion, Suggestion)
            arch = asked.architecture
            if tell:
                self._tell(study, asked)
            archs.append(arch)
        return archs

    def _tell(self, study: optuna.Study, asked: AskedCandidate) -> None:
        values = [_score(asked.architecture), float(len(json.dumps(asked.architecture)))]
        self.tell(study, asked, values[: len(study.directions)])

    @staticmethod
    def _asked(study: optuna.Study, complete: bool = False) -> list[optuna.trial.FrozenTrial]:
        """The trials the loop was asked for (not those the server derives from a job)."""
        states = (TrialState.COMPLETE,) if complete else None
        return [t for t in study.get_trials(states=states) if not is_derived_trial(t)]

    # -- the contract -----------------------------------------------------------------------

    def test_is_registered(self) -> None:
        loop = self.make_loop(0, 1)
        assert isinstance(loop, SearchLoop)
        assert loop.name == self.loop_name and self.loop_name in LOOPS
        assert isinstance(loop.sampler, optuna.samplers.BaseSampler)

    def test_suggest_returns_count_valid_suggestions(self) -> None:
        space, loop = self.make_space(), self.make_loop(1, 1)
        study = self._study(loop)
        self._ask_and_tell(loop, space, study, 2)
        for count in (1, 3):
            got = loop.suggest(loop_snapshot(study, space), count)
            assert isinstance(got, list) and len(got) == count
            for s in got:
                assert isinstance(s, Suggestion)
                assert space.validate(dict(s.architecture)) == dict(s.architecture)
                assert s.kind in JOB_KINDS
                assert isinstance(s.recipe, dict) and isinstance(s.data, dict)
                json.dumps(dict(s.attrs))  # stored as trial attributes: JSON values only

    def test_asks_return_architectures_the_space_validates(self) -> None:
        space, loop = self.make_space(), self.make_loop(1, 1)
        study = self._study(loop)
        for arch in self._ask_and_tell(loop, space, study, self.n_asks):
            assert space.validate(arch) == arch
        assert len(self._asked(study, complete=True)) == self.n_asks

    def test_parameters_round_trip(self) -> None:
        """A trial's stored parameters are exactly ``space.to_params(arch)`` and rebuild it,
        so the dashboard shows the space's own parameters and a retry re-trains the same."""
        space, loop = self.make_space(), self.make_loop(2, 1)
        study = self._study(loop)
        archs = self._ask_and_tell(loop, space, study, self.n_asks)
        for t, arch in zip(self._asked(study), archs, strict=True):
            assert t.params == space.to_params(arch)
            assert space.from_params(t.params) == arch

    def test_same_seed_same_suggestions(self) -> None:
        """Two loops built with one seed, fed the same results, suggest the same candidates
        (a benchmark's figures and a regression check depend on it)."""
        space = self.make_space()
        runs = []
        for _ in range(2):
            loop = self.make_loop(8, 1)
            runs.append(self._ask_and_tell(loop, space, self._study(loop), self.n_asks))
        assert runs[0] == runs[1]

    def test_suggest_does_not_change_the_snapshot(self) -> None:
        space, loop = self.make_space(), self.make_loop(9, 1)
        study = self._study(loop)
        self._ask_and_tell(loop, space, study, 3)
        self._ask_and_tell(loop, space, study, 1, tell=False)  # one in flight
        snapshot = loop_snapshot(study, space)
        before = _plain(snapshot)
        with contextlib.suppress(NoSuggestion):  # a staged loop may wait for the one in flight
            loop.suggest(snapshot, 2)
        assert _plain(snapshot) == before

    def test_known_candidates_are_avoided_as_declared(self) -> None:
        """``avoids_known``: no suggestion repeats a trial's architecture (observed or in
        flight), nor another suggestion of the same call."""
        loop = self.make_loop(10, 1)
        if not loop.avoids_known:
            pytest.skip(f"{self.loop_name} makes no such promise (the server drops repeats)")
        space = self.make_space()
        study = self._study(loop)
        known = self._ask_and_tell(loop, space, study, self.n_asks // 2)
        known += self._ask_and_tell(loop, space, study, 2, tell=False)
        got = [_key(s.architecture) for s in loop.suggest(loop_snapshot(study, space), 3)]
        assert len(set(got)) == 3
        assert not set(got) & {_key(a) for a in known}

    def test_a_queued_trial_keeps_its_parameters(self) -> None:
        """A re-queued trial (a retry, a user's candidate) is popped as is; the loop is not
        asked."""
        space, loop = self.make_space(), self.make_loop(3, 1)
        study = self._study(loop)
        self._ask_and_tell(loop, space, study, 2)
        wanted = space.sample(random.Random(11))
        study.enqueue_trial(space.to_params(wanted))
        asked = ask_candidate(loop, study, space, waiting=True)
        assert asked.requeued and asked.architecture == wanted
        assert study.trials[asked.number].params == space.to_params(wanted)

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
        assert len(self._asked(study, complete=True)) == self.n_asks
        if again.avoids_known:
            keys = [_key(a) for a in before + after]
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
        (arch,) = self._ask_and_tell(loop, space, self._study(loop), 1)
        assert space.validate(arch) == arch
