"""The boshnas loop's adaptive options: ``features: auto`` and ``pending: believer``."""

from __future__ import annotations

import json
import random
from typing import Any

import optuna
import pytest

from archsearch.search import make_loop
from archsearch.search._library import FEATURES
from archsearch.search._library_loops import FEATURES_ATTR, KIND_ATTR
from archsearch.server._suggest import ask_candidate, loop_snapshot
from archsearch.spaces import FlexiBertSpace, SpecError

#: A small library (40 draws of the FlexiBERT space), a cheap embedding and surrogate fit.
OPTIONS: dict[str, Any] = {
    "library_size": 40,
    "embedding_dim": 4,
    "embedding": {"partners": 4, "min_epochs": 10, "max_epochs": 50, "anchors": 8},
    "n_init": 4,
    "surrogate_options": {"max_epochs": 20, "warm_max_epochs": 5},
}


@pytest.fixture(scope="module")
def space() -> FlexiBertSpace:
    return FlexiBertSpace()


def _score(arch: dict[str, Any]) -> float:
    """A deterministic score: more attention layers and wider feed-forward score higher."""
    noise = random.Random(json.dumps(arch, sort_keys=True)).random()
    return arch["o"].count("sa") + sum(map(sum, arch["f"])) / 2048 + 0.3 * noise


def _study(loop: Any) -> optuna.Study:
    return optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), sampler=loop.sampler, direction="maximize"
    )


def _tell_n(loop: Any, space: FlexiBertSpace, study: optuna.Study, n: int) -> None:
    for _ in range(n):
        asked = ask_candidate(loop, study, space)
        study.tell(asked.number, _score(asked.architecture))


def test_auto_features_are_chosen_and_recorded(space: FlexiBertSpace) -> None:
    loop = make_loop("boshnas", 0, 1, {**OPTIONS, "features": "auto"})
    study = _study(loop)
    _tell_n(loop, space, study, 8)
    model_based = [t for t in study.trials if t.system_attrs[KIND_ATTR] != "random"]
    assert model_based, "no model-based proposal in 8 asks"
    assert all(t.system_attrs[FEATURES_ATTR] in FEATURES for t in model_based)
    assert all(FEATURES_ATTR not in t.system_attrs for t in study.trials if t not in model_based)
    # One surrogate per feature set the loop has used (each keeps its warm start).
    used = {t.system_attrs[FEATURES_ATTR] for t in model_based}
    assert set(loop._proposers) == used | ({"both"} if len(used) < 3 else set())


def test_believer_refits_for_each_suggestion_of_a_call(space: FlexiBertSpace) -> None:
    loop = make_loop("boshnas", 1, 1, {**OPTIONS, "pending": "believer"})
    study = _study(loop)
    _tell_n(loop, space, study, 6)
    ask_candidate(loop, study, space)  # one in flight
    got = loop.suggest(loop_snapshot(study, space), 3)
    assert len({s.attrs["archsearch:library_row"] for s in got}) == 3
    # The last fit of the call saw 6 results and 1 + 2 rows in flight as believed results.
    assert loop._proposer is not None and loop._proposer.last_fit.n == 6 + 3


def test_bad_adaptive_options_are_refused() -> None:
    with pytest.raises(SpecError) as e:
        make_loop("boshnas", 0, 1, {"features": "best"})
    assert e.value.field == "loop_options.features" and "auto" in str(e.value)
    with pytest.raises(SpecError, match="pending must be one of") as e:
        make_loop("boshnas", 0, 1, {"pending": "liar"})
    assert e.value.field == "loop_options"


@pytest.mark.parametrize(
    ("pending", "kind"),
    [
        ({"pending": "believer", "warm_start": True}, "logei-believer"),
        ({"pending": "joint", "batch_size": 1}, "qlogei-joint"),
    ],
)
def test_embedding_gp_pending_modes_spread_one_call_over_free_rows(
    space: FlexiBertSpace, pending: dict[str, Any], kind: str
) -> None:
    """The embedding-gp loop's ``pending: believer`` and ``pending: joint`` (the rows in flight
    as qLogEI's ``X_pending``): one fit per suggestion, each seeing the rows in flight (the
    earlier suggestions of the call among them); none is suggested twice."""
    options = {k: v for k, v in OPTIONS.items() if k != "surrogate_options"}
    loop = make_loop("embedding-gp", 1, 1, {**options, **pending})
    study = _study(loop)
    _tell_n(loop, space, study, 6)
    in_flight = ask_candidate(loop, study, space)
    got = loop.suggest(loop_snapshot(study, space), 3)
    rows = {s.attrs["archsearch:library_row"] for s in got}
    assert len(rows) == 3
    assert in_flight.suggestion is not None
    assert in_flight.suggestion.attrs["archsearch:library_row"] not in rows
    assert {s.attrs[KIND_ATTR] for s in got} == {kind}
    with pytest.raises(SpecError, match="pending must be one of"):
        make_loop("embedding-gp", 0, 1, {"pending": "fantasize"})
