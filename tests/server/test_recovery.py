"""Restart recovery of trials the previous server left half-made."""

from __future__ import annotations

from pathlib import Path

import optuna
from _procs import TABLE, table_spec
from optuna.trial import TrialState

from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.spaces import load_table


def _run_to_completion(m: StudyManager, name: str) -> None:
    table = load_table(TABLE)
    while (g := m.acquire("w", ("table",))) is not None:
        m.complete(g.lease_id, {"accuracy": table.score(g.candidate.architecture, "sst2")}, {})
    assert m.get(name).state == "completed"


def test_trial_killed_before_its_candidate_was_stored(tmp_path: Path) -> None:
    """A server killed between creating a trial and storing its candidate leaves a RUNNING
    trial with parameters only. The next server re-queues it, rebuilds the candidate from the
    parameters, and the study completes with every trial finished."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    h = m.launch(SearchSpec.from_dict(table_spec("r", 4)))
    # What a crash inside _prepare leaves: Optuna's ask and suggest ran, nothing else did.
    orphan = h.study.ask()
    h.space.suggest(orphan)
    m.close()

    m2 = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        _run_to_completion(m2, "r")
        trials = m2.trials(m2.get("r"))
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert [t.number for t in failed] == [orphan.number]
        retry = next(t for t in trials if t.system_attrs.get("failed_trial") == orphan.number)
        assert retry.state == TrialState.COMPLETE and retry.params == orphan.params
        assert "candidate" in retry.user_attrs
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    finally:
        m2.close()


def test_prepared_candidates_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    m.launch(SearchSpec.from_dict(table_spec("p", 3)))
    g = m.acquire("w", ("table",))
    assert g is not None
    m.complete(g.lease_id, {"accuracy": 0.8}, {})  # prepares the next candidate
    assert len(m.get("p").index.pool) == 1
    prepared = m.get("p").index.pool[0]
    m.close()
    m2 = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        assert list(m2.get("p").index.pool) == [prepared]  # adopted, not failed
        _run_to_completion(m2, "p")
        states = [t.state for t in optuna.load_study(study_name="p", storage=url).trials]
        assert states == [TrialState.COMPLETE] * 3
    finally:
        m2.close()
