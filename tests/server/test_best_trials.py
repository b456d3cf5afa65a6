"""The study's best trials (``Study.best_trials``): Optuna's pick, among the trials whose
values were measured and are finite; an AutoDistil job's ±inf and a student's proxy scores are
never "best"."""

from __future__ import annotations

import random

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, create_trial

from archsearch.server._best_trials import best_of
from archsearch.server._student_trials import STUDENT_OF_ATTR

MAX, MIN = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE


def _trial(number: int, values: list[float], **attrs: object) -> FrozenTrial:
    t = create_trial(
        values=values,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs=dict(attrs),
    )
    t.number = number
    return t


def test_pareto_fronts_equal_optunas_when_nothing_is_left_out() -> None:
    rng = random.Random(0)
    for directions in ([MAX, MIN], [MIN, MIN, MAX], [MAX]):
        study = optuna.create_study(directions=directions)
        for _ in range(60):
            # coarse values: ties and equal vectors happen
            study.add_trial(
                create_trial(
                    values=[rng.randint(0, 6) / 6 for _ in directions],
                    params={"x": 0.5},
                    distributions={"x": FloatDistribution(0, 1)},
                )
            )
        trials = study.get_trials()
        want = study.best_trials if len(directions) > 1 else [study.best_trial]
        got = best_of(trials, list(study.directions))
        assert sorted(t.number for t in got) == sorted(t.number for t in want)


def test_infinite_and_proxy_values_are_never_best() -> None:
    trials = [
        _trial(0, [float("-inf")]),  # a supernet job: the worst value, not a score
        _trial(1, [0.9], **{STUDENT_OF_ATTR: 3}),  # a student's proxy accuracy
        _trial(2, [0.7]),  # a student trained stand-alone: its true accuracy
        _trial(3, [0.8]),
        _trial(4, [0.8]),  # a tie goes to the lower number, as in Optuna
    ]
    assert [t.number for t in best_of(trials, [MAX])] == [3]
    assert best_of(trials[:2], [MAX]) == []  # nothing measured yet: no best
    two = [_trial(0, [0.9, float("inf")]), _trial(1, [0.5, 2.0]), _trial(2, [0.6, 3.0])]
    assert [t.number for t in best_of(two, [MAX, MIN])] == [1, 2]
