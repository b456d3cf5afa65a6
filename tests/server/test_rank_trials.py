"""DyLoRA rank trials (server/_rank_trials.py): one COMPLETE trial per rank a LoRA trial
scored, with the rank as a parameter, the metrics at that rank, a link to the training trial
and no worker time."""

from __future__ import annotations

from typing import Any

import optuna

from archsearch.server._rank_trials import (
    RANK_OF_ATTR,
    RANK_PARAM,
    is_rank_trial,
    metrics_by_rank,
    record_rank_trials,
)
from archsearch.server._spec import Objective, SearchSpec

#: What a ``lora`` trial on SST-2 with r_max 3 reports (single task: unprefixed and prefixed).
METRICS = {
    "accuracy": 0.80,
    "params": 22e6,
    "train_seconds": 30.0,
    "trainable_params": 3000.0,
    **{f"accuracy@r{b}": 0.5 + 0.125 * b for b in (1, 2, 3)},
    **{f"trainable_params@r{b}": 1000.0 * b for b in (1, 2, 3)},
    "sst2.accuracy": 0.80,
    "sst2.train_seconds": 30.0,
    **{f"sst2.accuracy@r{b}": 0.5 + 0.125 * b for b in (1, 2, 3)},
}


def spec(*objectives: Objective) -> SearchSpec:
    return SearchSpec(name="ranks", space="lora", n_trials=4, trainer="lora", objectives=objectives)


def trained_study(directions: list[Any]) -> tuple[optuna.Study, optuna.trial.FrozenTrial]:
    study = optuna.create_study(directions=directions)
    trial = study.ask()
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("alpha", [8, 16])
    study.tell(trial, [0.80, 3000.0][: len(directions)])
    return study, study.trials[0]


def test_metrics_by_rank_take_each_rank_and_no_worker_time() -> None:
    ranks = metrics_by_rank(METRICS)
    assert sorted(ranks) == [1, 2, 3]
    two = ranks[2]
    assert two["accuracy"] == two["sst2.accuracy"] == 0.75
    assert two["trainable_params"] == 2000.0
    assert two["train_seconds"] == two["sst2.train_seconds"] == 0.0
    assert two["params"] == 22e6
    assert not any("@r" in name for name in two)
    assert metrics_by_rank({"accuracy": 0.8, "params": 1.0}) == {}


def test_every_rank_is_a_complete_trial_linked_to_its_training() -> None:
    objectives = (Objective("accuracy", "maximize"), Objective("trainable_params", "minimize"))
    study, training = trained_study(["maximize", "minimize"])
    assert record_rank_trials(study, spec(*objectives), training, METRICS) == [1, 2, 3]
    ranks = [t for t in study.trials if is_rank_trial(t)]
    assert [t.params[RANK_PARAM] for t in ranks] == [1, 2, 3]
    for t in ranks:
        b = t.params[RANK_PARAM]
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.values == [0.5 + 0.125 * b, 1000.0 * b]
        assert t.user_attrs[RANK_OF_ATTR] == training.number
        assert t.params["learning_rate"] == training.params["learning_rate"]
        assert t.user_attrs["metrics"]["train_seconds"] == 0.0
        assert t.user_attrs["metric.trainable_params"] == 1000.0 * b
        assert "candidate" not in t.user_attrs  # never re-leased or de-duplicated
    assert not is_rank_trial(training)
    # the score-vs-parameters Pareto front is made of rank trials (every rank is on it here)
    front = {t.number for t in study.best_trials}
    assert {t.number for t in ranks} <= front
    # another training trial with a larger r_max: the rank parameter's range grows
    more = {f"accuracy@r{b}": 0.9 for b in range(1, 9)}
    more.update({f"trainable_params@r{b}": 10.0 * b for b in range(1, 9)})
    assert record_rank_trials(study, spec(*objectives), training, more) == list(range(1, 9))


def test_a_trial_without_ranks_adds_nothing() -> None:
    study, training = trained_study(["maximize"])
    plain = {"accuracy": 0.8, "params": 1.0}
    assert record_rank_trials(study, spec(Objective("accuracy", "maximize")), training, plain) == []
    assert len(study.trials) == 1


def test_a_rank_lacking_an_objective_is_not_recorded() -> None:
    study, training = trained_study(["maximize"])
    metrics = {"accuracy@r1": 0.7, "accuracy@r2": 0.8, "f1@r2": 0.6}
    recorded = record_rank_trials(study, spec(Objective("f1", "maximize")), training, metrics)
    assert recorded == [2]
    assert [t.values for t in study.trials if is_rank_trial(t)] == [[0.6]]
