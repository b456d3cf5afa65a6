"""Studies stored before a default changed keep training as they trained
(``server/_stored_defaults.py``).

Found by upgrading over a storage of older versions' studies:

* DSIR's default target changed (the dev split, which leaked, to the test text): a resumed joint
  data search then selected towards the test text under the same label and Optuna choice
  ("dsir k=500"), and an old fixed-data study's earlier candidates no longer matched new ones
  (their fingerprints lacked the target), so a repeat was trained again
  (``dev_if_unnamed``, ``stored_candidate``);
* DyLoRA's ``frozen`` default became false on 2026-12-06 11:58 UTC: an old study resumed after
  it trained its new trials unfrozen, its candidates reading the same (``lora_as_launched``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

import optuna

from archsearch.search import LOOPS, LoopSnapshot, SearchLoop, Suggestion
from archsearch.server._index import CREATED_ATTR, SPEC_ATTR
from archsearch.server._spec import SearchSpec
from archsearch.server._stored_defaults import dev_if_unnamed, lora_as_launched, stored_candidate
from archsearch.server._studies import StudyManager
from archsearch.spaces import Candidate

UNNAMED = {"method": "dsir", "k": 100}
ARCH = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2}
LORA = {"mode": "dylora", "r_max": 4, "alpha": 8, "targets": ["query"]}


def launched(tmp_path: Path, spec: dict[str, Any]) -> tuple[str, optuna.Study, dict[str, Any]]:
    """``spec`` launched now: the storage URL, the study and its stored spec (to rewrite as an
    older version wrote it)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        m.launch(SearchSpec.from_dict(spec))
    finally:
        m.close()
    study = optuna.load_study(study_name=spec["name"], storage=url)
    return url, study, dict(study.user_attrs[SPEC_ATTR])


def first_grant(url: str, trainer: str) -> Any:
    """What a worker gets first from a server started on ``url``, and the trial it names."""
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        grant = m.acquire("w", (trainer,))
    finally:
        m.close()
    assert grant is not None
    study = optuna.load_study(study_name=grant.study_name, storage=url)
    return grant, study.trials[grant.trial_number]


def test_an_unnamed_target_is_dev_and_fingerprints_match_the_named_one() -> None:
    old = {"space": "bert", "architecture": ARCH, "data": {"task": "sst2", "selection": UNNAMED}}
    named = {**old, "data": {"task": "sst2", "selection": {**UNNAMED, "target": "dev"}}}
    assert stored_candidate(old).fingerprint() == Candidate.from_dict(named).fingerprint()
    test = {**old, "data": {"task": "sst2", "selection": {**UNNAMED, "target": "test"}}}
    assert stored_candidate(test).to_dict() == Candidate.from_dict(test).to_dict()  # kept
    assert dev_if_unnamed({"selection": {"method": "random", "size": 5}})["selection"] == {
        "method": "random",
        "size": 5,
    }


def test_an_old_studys_searched_dsir_value_still_trains_towards_dev(tmp_path: Path) -> None:
    searched = {"selection": [{**UNNAMED, "target": "test"}]}
    spec = {"name": "old", "space": "bert", "n_trials": 6, "data_space": searched}
    url, study, stored = launched(tmp_path, spec)
    assert stored["data_space"] == searched  # a launch now names the target
    study.set_user_attr(SPEC_ATTR, {**stored, "data_space": {"selection": [UNNAMED]}})
    study.set_user_attr(CREATED_ATTR, "2026-12-07T09:00:00+00:00")  # before the change
    grant, trial = first_grant(url, "bert")
    assert grant.candidate.data["selection"] == {**UNNAMED, "target": "dev"}
    assert trial.params["data.selection"] == "dsir k=100"  # the label Optuna knows


class DataLoop(SearchLoop):
    """A plugin loop that chooses the data itself (not through the spec's data_space)."""

    name = "test-data-loop"
    selection: ClassVar[dict[str, Any]] = {}

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        pass

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        arch = snapshot.space.sample(random.Random(len(snapshot.trials)))
        return [Suggestion(architecture=arch, data={"selection": DataLoop.selection})]


def test_a_loops_own_dsir_choice_in_a_new_study_gets_the_default_and_the_launch_check(
    tmp_path: Path,
) -> None:
    """A loop's DSIR selection without a target trained towards the dev split that scores the
    trials (what a launch refuses), as if the study were stored before the default changed."""
    LOOPS.register("test-data-loop", DataLoop)
    try:
        DataLoop.selection = UNNAMED
        spec = {"name": "new", "space": "bert", "n_trials": 3, "loop": "test-data-loop"}
        url, _, _ = launched(tmp_path, spec)
        grant, trial = first_grant(url, "bert")
        assert grant.candidate.data["selection"] == {**UNNAMED, "target": "test"}
        assert trial.user_attrs["candidate"]["data"]["selection"]["target"] == "test"
        DataLoop.selection = {**UNNAMED, "target": "dev"}
        m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
        try:
            while (g := m.acquire("w", ("bert",))) is not None:  # the prepared one first
                m.complete(g.lease_id, {"accuracy": 0.5}, {})
            h = m.get("new")
            reason = m.snapshot(h).completed_reason
        finally:
            m.close()
        assert h.state == "stopped"
        assert "data.selection.target: 'dev' is text of the dev split" in reason, reason
    finally:
        LOOPS.unregister("test-data-loop")


def test_the_frozen_default_of_the_studys_day_is_named() -> None:
    old = Candidate(space="lora", architecture={}, recipe={"lora": LORA})
    frozen = lora_as_launched(old, "2026-12-05T09:00:00+00:00").recipe["lora"]
    assert frozen == {**LORA, "frozen": True}
    assert lora_as_launched(old, "2026-12-06T12:00:00+00:00") is old  # after: as it is
    named = Candidate(space="lora", architecture={}, recipe={"lora": {**LORA, "frozen": False}})
    assert lora_as_launched(named, "2026-12-05T09:00:00+00:00") is named
    plain = Candidate(space="bert", architecture={"num_hidden_layers": 1})
    assert lora_as_launched(plain, "2026-12-05T09:00:00+00:00") is plain
    # plain LoRA has no frozen: it refuses one (every old plain-LoRA trial failed)
    lora = Candidate(space="lora", architecture={}, recipe={"lora": {**LORA, "mode": "lora"}})
    assert lora_as_launched(lora, "2026-12-05T09:00:00+00:00") is lora


def test_an_old_dylora_study_resumed_on_this_server_trains_frozen(tmp_path: Path) -> None:
    spec = {"name": "old", "space": "lora", "trainer": "lora", "n_trials": 3}
    url, study, stored = launched(tmp_path, spec)
    assert stored["recipe"]["lora"]["frozen"] is False  # a launch now names it
    del stored["recipe"]["lora"]  # as a launch before the change stored it
    study.set_user_attr(SPEC_ATTR, stored)
    study.set_user_attr(CREATED_ATTR, "2026-12-05T09:00:00+00:00")
    grant, trial = first_grant(url, "lora")
    assert grant.candidate.recipe["lora"]["frozen"] is True
    assert "frozen" not in trial.user_attrs["candidate"]["recipe"]["lora"]  # as stored
