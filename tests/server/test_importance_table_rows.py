"""`show`'s parameter importance in a table study: a table space trains the table row nearest
the loop's suggestion, so the score belongs to the row's parameters, not the suggestion's (a
12-trial TPE study on flexibert-small's table: every trial's parameters differed from its row,
and fANOVA credited scores to values never trained)."""

from __future__ import annotations

import json
import random

from _procs import TABLE

from archsearch.server._importance import param_importances, scored_params, study_space
from archsearch.server._spec import SearchSpec
from archsearch.spaces import FlexiBertSmallSpace, load_table
from archsearch.v1 import archsearch_pb2 as pb

SPEC = SearchSpec.from_dict(
    {
        "name": "t",
        "space": "flexibert-small",
        "trainer": "table",
        "space_options": {"table": TABLE},
        "n_trials": 24,
    }
).to_json()


def _table_trials(n: int, seed: int = 0) -> list[pb.Trial]:
    """Trials of table rows whose score follows the row's ``l0.hidden``; each trial's
    parameters are a suggestion that was mapped to the row: its ``l0.hidden`` a coin flip,
    independent of the score, and a data choice the row does not set."""
    rng = random.Random(seed)
    space = FlexiBertSmallSpace()
    rows = [a for a in load_table(TABLE).scored("sst2") if a["l"] == 2]
    out = []
    for i in range(n):
        row = rng.choice(rows)
        params = {**space.to_params(row), "data.selection": rng.choice(["none", "dsir k=10"])}
        params["l0.hidden"] = rng.choice([128, 256])  # what the sampler suggested
        value = 0.5 + 0.3 * (row["h"][0] == 256) + rng.gauss(0, 0.01)
        cand = {"space": "flexibert-small", "architecture": row, "data": {"task": "sst2"}}
        out.append(
            pb.Trial(
                number=i,
                state=pb.COMPLETE,
                values=[value],
                params_json=json.dumps(params),
                candidate_json=json.dumps(cand),
                duplicate_of=-1,
            )
        )
    return out


def test_importance_follows_the_rows_that_were_scored() -> None:
    trials = _table_trials(32)
    space = study_space(SPEC)
    assert isinstance(space, FlexiBertSmallSpace) and space.members is not None
    got, n = param_importances(trials, space=space)
    assert n == 32 and next(iter(got)) == "l0.hidden" and got["l0.hidden"] > 0.8
    assert "data.selection" in got  # the trial's data choice is kept
    # the suggestion's l0.hidden explains nothing of the score
    suggested, _ = param_importances(trials)
    assert suggested.get("l0.hidden", 0.0) < 0.5


def test_a_trial_trained_as_suggested_keeps_its_parameters() -> None:
    space = FlexiBertSmallSpace()
    trial = _table_trials(1)[0]
    row = json.loads(trial.candidate_json)["architecture"]
    params = {**space.to_params(row), "data.selection": "none"}
    trial.params_json = json.dumps(params)
    assert scored_params(trial, space) == params
    four = {**params, "num_layers": 4, "l2.hidden": 128}  # a 4-layer suggestion, 2-layer row
    trial.params_json = json.dumps(four)
    assert scored_params(trial, space) == params
    trial.candidate_json = ""  # nothing to read: the trial's own
    assert scored_params(trial, space) == four


def test_a_table_that_is_not_on_this_machine_reads_rows_all_the_same() -> None:
    spec = json.loads(SPEC)
    spec["space_options"]["table"] = "/nowhere/dataset_small_sst2.json"
    space = study_space(json.dumps(spec))
    assert isinstance(space, FlexiBertSmallSpace) and space.members is None
    got, _ = param_importances(_table_trials(32), space=space)
    assert next(iter(got)) == "l0.hidden"
    assert study_space(json.dumps({"space": "no-such-space"})) is None
    assert study_space("") is None
