"""A study stored before DSIR's default target was named keeps meaning the dev split it trained
on (``server/_spec_data.py: dev_if_unnamed, stored_candidate``).

Found by resuming a joint data search of an older version: the same label and Optuna choice
("dsir k=500") then selected towards the test text, and an old fixed-data study's earlier
candidates no longer matched new ones (their fingerprints lacked the target), so a repeat was
trained again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from archsearch.server._index import SPEC_ATTR
from archsearch.server._spec import SearchSpec
from archsearch.server._spec_data import dev_if_unnamed, stored_candidate
from archsearch.server._studies import StudyManager
from archsearch.spaces import Candidate

UNNAMED = {"method": "dsir", "k": 100}
ARCH = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2}


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


def _old_study(tmp_path: Path) -> str:
    """A joint data search launched now, its stored spec rewritten as an older version wrote
    it (data_space values without a target)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    spec: dict[str, Any] = {
        "name": "old",
        "space": "bert",
        "n_trials": 6,
        "data_space": {"selection": [{**UNNAMED, "target": "test"}]},
    }
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        m.launch(SearchSpec.from_dict(spec))
    finally:
        m.close()
    study = optuna.load_study(study_name="old", storage=url)
    stored = dict(study.user_attrs[SPEC_ATTR])
    assert stored["data_space"] == {"selection": [{**UNNAMED, "target": "test"}]}
    stored["data_space"] = {"selection": [UNNAMED]}
    study.set_user_attr(SPEC_ATTR, stored)
    return url


def test_an_old_studys_searched_dsir_value_still_trains_towards_dev(tmp_path: Path) -> None:
    url = _old_study(tmp_path)
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        grant = m.acquire("w", ("bert",))
        assert grant is not None
        assert grant.candidate.data["selection"] == {**UNNAMED, "target": "dev"}
        trial = optuna.load_study(study_name="old", storage=url).trials[grant.trial_number]
        assert trial.params["data.selection"] == "dsir k=100"  # the label Optuna knows
    finally:
        m.close()
