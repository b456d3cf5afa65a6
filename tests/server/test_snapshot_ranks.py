"""Loops do not see DyLoRA rank trials (server/_suggest.py): the snapshot's trial views and
the Optuna study a sampler reads leave them out, the study keeps them, and a space that
searches ``lora_rank`` itself sees them."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from archsearch.search import make_loop
from archsearch.server._rank_trials import RANK_PARAM, is_rank_trial, record_rank_trials
from archsearch.server._spec import SearchSpec
from archsearch.server._suggest import ask_candidate, loop_snapshot
from archsearch.spaces import LoraSpace

R_MAX = 4
SPEC = SearchSpec(name="ranks", space="lora", n_trials=10, trainer="lora")


def metrics(score: float) -> dict[str, float]:
    """What a DyLoRA trial at r_max 4 reports (the objective is accuracy)."""
    return {
        "accuracy": score,
        "train_seconds": 10.0,
        **{f"accuracy@r{b}": score - 0.01 * (R_MAX - b) for b in range(1, R_MAX + 1)},
        **{f"trainable_params@r{b}": 100.0 * b for b in range(1, R_MAX + 1)},
    }


class RankSpace(LoraSpace):
    """A lora space that also searches the rank (each rank trial is then one of its points)."""

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {**super().suggest(trial), RANK_PARAM: trial.suggest_int(RANK_PARAM, 1, R_MAX)}

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        return {**super().to_params(architecture), RANK_PARAM: architecture[RANK_PARAM]}

    def sample(self, rng: Any) -> dict[str, Any]:
        return {**super().sample(rng), RANK_PARAM: rng.randint(1, R_MAX)}


def trained(space: LoraSpace, n: int) -> optuna.Study:
    """A study with ``n`` completed DyLoRA trials of ``space``, each with its rank trials."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    for i in range(n):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.7 + 0.01 * i)
        training = study.trials[trial.number]
        assert record_rank_trials(study, SPEC, training, metrics(0.7 + 0.01 * i))
    return study


def test_the_snapshot_and_the_samplers_study_leave_out_rank_trials() -> None:
    space = LoraSpace(r_max=[R_MAX])
    study = trained(space, 3)
    assert len(study.trials) == 3 * (1 + R_MAX)  # the study (and dashboard) keeps them
    snapshot = loop_snapshot(study, space)
    assert [t.number for t in snapshot.trials] == [0, 5, 10]
    seen = snapshot.optuna_study
    assert [t.number for t in seen.get_trials(deepcopy=False)] == [0, 5, 10]
    assert not any(is_rank_trial(t) for t in seen.get_trials(states=(TrialState.COMPLETE,)))
    assert seen._storage.get_n_trials(seen._study_id, TrialState.COMPLETE) == 3
    # what TPE reads (its start-up count and densities): 3 observations, not 15
    assert len(seen._get_trials(deepcopy=False, use_cache=True)) == 3


def test_a_tpe_loop_asks_through_the_view_and_the_trial_lands_in_the_study() -> None:
    space = LoraSpace(r_max=[R_MAX])
    study = trained(space, 3)
    loop = make_loop("tpe", 0, 1, {"n_startup_trials": 2})
    asked = ask_candidate(loop, study, space)
    stored = study._storage.get_trial(asked.trial_id)
    assert stored.state == TrialState.RUNNING and stored.number == 15
    assert set(stored.params) == {"learning_rate", "alpha", "targets", "r_max"}
    assert space.validate(asked.architecture) == asked.architecture
    assert len(study.trials) == 16


def test_a_space_that_searches_the_rank_sees_rank_trials() -> None:
    space = RankSpace(r_max=[R_MAX])
    study = trained(space, 2)
    snapshot = loop_snapshot(study, space)
    assert len(snapshot.trials) == 2 * (1 + R_MAX)
    assert snapshot.optuna_study is study


def test_a_training_trial_and_its_rank_trial_at_r_max_are_one_result_on_the_front() -> None:
    """The rank trial at r_max repeats its training trial's values: the Pareto front ``show``
    prints named the one result twice (#0 and "rank 4 of #0"); now once, by its rank."""
    from archsearch.server._best_trials import one_per_result

    study = trained(LoraSpace(r_max=[R_MAX]), 1)
    training, *ranks = study.trials
    at_max = next(t for t in ranks if t.params[RANK_PARAM] == R_MAX)
    assert at_max.values == training.values
    assert one_per_result([training, at_max]) == [at_max]
    other = next(t for t in ranks if t.params[RANK_PARAM] == 1)
    assert one_per_result([training, other]) == [training, other]  # different values: both
