"""DyLoRA rank trials (server/_rank_trials.py): one COMPLETE trial per rank a LoRA trial
scored, with the rank as a parameter, the metrics at that rank, a link to the training trial
and no worker time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from archsearch.server._convert import study_to_pb, trial_to_pb
from archsearch.server._errors import InvalidArgument
from archsearch.server._format import format_study
from archsearch.server._format_json import trial_dict
from archsearch.server._objectives import checked_report
from archsearch.server._rank_trials import (
    RANK_OF_ATTR,
    RANK_PARAM,
    is_rank_trial,
    metrics_by_rank,
    record_rank_trials,
)
from archsearch.server._spec import Objective, SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.server._trial_notes import rank_trials_of
from archsearch.spaces import SpecError

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


# ---------------------------------------------------------------------------------------------
# In the service: StudyManager stores the ranks with the training trial's completion.


def lora_spec(name: str, n_trials: int) -> SearchSpec:
    return SearchSpec.from_dict(
        {
            "name": name,
            "space": "lora",
            "trainer": "lora",
            "loop": "random",
            "n_trials": n_trials,
            "space_options": {"r_max": [3]},
            "objectives": ["accuracy:max", "trainable_params:min"],
            "recipe": {"max_steps": 6, "lora": {"model": "/models/tiny"}},
        }
    )


@pytest.mark.parametrize("key", ["mode", "alpha", "targets", "r_max"])
def test_a_lora_study_may_not_set_what_its_space_searches(key: str) -> None:
    spec = lora_spec("x", 1).to_dict()
    spec["recipe"]["lora"][key] = {"mode": "lora", "targets": ["key"]}.get(key, 4)
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict(spec)
    assert e.value.field == f"recipe.lora.{key}" and "space_options" in str(e.value)


def dylora_metrics(lr: float) -> dict[str, float]:
    """What a DyLoRA trial with r_max 3 reports (its score depends on its setting)."""
    return {
        **METRICS,
        **{f"accuracy@r{b}": 0.5 + lr + 0.1 * b for b in (1, 2, 3)},
        "accuracy": 0.5 + lr + 0.3,
    }


def _run(m: StudyManager, name: str, budget: int) -> list[int]:
    """Trains every candidate of ``name`` (a fake worker's reports); returns trial numbers."""
    trained = []
    while (g := m.acquire("w", ("lora",), name)) is not None:
        assert g.candidate.space == "lora" and g.candidate.architecture == {}
        lora = g.candidate.recipe["lora"]
        assert lora["mode"] == "dylora" and lora["r_max"] == 3 and lora["model"] == "/models/tiny"
        assert lora["alpha"] in (8, 16, 32) and lora["targets"] in (
            ["query", "value"],
            ["query", "key", "value"],
        )
        metrics = dylora_metrics(g.candidate.recipe["learning_rate"])
        values, _ = m.complete(g.lease_id, metrics, {})
        assert m.complete(g.lease_id, metrics, {}) == (values, TrialState.COMPLETE)  # a repeat
        trained.append(g.trial_number)
        assert len(trained) <= budget, "rank trials must not count against n_trials"
    return trained


def test_a_dylora_study_records_each_rank_once_and_spends_one_training_per_setting(
    storage_url: str,
) -> None:
    url = storage_url
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        m.launch(lora_spec("ranks", 2))
        trained = _run(m, "ranks", 2)
        assert len(trained) == 2 and m.get("ranks").state == "completed"
        trials = m.trials(m.get("ranks"))
    finally:
        m.close()
    ranks = [t for t in trials if is_rank_trial(t)]
    assert len(trials) == 2 + 3 * 2
    for number in trained:
        training = trials[number]
        assert not is_rank_trial(training) and "candidate" in training.user_attrs
        mine = [t for t in ranks if t.user_attrs[RANK_OF_ATTR] == number]
        assert [t.params[RANK_PARAM] for t in mine] == [1, 2, 3]
        lr = training.params["learning_rate"]
        for t in mine:
            b = t.params[RANK_PARAM]
            assert t.state == TrialState.COMPLETE
            assert t.values == pytest.approx([0.5 + lr + 0.1 * b, 1000.0 * b])
            assert {k: v for k, v in t.params.items() if k != RANK_PARAM} == training.params
            assert t.user_attrs["metrics"]["train_seconds"] == 0.0
    # what optuna-dashboard reads: the rank parameter, and the Pareto front of score against
    # trainable parameters made of rank trials
    study = optuna.load_study(study_name="ranks", storage=url)
    assert all(RANK_PARAM in t.params for t in study.best_trials)

    # a restart neither counts the ranks against the budget nor records them again
    m2 = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        h = m2.get("ranks")
        assert h.index.originals == 2 and not h.index.live and not h.index.waiting
        assert m2.acquire("w", ("lora",), "ranks") is None
        assert len(m2.trials(h)) == len(trials)
    finally:
        m2.close()


def test_ranks_of_a_study_still_running_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        m.launch(lora_spec("half", 3))
        g = m.acquire("w", ("lora",), "half")
        assert g is not None
        m.complete(g.lease_id, dylora_metrics(0.001), {})
    finally:
        m.close()
    m2 = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        h = m2.get("half")
        assert h.index.originals == 2  # the trained one and the one prepared before the stop
        assert _run(m2, "half", 2)  # the prepared candidate, and the last of the budget
        assert h.state == "completed"
        trials = m2.trials(h)
        assert sum(not is_rank_trial(t) for t in trials) == 3
        assert sorted(t.user_attrs[RANK_OF_ATTR] for t in trials if is_rank_trial(t)) == sorted(
            [n for n in (t.number for t in trials if not is_rank_trial(t)) for _ in range(3)]
        )
        numbers = [t.number for t in trials]
        assert numbers == list(range(len(trials)))  # dense, none taken twice
    finally:
        m2.close()


def test_show_names_each_rank_and_its_training(tmp_path: Path) -> None:
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    try:
        h = m.launch(lora_spec("shown", 1))
        (number,) = _run(m, "shown", 1)
        trials = [trial_to_pb(t) for t in m.trials(h)]
        text = format_study(study_to_pb(m.snapshot(h)), trials)
    finally:
        m.close()
    assert "3 rank trials" in text
    for b in (1, 2, 3):
        assert f"rank {b} of #{number}" in text
    assert "dylora lr=" in text and "{}" not in text  # rank trials show their training's setting
    links = rank_trials_of(trials)
    assert sorted(r for r, _ in links.values()) == [1, 2, 3]
    assert all(training.number == number for _, training in links.values())
    as_json = [trial_dict(t, links.get(t.number)) for t in trials]
    assert [d["rank_of"] for d in as_json] == [None, number, number, number]


def test_a_dylora_report_at_a_large_rank_is_accepted() -> None:
    """r_max 64 on MRPC: f1, accuracy and trainable_params at every rank, prefixed and not."""
    ranked = {
        f"{prefix}{m}@r{b}": 0.5
        for prefix in ("", "mrpc.")
        for m in ("f1", "accuracy", "trainable_params")
        for b in range(1, 65)
    }
    report = {**METRICS, **ranked}
    assert len(report) > 384 and checked_report(report, {}) == report


def test_a_report_may_name_a_metric_at_a_label_only() -> None:
    assert checked_report({"accuracy@r3": 0.5, "sst2.accuracy@r12": 0.6}, {})
    for bad in ("accuracy@", "@r3", "accuracy@r 3", "accuracy@r3@r4", "accuracy@" + "r" * 33):
        with pytest.raises(InvalidArgument, match="accuracy@r4"):
            checked_report({bad: 0.5}, {})


def test_a_report_adds_no_ranks_its_candidate_was_not_scored_at(tmp_path: Path) -> None:
    """A worker's report of a table-trainer trial with ``accuracy@r1..r299`` added 299 rank
    trials, and a made-up one became the study's best trial."""
    from _procs import table_spec

    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    try:
        m.launch(SearchSpec.from_dict({**table_spec("t", 2), "trainer": "bert"}))
        g = m.acquire("w", ("bert",), "t")
        assert g is not None
        forged = {"accuracy": 0.1, "params": 1e6, **{f"accuracy@r{b}": 0.9 for b in (1, 2)}}
        with pytest.raises(InvalidArgument, match=r"ranks \[1, 2\].*it has no LoRA"):
            m.complete(g.lease_id, forged, {})
        m.launch(lora_spec("d", 1))
        d = m.acquire("w", ("lora",), "d")
        assert d is not None
        beyond = {**dylora_metrics(0.0), "accuracy@r4": 0.99}  # r_max 3
        with pytest.raises(InvalidArgument, match=r"ranks \[4\].*at ranks \[1, 2, 3\] only"):
            m.complete(d.lease_id, beyond, {})
        # nothing was stored: the same leases complete with honest reports
        m.complete(g.lease_id, {"accuracy": 0.1, "params": 1e6}, {})
        m.complete(d.lease_id, dylora_metrics(0.0), {})
        assert not any(is_rank_trial(t) for t in m.trials(m.get("t")))
        assert [t.params[RANK_PARAM] for t in m.trials(m.get("d")) if is_rank_trial(t)] == [
            1,
            2,
            3,
        ]
    finally:
        m.close()
