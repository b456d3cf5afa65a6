"""optuna-dashboard shows DyLoRA rank trials as trials with ``lora_rank`` (issue 13): asked
through the dashboard's own JSON API over the storage the server writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
from optuna_dashboard import wsgi

from archsearch.server._rank_trials import RANK_PARAM, record_rank_trials
from archsearch.server._spec import Objective, SearchSpec
from archsearch.spaces import LoraSpace

SPEC = SearchSpec(
    name="ranks",
    space="lora",
    n_trials=3,
    trainer="lora",
    objectives=(Objective("accuracy", "maximize"), Objective("trainable_params", "minimize")),
)
METRICS = {
    "accuracy": 0.8,
    "trainable_params": 300.0,
    **{f"accuracy@r{b}": 0.5 + 0.1 * b for b in (1, 2, 3)},
    **{f"trainable_params@r{b}": 100.0 * b for b in (1, 2, 3)},
}


def study_detail(url: str, study_id: int) -> dict[str, Any]:
    """The dashboard's ``/api/studies/<id>`` answer (what its plots are drawn from)."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study_id}"
    status: list[str] = []
    body = b"".join(wsgi(url)(environ, lambda s, headers, *exc: status.append(s)))
    assert status == ["200 OK"]
    return json.loads(body)


def test_the_dashboard_lists_rank_trials_with_lora_rank_and_their_front(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    study = optuna.create_study(
        study_name="ranks", storage=url, directions=["maximize", "minimize"]
    )
    trial = study.ask()
    LoraSpace(r_max=[3]).suggest(trial)
    study.tell(trial, [0.8, 300.0])
    record_rank_trials(study, SPEC, study.trials[0], METRICS)

    detail = study_detail(url, study._study_id)
    ranked = {
        int(p["param_external_value"]): t["values"]
        for t in detail["trials"]
        for p in t["params"]
        if p["name"] == RANK_PARAM
    }
    assert ranked == {1: [0.6, 100.0], 2: [0.7, 200.0], 3: [0.8, 300.0]}  # score vs rank
    # the slice plot's parameter list, and the front of score against trainable parameters
    assert RANK_PARAM in {p["name"] for p in detail["union_search_space"]}
    assert {1, 2, 3} <= {t["number"] for t in detail["best_trials"]}
