"""A DyLoRA study created before ``frozen``'s default changed (2026-12-06 11:58 UTC) trains its
new trials frozen, as it trained its first ones (``server/_spec_data.py: lora_as_launched``).

Found by upgrading: an old study resumed after the change trained its new trials unfrozen,
its candidates reading the same as the old ones.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from archsearch.server._index import CREATED_ATTR, SPEC_ATTR
from archsearch.server._spec import SearchSpec
from archsearch.server._spec_data import lora_as_launched
from archsearch.server._studies import StudyManager
from archsearch.spaces import Candidate

LORA = {"mode": "dylora", "r_max": 4, "alpha": 8, "targets": ["query"]}


def test_the_default_of_the_studys_day_is_named() -> None:
    old = Candidate(space="lora", architecture={}, recipe={"lora": LORA})
    frozen = lora_as_launched(old, "2026-12-05T09:00:00+00:00").recipe["lora"]
    assert frozen == {**LORA, "frozen": True}
    assert lora_as_launched(old, "2026-12-06T12:00:00+00:00") is old  # after: as it is
    named = Candidate(space="lora", architecture={}, recipe={"lora": {**LORA, "frozen": False}})
    assert lora_as_launched(named, "2026-12-05T09:00:00+00:00") is named
    plain = Candidate(space="bert", architecture={"num_hidden_layers": 1})
    assert lora_as_launched(plain, "2026-12-05T09:00:00+00:00") is plain


def test_an_old_study_resumed_on_this_server_trains_frozen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = {"name": "old", "space": "lora", "trainer": "lora", "n_trials": 3}
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        m.launch(SearchSpec.from_dict(spec))
    finally:
        m.close()
    study = optuna.load_study(study_name="old", storage=url)
    stored = dict(study.user_attrs[SPEC_ATTR])
    assert stored["recipe"]["lora"]["frozen"] is False  # a launch now names it
    del stored["recipe"]["lora"]  # as a launch before the change stored it
    study.set_user_attr(SPEC_ATTR, stored)
    study.set_user_attr(CREATED_ATTR, "2026-12-05T09:00:00+00:00")
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        grant = m.acquire("w", ("lora",))
        assert grant is not None and grant.candidate.recipe["lora"]["frozen"] is True
        trial = optuna.load_study(study_name="old", storage=url).trials[grant.trial_number]
        assert "frozen" not in trial.user_attrs["candidate"]["recipe"]["lora"]  # as stored
    finally:
        m.close()
