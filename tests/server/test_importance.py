"""``archsearch show``'s parameter importance over architecture and data parameters."""

from __future__ import annotations

import json
import random

from archsearch.server._importance import (
    MIN_TRIALS,
    format_importance,
    importance_dict,
    param_importances,
)
from archsearch.v1 import archsearch_pb2 as pb

DATA = ["none", "dsir k=2000", "random size=2000"]


def _trials(n: int, data_matters: bool, seed: int = 0) -> list[pb.Trial]:
    """Trials whose score depends on the data choice (or on hidden_size), plus noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        data, hidden, layers = rng.choice(DATA), rng.choice([32, 64, 128]), rng.choice([1, 2])
        effect = 0.2 * (data == "dsir k=2000") if data_matters else 0.002 * hidden
        params = {"data.selection": data, "hidden_size": hidden, "num_hidden_layers": layers}
        out.append(
            pb.Trial(
                number=i,
                state=pb.COMPLETE,
                values=[0.5 + effect + rng.gauss(0, 0.01)],
                params_json=json.dumps(params),
                duplicate_of=-1,
            )
        )
    return out


def test_the_parameter_that_drives_the_score_is_the_most_important() -> None:
    got, n = param_importances(_trials(24, data_matters=True))
    assert n == 24 and next(iter(got)) == "data.selection" and got["data.selection"] > 0.8
    got, _ = param_importances(_trials(24, data_matters=False))
    assert next(iter(got)) == "hidden_size" and got["hidden_size"] > 0.8
    assert set(got) == {"data.selection", "hidden_size", "num_hidden_layers"}


def test_too_few_trials_say_so() -> None:
    trials = _trials(MIN_TRIALS - 1, data_matters=True)
    text = format_importance(trials, "accuracy")
    assert text == f"parameter importance: needs at least {MIN_TRIALS} complete trials, has 7"
    assert importance_dict(trials, "accuracy")["note"].startswith("needs at least")


def test_only_trained_complete_trials_count() -> None:
    trials = _trials(12, data_matters=True)
    trials[0].state = pb.FAIL
    trials[1].duplicate_of = 5  # a repeat carries trial 5's result
    trials[2].ClearField("values")
    trials[2].state = pb.RUNNING
    _, n = param_importances(trials)
    assert n == 9


def test_show_prints_a_table_and_json_holds_plain_numbers() -> None:
    trials = _trials(16, data_matters=True)
    text = format_importance(trials, "accuracy")
    assert text.startswith("parameter importance (fANOVA on accuracy, 16 complete trials):")
    assert "data.selection" in text.splitlines()[3]  # the first row: the most important
    d = importance_dict(trials, "accuracy")
    assert json.loads(json.dumps(d))["importances"]["data.selection"] > 0.5


def test_a_parameter_that_never_varies_is_left_out() -> None:
    trials = _trials(10, data_matters=True)
    for t in trials:
        params = json.loads(t.params_json)
        params["num_hidden_layers"] = 1
        t.params_json = json.dumps(params)
    got, _ = param_importances(trials)
    assert "num_hidden_layers" not in got


def test_show_names_a_candidates_data_choice_next_to_its_architecture() -> None:
    from archsearch.server._format import describe

    arch = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2}
    cand = {"space": "bert", "architecture": {**arch, "intermediate_size": 64}, "data": {}}
    plain = describe(json.dumps(cand))
    cand["data"] = {"selection": {"method": "dsir", "k": 48}}
    assert describe(json.dumps(cand)) == plain + "  [selection: dsir k=48]"
    cand["data"] = {"selection": {"method": "none"}}
    assert describe(json.dumps(cand)) == plain
    # a study that searches them shows every value of its data fields, defaults too
    cand["data"] = {"selection": {"method": "none"}, "train_subset": 4000}
    searched = ["selection", "train_subset"]
    assert describe(json.dumps(cand), "", searched) == (
        plain + "  [selection: none; train_subset: 4000]"
    )
    cand["data"] = {"selection": {"method": "none"}, "train_subset": 0}  # the whole split
    assert describe(json.dumps(cand), "", searched).endswith("[selection: none; train_subset: all]")


def test_an_objective_that_never_varies_is_said_not_a_crash() -> None:
    # short proxy trainings leave every student at the majority class: all scores equal
    trials = _trials(12, data_matters=True)
    for t in trials:
        t.values[:] = [0.5]
    assert param_importances(trials) == ({}, 12)
    text = format_importance(trials, "accuracy")
    assert (
        text == "parameter importance: the objective is 0.5 in every one of the 12 trials counted"
    )
    assert importance_dict(trials, "accuracy")["note"].startswith("the objective is 0.5")


def test_trials_a_completed_job_added_do_not_count() -> None:
    trials = _trials(12, data_matters=True)
    for t in trials[:4]:
        t.derived_from = 99  # AutoDistil students: scored by rank job #99, not trained
    _, n = param_importances(trials)
    assert n == 8


def test_the_wire_description_names_the_data_choice_once() -> None:
    """A Python client read three trials of a joint study as 'L1 H32 A2 I128', alike, though
    each trained on other data; `show` named it."""
    import optuna

    from archsearch.server._convert import trial_to_pb
    from archsearch.server._format import describe

    cand = {
        "space": "bert",
        "architecture": {"num_hidden_layers": 1, "hidden_size": 32},
        "data": {"selection": {"method": "random", "size": 300}, "train_subset": 0},
    }
    trial = optuna.trial.create_trial(
        value=0.5, user_attrs={"arch": "L1 H32", "candidate": cand}
    )
    wire = trial_to_pb(trial, ("selection", "train_subset"))
    assert wire.description == "L1 H32  [selection: random size=300; train_subset: all]"
    shown = describe(json.dumps(cand), wire.description, ["selection", "train_subset"])
    assert shown == wire.description  # show does not add it twice
    assert trial_to_pb(trial).description == "L1 H32  [selection: random size=300]"
