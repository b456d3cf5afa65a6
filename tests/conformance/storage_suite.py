"""The conformance suite every storage backend runs: the StudyManager's invariants on it.

A new backend (any SQLAlchemy URL Optuna's ``RDBStorage`` takes) adds a subclass of
:class:`StorageConformance` that provides a ``storage_url`` fixture yielding the URL of an empty
storage. ``tests/server/test_storage.py`` runs it on a SQLite file and on a fresh PostgreSQL
database (the parametrised ``storage_url`` fixture of ``tests/conftest.py``).

The invariants: launch, acquire, complete, fail, release and restart keep the storage the single
source of truth. Results are the trainer's; a restarted manager keeps results and live leases;
an expired lease fails its trial and re-queues the same candidate, a bounded number of times; a
released trial is re-queued without spending a retry; a report on a finished or unknown lease
is refused with a precise error and changes nothing; a name is launched once; a stopped study
hands out nothing new. The "training" is a lookup in the FlexiBERT-small SST-2 table, so every
value the storage holds can be checked against it. No gRPC: the manager is driven directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
from _procs import TABLE
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._errors import AlreadyExists, FailedPrecondition, NotFound
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import (
    FAILURES_ATTR,
    SPEC_ATTR,
    STATE_ATTR,
    Grant,
    StudyManager,
)
from archsearch.spaces import load_table

TRAINERS = ("table",)
OpenManager = Callable[..., StudyManager]

# The server silences these at import; pytest resets warning filters per test.
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning"),
]


def make_spec(
    name: str = "nas", n_trials: int = 10, loop: str = "random", **extra: Any
) -> SearchSpec:
    return SearchSpec.from_dict(
        {
            "name": name,
            "space": "flexibert-small",
            "trainer": "table",
            "n_trials": n_trials,
            "loop": loop,
            "space_options": {"table": str(TABLE)},
            **extra,
        }
    )


def train(grant: Grant) -> dict[str, float]:
    """The table trainer's answer for a grant's candidate."""
    score = load_table(str(TABLE)).score(grant.candidate.architecture, "sst2")
    assert score is not None, f"{grant.candidate.architecture} has no SST-2 score in the table"
    return {"accuracy": score}


def acquire(m: StudyManager) -> Grant:
    grant = m.acquire("w1", TRAINERS)
    assert grant is not None, "expected work to hand out"
    return grant


def run_to_end(m: StudyManager) -> int:
    """Acquires and completes trials until no work is left; returns how many it completed."""
    done = 0
    while (grant := m.acquire("w1", TRAINERS)) is not None:
        m.complete(grant.lease_id, train(grant), {"device": "cpu"})
        done += 1
    return done


def trials(m: StudyManager, name: str = "nas") -> list[FrozenTrial]:
    return m.trials(m.get(name))


def by_number(m: StudyManager, number: int, name: str = "nas") -> FrozenTrial:
    return next(t for t in trials(m, name) if t.number == number)


def snapshot(m: StudyManager) -> list[tuple[Any, ...]]:
    """Everything a refused report must leave unchanged."""
    return [
        (t.number, t.state, t.values, t.params, t.user_attrs, t.intermediate_values)
        for t in trials(m)
    ]


def expire(m: StudyManager, grant: Grant) -> None:
    """Waits past the grant's lease and reaps until its trial is failed.

    SQLite stores heartbeats with one-second resolution, so the lease may need up to a second
    more than its duration to look stale there; the loop is bounded either way.
    """
    time.sleep(m.lease_duration_s + 0.05)
    give_up = time.monotonic() + m.lease_duration_s + 3
    while True:
        m.reap_once()
        if by_number(m, grant.trial_number).state != TrialState.RUNNING:
            return
        assert time.monotonic() < give_up, f"lease of trial {grant.trial_number} never expired"
        time.sleep(0.1)


def retry_of(m: StudyManager, number: int) -> FrozenTrial | None:
    return next(
        (t for t in trials(m) if t.system_attrs.get("retry_history", [None])[-1] == number), None
    )


class StorageConformance:
    """What the StudyManager must keep on every storage backend. See the module docstring.

    Subclasses provide the ``storage_url`` fixture (an empty storage's URL).
    """

    @pytest.fixture
    def open_manager(self, storage_url: str) -> Iterator[OpenManager]:
        """Opens StudyManagers on the test's storage (no reaper thread); closes them all after."""
        opened: list[StudyManager] = []

        def _open(**kwargs: Any) -> StudyManager:
            m = StudyManager(storage_url, **kwargs)
            opened.append(m)
            return m

        yield _open
        for m in opened:
            m.close()

    @pytest.mark.parametrize("loop", ["random", "tpe"])
    def test_search_completes_with_table_values(
        self, open_manager: OpenManager, storage_url: str, loop: str
    ) -> None:
        m = open_manager()
        spec = make_spec(loop=loop)
        m.launch(spec)

        assert run_to_end(m) == 10
        assert m.get("nas").state == "completed"
        complete = trials(m)
        assert [t.state for t in complete] == [TrialState.COMPLETE] * 10
        table = load_table(str(TABLE))
        for t in complete:
            arch = t.user_attrs["candidate"]["architecture"]
            assert t.values == [table.score(arch, "sst2")]
            assert t.user_attrs["metrics"] == {"accuracy": t.values[0]}
            assert t.params  # the flattened candidate, readable in the dashboard

        # What optuna-dashboard sees: a plain Optuna study on the same URL.
        study = optuna.load_study(study_name="nas", storage=storage_url)
        assert study.metric_names == ["accuracy"]
        assert study.user_attrs[SPEC_ATTR] == spec.to_dict()
        assert study.user_attrs[STATE_ATTR] == "completed"
        assert SearchSpec.from_dict(study.user_attrs[SPEC_ATTR]) == spec
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 10
        assert study.best_value == max(t.values[0] for t in complete)

    def test_restart_keeps_results_and_leases(self, open_manager: OpenManager) -> None:
        n_trials = 6
        first = open_manager(lease_duration_s=60, heartbeat_interval_s=10)
        first.launch(make_spec(n_trials=n_trials))
        g1, g2, g3 = acquire(first), acquire(first), acquire(first)
        done_values, _ = first.complete(g1.lease_id, train(g1), {})
        first.close()

        second = open_manager(lease_duration_s=60, heartbeat_interval_s=10)
        assert second.get("nas").state == "running"
        done = by_number(second, g1.trial_number)
        assert done.state == TrialState.COMPLETE and done.values == done_values
        # The same report again is idempotent: same answer, nothing new.
        assert second.complete(g1.lease_id, train(g1), {})[0] == done_values
        # Leases granted before the restart still work.
        for g in (g2, g3):
            deadline, _ = second.heartbeat(g.lease_id)
            assert deadline > time.time() + 50
            assert second.complete(g.lease_id, train(g), {})[1] == TrialState.COMPLETE

        assert run_to_end(second) == n_trials - 3
        assert second.get("nas").state == "completed"
        final = trials(second)
        assert [t.state for t in final] == [TrialState.COMPLETE] * n_trials
        assert len({t.number for t in final}) == n_trials
        assert second.acquire("w1", TRAINERS) is None

    def test_expired_lease_fails_trial_and_requeues_candidate(
        self, open_manager: OpenManager
    ) -> None:
        m = open_manager(lease_duration_s=2, heartbeat_interval_s=1)
        m.launch(make_spec(n_trials=1))
        old = acquire(m)
        m.reap_once()  # a live lease is left alone
        assert by_number(m, old.trial_number).state == TrialState.RUNNING

        expire(m, old)
        failed = by_number(m, old.trial_number)
        assert failed.state == TrialState.FAIL
        retry = retry_of(m, old.trial_number)
        assert retry is not None and retry.state == TrialState.WAITING
        assert retry.params == failed.params
        assert retry.user_attrs["candidate"] == failed.user_attrs["candidate"]
        assert retry.system_attrs[FAILURES_ATTR] == 1

        before = snapshot(m)
        with pytest.raises(FailedPrecondition, match="expired"):
            m.complete(old.lease_id, train(old), {})
        with pytest.raises(FailedPrecondition):
            m.heartbeat(old.lease_id)
        with pytest.raises(FailedPrecondition):
            m.report(old.lease_id, 1, 0.5)
        assert snapshot(m) == before

        new = acquire(m)
        assert new.trial_number == retry.number
        assert new.lease_id != old.lease_id
        assert new.candidate == old.candidate
        values, state = m.complete(new.lease_id, train(new), {})
        assert state == TrialState.COMPLETE and values == list(train(old).values())
        assert m.get("nas").state == "completed"
        assert m.acquire("w1", TRAINERS) is None

    def test_retries_are_bounded(self, open_manager: OpenManager) -> None:
        m = open_manager(lease_duration_s=2, heartbeat_interval_s=1)
        m.launch(make_spec(n_trials=1, max_retries=1))
        first = acquire(m)
        expire(m, first)
        second = acquire(m)
        assert second.trial_number != first.trial_number
        assert second.candidate == first.candidate
        expire(m, second)

        final = trials(m)
        assert [t.state for t in final] == [TrialState.FAIL, TrialState.FAIL]
        assert final[0].params == final[1].params
        assert m.acquire("w1", TRAINERS) is None  # no third attempt
        assert len(trials(m)) == 2

    def test_released_trials_do_not_count_against_retries(self, open_manager: OpenManager) -> None:
        m = open_manager()
        m.launch(make_spec(n_trials=1, max_retries=1))
        g = acquire(m)
        candidate = g.candidate
        for _ in range(3):  # a worker stopping (SIGTERM) hands its lease back
            assert m.fail(g.lease_id, "worker stopping", retryable=False, released=True)
            retry = retry_of(m, g.trial_number)
            assert retry is not None and retry.state == TrialState.WAITING
            assert retry.system_attrs[FAILURES_ATTR] == 0
            g = acquire(m)
            assert g.trial_number == retry.number and g.candidate == candidate

        # The whole retry budget is still there ...
        assert m.fail(g.lease_id, "out of memory", retryable=True)
        retry = retry_of(m, g.trial_number)
        assert retry is not None and retry.system_attrs[FAILURES_ATTR] == 1
        g = acquire(m)  # ... and now it is spent.
        assert not m.fail(g.lease_id, "out of memory", retryable=True)
        assert m.acquire("w1", TRAINERS) is None
        final = trials(m)
        assert len(final) == 5  # the original, 3 hand-backs, 1 counted retry
        assert all(t.state == TrialState.FAIL and t.params == final[0].params for t in final)

    def test_a_retry_carries_what_the_loop_proposed_it_as(self, open_manager: OpenManager) -> None:
        # local-search marks each proposal with its kind and walk; a retry without them read
        # as no walk's start (and AutoDistil's retried job lost the student it was picked from)
        m = open_manager()
        m.launch(make_spec(n_trials=1, max_retries=1, loop="local-search"))
        g = acquire(m)
        first = next(t for t in trials(m) if t.number == g.trial_number)
        proposed = {k: v for k, v in first.system_attrs.items() if k.startswith("archsearch:lo")}
        assert "archsearch:local_search_run" in proposed
        assert m.fail(g.lease_id, "out of memory", retryable=True)
        retry = retry_of(m, g.trial_number)
        assert retry is not None
        assert {k: retry.system_attrs.get(k) for k in proposed} == proposed
        assert retry.system_attrs["archsearch:proposal_kind"] == "start"

    def test_a_name_is_launched_once(self, open_manager: OpenManager) -> None:
        first = open_manager()
        first.launch(make_spec(n_trials=2))
        with pytest.raises(AlreadyExists):
            first.launch(make_spec(n_trials=3))
        first.close()
        again = open_manager()  # the storage remembers it across a restart
        with pytest.raises(AlreadyExists):
            again.launch(make_spec(n_trials=3))
        assert again.get("nas").spec.n_trials == 2
        with pytest.raises(NotFound):
            again.get("no-such-study")

    def test_reports_on_a_finished_or_unknown_lease_change_nothing(
        self, open_manager: OpenManager
    ) -> None:
        m = open_manager()
        m.launch(make_spec(n_trials=2))
        g = acquire(m)
        values, state = m.complete(g.lease_id, train(g), {})
        assert state == TrialState.COMPLETE
        before = snapshot(m)
        with pytest.raises(FailedPrecondition):
            m.fail(g.lease_id, "too late", retryable=True)
        with pytest.raises(FailedPrecondition):
            m.report(g.lease_id, 1, 0.5)
        assert m.complete(g.lease_id, train(g), {}) == (values, state)  # idempotent
        for unknown in ("nonsense", "999999.1.x", f"{g.lease_id}x"):
            with pytest.raises((NotFound, FailedPrecondition)):
                m.heartbeat(unknown)
        assert snapshot(m) == before

    def test_a_stopped_study_hands_out_nothing_new(self, open_manager: OpenManager) -> None:
        m = open_manager()
        m.launch(make_spec(n_trials=4))
        g = acquire(m)
        m.stop("nas")
        assert m.acquire("w1", TRAINERS) is None
        # The leased trial still runs to its end and is stored.
        assert m.complete(g.lease_id, train(g), {})[1] == TrialState.COMPLETE
        m.close()
        again = open_manager()  # the stop is in the storage, not in the process
        assert again.get("nas").state == "stopped"
        assert again.acquire("w1", TRAINERS) is None
        states = [t.state for t in trials(again)]
        assert states.count(TrialState.COMPLETE) == 1
        assert TrialState.RUNNING not in states and TrialState.WAITING not in states
