"""The study lock is never held while the database works on a worker's report (issue 16).

The soak's profile (``benchmarks/soak.py --py-spy``) showed acquires and completions waiting on
the study lock while intermediate reports held it across two transactions of their own (and
SQLite's busy waits behind the writer's batch). Here another connection holds SQLite's write
lock, so a report's write cannot commit; meanwhile the study lock must stay free.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from archsearch.server._errors import FailedPrecondition
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning"),
]

TABLE = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "flexibert-small"
).resolve() / "dataset_small_sst2.json"


def _spec(name: str) -> SearchSpec:
    return SearchSpec.from_dict(
        {
            "name": name,
            "space": "flexibert-small",
            "trainer": "table",
            "n_trials": 5,
            "loop": "random",
            "space_options": {"table": str(TABLE)},
        }
    )


def _waiting_on_the_database(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside a database call or waiting for a queued write."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "result" and code.co_filename.endswith("_base.py"):
            return True  # Future.result: a queued write
        if "sqlalchemy" in code.co_filename:
            return True
        frame = frame.f_back
    return False


def test_a_report_waiting_for_its_write_leaves_the_study_lock_free(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    m = StudyManager(f"sqlite:///{db}", lease_duration_s=60, heartbeat_interval_s=5)
    try:
        m.launch(_spec("r"))
        h = m.get("r")
        grant = m.acquire("w", ("table",), "r", 0)
        assert grant is not None
        blocker = sqlite3.connect(db, timeout=60, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # SQLite's write lock: no other write commits now
        answers: list[Any] = []
        report = threading.Thread(
            target=lambda: answers.append(m.report(grant.lease_id, 3, 0.25)), daemon=True
        )
        try:
            report.start()
            deadline = time.monotonic() + 30
            while not _waiting_on_the_database(report) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _waiting_on_the_database(report), "the report never reached the database"
            time.sleep(0.2)  # well inside the write, on every code path
            assert report.is_alive() and not answers  # its write cannot commit yet
            free = h.lock.acquire(timeout=5)
            if free:
                h.lock.release()
            assert free, "the report holds the study lock while its write waits"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        report.join(30)
        assert answers and answers[0][0] is False  # not pruned (no pruner)
        fresh = optuna.storages.RDBStorage(f"sqlite:///{db}")
        trial = optuna.load_study(study_name="r", storage=fresh).trials[grant.trial_number]
        assert trial.intermediate_values == {3: 0.25}
        fresh.engine.dispose()
        # The trial finished: a report about it is refused, and nothing is stored.
        m.complete(grant.lease_id, {"accuracy": 0.5}, {})
        with pytest.raises(FailedPrecondition):
            m.report(grant.lease_id, 4, 0.5)
        fresh = optuna.storages.RDBStorage(f"sqlite:///{db}")
        trial = optuna.load_study(study_name="r", storage=fresh).trials[grant.trial_number]
        assert trial.state == TrialState.COMPLETE and trial.intermediate_values == {3: 0.25}
        fresh.engine.dispose()
    finally:
        m.close()


def test_a_failure_waiting_for_its_write_leaves_the_study_lock_free(tmp_path: Path) -> None:
    """FailTrial held the study lock across three transactions (reason, state, re-queue): 15%
    of the soak's profile at 200 workers. Its state and reason are now one queued write made
    without the lock; a repeated report meanwhile gets the same answer once the re-queue is
    done, and the candidate is re-queued once."""
    db = tmp_path / "f.db"
    m = StudyManager(f"sqlite:///{db}", lease_duration_s=60, heartbeat_interval_s=5)
    try:
        m.launch(_spec("f"))
        h = m.get("f")
        grant = m.acquire("w", ("table",), "f", 0)
        assert grant is not None
        blocker = sqlite3.connect(db, timeout=60, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        answers: list[Any] = []

        def fail() -> None:
            answers.append(m.fail(grant.lease_id, "out of memory", retryable=True))

        first = threading.Thread(target=fail, daemon=True)
        again = threading.Thread(target=fail, daemon=True)
        try:
            first.start()
            deadline = time.monotonic() + 30
            while not _waiting_on_the_database(first) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _waiting_on_the_database(first), "the failure never reached the database"
            time.sleep(0.2)
            assert first.is_alive() and not answers
            free = h.lock.acquire(timeout=5)
            if free:
                h.lock.release()
            assert free, "the failure holds the study lock while its write waits"
            again.start()  # the same report, while the first is still being stored
            time.sleep(0.2)
            assert again.is_alive() and not answers
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        first.join(30)
        again.join(30)
        assert answers == [True, True]  # re-queued, and the repeat says so too
        fresh = optuna.storages.RDBStorage(f"sqlite:///{db}")
        trials = optuna.load_study(study_name="f", storage=fresh).trials
        failed = trials[grant.trial_number]
        assert failed.state == TrialState.FAIL
        assert failed.user_attrs["fail_reason"] == "out of memory"
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        assert len(waiting) == 1 and waiting[0].params == failed.params
        assert waiting[0].system_attrs["retry_history"] == [grant.trial_number]
        fresh.engine.dispose()
        assert not h.index.finishing and grant.trial_number not in {
            live.number for live in h.index.live.values()
        }
    finally:
        m.close()


def test_asking_for_waiting_trials_reads_them_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Study.ask`` looks for WAITING trials on every ask; through Optuna's cache that reloaded
    every leased and prepared trial of the study (the soak's profile at 200 workers). The read
    of WAITING trials reads those alone, and a re-queued candidate is still the next one out."""
    m = StudyManager(f"sqlite:///{tmp_path / 'w.db'}", lease_duration_s=60, heartbeat_interval_s=5)
    try:
        m.launch(_spec("w"))
        h = m.get("w")
        grants = [m.acquire(f"w{i}", ("table",), "w", 0) for i in range(3)]
        assert all(g is not None for g in grants)
        first = grants[0]
        assert first is not None
        assert m.fail(first.lease_id, "out of memory", retryable=True)  # a WAITING copy
        reloads: list[Any] = []
        real = m.rdb._get_trials

        def counted(*args: Any, **kwargs: Any) -> Any:
            reloads.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(m.rdb, "_get_trials", counted)
        waiting = m.storage.get_all_trials(h.study_id, deepcopy=False, states=(TrialState.WAITING,))
        assert reloads == []  # no reload of the study's RUNNING trials
        assert [t.state for t in waiting] == [TrialState.WAITING]
        assert waiting[0].system_attrs["retry_history"] == [first.trial_number]
        assert waiting[0].params == m.trials(h)[first.trial_number].params
        again = m.acquire("w9", ("table",), "w", 0)  # Optuna's ask pops it first
        assert again is not None
        assert again.candidate.architecture == first.candidate.architecture
        assert m.storage.get_all_trials(h.study_id, states=(TrialState.WAITING,)) == []
    finally:
        m.close()
