"""The study's best trials (``Study.best_trials``): Optuna's pick, among the trials whose
values were measured and are finite, each result once; an AutoDistil job's ±inf and a
student's proxy scores are never "best", nor is a repeated candidate beside its original."""

from __future__ import annotations

import random
import time
from pathlib import Path

import optuna
from _tiny import TWO_CANDIDATES
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, create_trial

from archsearch.server._best_trials import best_of, one_per_result
from archsearch.server._convert import study_to_pb, trial_to_pb
from archsearch.server._format import format_study
from archsearch.server._spec import SearchSpec
from archsearch.server._student_trials import STUDENT_OF_ATTR
from archsearch.server._studies import StudyManager

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


def test_a_repeated_candidate_is_its_originals_result_not_another_one() -> None:
    """A repeat (``duplicate_of``) carries its original's values: on a Pareto front it was
    listed beside it, once per repeat."""
    trials = [
        _trial(0, [0.8, 3.0]),
        _trial(1, [0.6, 1.0]),
        *(
            _trial(n, [0.8, 3.0] if n % 2 else [0.6, 1.0], duplicate_of=n % 2 ^ 1)
            for n in range(2, 9)
        ),
        _trial(9, [0.5, 2.0]),  # dominated
    ]
    assert [t.number for t in best_of(trials, [MAX, MIN])] == [0, 1]
    assert [t.number for t in one_per_result(trials[:9])] == [0, 1]
    single = [_trial(0, [0.8]), _trial(1, [0.8], duplicate_of=0), _trial(2, [0.7])]
    assert [t.number for t in best_of(single, [MAX])] == [0]


def test_show_lists_each_result_of_a_small_space_once(tmp_path: Path) -> None:
    """A two-candidate bert space, several objectives: the loop proposes the same two
    candidates again and again; `show`'s Pareto front (``Study.best_trials``) names the two
    trials that trained them, not their repeats."""
    manager = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30)
    try:
        spec = SearchSpec.from_dict(TWO_CANDIDATES)
        h = manager.launch(spec)
        trained: list[int] = []
        while len(trained) < 2:
            grant = manager.acquire("w", ("bert",))
            assert grant is not None
            hidden = grant.candidate.architecture["hidden_size"]
            manager.complete(grant.lease_id, {"accuracy": hidden / 100, "params": hidden}, {})
            trained.append(grant.trial_number)
        deadline = time.monotonic() + 30
        while sum("duplicate_of" in t.user_attrs for t in manager.trials(h)) < 3:
            assert time.monotonic() < deadline, "no repeats stored"
            time.sleep(0.05)
        assert sorted(t.number for t in manager.best_trials(h)) == sorted(trained)
        study = study_to_pb(manager.snapshot(h))
        text = format_study(study, [trial_to_pb(t) for t in manager.trials(h)])
        front = text.split("Pareto front:\n")[1].splitlines()
        assert sorted(int(line.split()[0][1:]) for line in front if line.startswith("  #")) == (
            sorted(trained)
        )
    finally:
        manager.close()
