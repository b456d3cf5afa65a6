"""The conformance suite every trainer runs.

A new trainer adds, in ``tests/conformance/test_trainers.py``, a subclass of
:class:`TrainerConformance` that provides:

* ``make_trainer()``: the trainer as a worker builds it (built once per class);
* ``candidate()``: a small candidate it trains in a second or two (tiny model, few steps);
* ``bad_candidates()``: candidates it must refuse with ``CandidateError`` (an architecture it
  cannot build, a task it does not know);
* ``objective_metrics`` and ``intermediate_metric``: what a study on it asks for;
* ``reports_intermediate``: whether it reports intermediate values (a pruner can stop it).

Each test checks one clause of the contract in ``archsearch/worker/_trainer.py``: ``train``
returns every objective metric as a finite float and ``info`` as strings, the same ones for
the same candidate and seed; a stop request
(``should_stop``) and a prune decision end it with ``TrialStopped``; a candidate it cannot train
raises ``CandidateError``, as does an objective metric it cannot produce; its ``info`` declares
every metric it reports (the server validates studies against it).

A plugin (a package of its own) does the same in its own test file and runs it with this
folder importable: ``PYTHONPATH=<archsearch checkout>/tests pytest`` (see the README's
"Your own trainer and search space" and ``examples/mlp_plugin``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest

from archsearch.spaces import Candidate
from archsearch.worker import CandidateError, TrainContext, Trainer, TrialStopped


class Reports:
    """A report callback that records (step, value) and prunes from the ``prune_from``-th
    report on."""

    def __init__(self, prune_from: int | None = None) -> None:
        self.calls: list[tuple[int, float]] = []
        self.prune_from = prune_from

    def __call__(self, step: int, value: float) -> bool:
        self.calls.append((step, value))
        return self.prune_from is not None and len(self.calls) >= self.prune_from


class StopAfter:
    """A ``should_stop`` that turns True after ``n`` checks (a lease lost mid-training)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.n


class TrainerConformance:
    """What every :class:`~archsearch.worker.Trainer` must do. See the module docstring."""

    objective_metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    intermediate_metric: ClassVar[str] = ""
    reports_intermediate: ClassVar[bool] = True

    def make_trainer(self) -> Trainer:
        raise NotImplementedError

    def candidate(self) -> Candidate:
        raise NotImplementedError

    def bad_candidates(self) -> list[Candidate]:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def trainer(cls) -> Trainer:
        """One trainer per class (a trainer may cache tokenisers and encoded data)."""
        return cls().make_trainer()

    def _context(self, **kwargs: Any) -> TrainContext:
        return TrainContext(
            intermediate_metric=self.intermediate_metric,
            objective_metrics=self.objective_metrics,
            **kwargs,
        )

    def test_train_returns_every_objective_metric(self, trainer: Trainer) -> None:
        reports = Reports()
        result = trainer.train(self.candidate(), self._context(report=reports))
        assert set(self.objective_metrics) <= set(result.metrics)
        for name, value in result.metrics.items():
            assert isinstance(name, str) and name
            assert isinstance(value, float) and math.isfinite(value), (name, value)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.info.items())
        assert bool(reports.calls) == self.reports_intermediate
        steps = [step for step, _ in reports.calls]
        assert steps == sorted(set(steps)) and all(step >= 0 for step in steps)
        assert all(math.isfinite(value) for _, value in reports.calls)
        # The same candidate and seed give the same objectives (on one device): the server
        # records a repeat of a candidate with the earlier result instead of training it again.
        # (A trainer drawing from an unseeded generator passed the suite.)
        again = trainer.train(self.candidate(), self._context())
        for name in self.objective_metrics:
            assert again.metrics[name] == pytest.approx(result.metrics[name], rel=1e-6), name
        # The server validates objectives against ``info``: every metric the trainer reports
        # must be one its metadata declares, for a space the metadata names.
        info = type(trainer).info
        assert info is not None and info.name == trainer.name, "declare Trainer.info"
        candidate = self.candidate()
        assert not info.spaces or candidate.space in info.spaces
        undeclared = {m for m in again.metrics if not info.declares(m, candidate.data)}
        assert not undeclared, f"reported but not declared in {info.name}'s info: {undeclared}"

    def test_a_stop_request_raises_trial_stopped(self, trainer: Trainer) -> None:
        with pytest.raises(TrialStopped):
            trainer.train(self.candidate(), self._context(should_stop=lambda: True))

    def test_a_stop_request_mid_training_raises_trial_stopped(self, trainer: Trainer) -> None:
        should_stop = StopAfter(2)
        with pytest.raises(TrialStopped):
            trainer.train(self.candidate(), self._context(should_stop=should_stop))
        assert should_stop.calls > 2  # it kept checking until told to stop

    def test_a_prune_decision_raises_trial_stopped(self, trainer: Trainer) -> None:
        if not self.reports_intermediate:
            pytest.skip("the trainer reports no intermediate values")
        reports = Reports(prune_from=1)
        with pytest.raises(TrialStopped):
            trainer.train(self.candidate(), self._context(report=reports))
        assert len(reports.calls) == 1  # it stopped at the first pruned report

    def test_a_bad_candidate_raises_candidate_error(self, trainer: Trainer) -> None:
        bad = self.bad_candidates()
        assert bad, "name at least one candidate the trainer must refuse"
        for candidate in bad:
            with pytest.raises(CandidateError):
                trainer.train(candidate, self._context())

    def test_an_unproducible_objective_metric_raises_candidate_error(
        self, trainer: Trainer
    ) -> None:
        context = TrainContext(
            intermediate_metric=self.intermediate_metric,
            objective_metrics=(*self.objective_metrics, "no_such_metric"),
        )
        with pytest.raises(CandidateError, match="no_such_metric"):
            trainer.train(self.candidate(), context)
