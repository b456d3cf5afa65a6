"""A worker running other archsearch code than the server fails a candidate for good: the
candidate is re-queued once without counting, and that worker sits the study out while a
worker running the server's code could train it (``server/_other_code.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import optuna
import pytest
from _procs import table_spec
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._index import FAILURES_ATTR
from archsearch.server._source import code_label
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.server.client import SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

TRAINERS = ("table",)
OLD = "0.1.0+src.0123456789ab"


@pytest.fixture
def m(tmp_path: Path) -> Iterator[StudyManager]:
    manager = StudyManager(
        f"sqlite:///{tmp_path}/s.db", lease_duration_s=30, heartbeat_interval_s=5
    )
    yield manager
    manager.close()


def join(m: StudyManager, worker: str, source: str) -> None:
    """Registers ``worker`` with code label ``source`` and marks it connected."""
    m.register(worker, TRAINERS, "cpu", 0, "host", source=source)
    m._active[worker] = (time.monotonic(), TRAINERS, "")


def trials(m: StudyManager, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=m.rdb).get_trials(deepcopy=False)


def by_number(m: StudyManager, name: str, number: int) -> FrozenTrial:
    return next(t for t in trials(m, name) if t.number == number)


def test_old_workers_failure_is_reopened_once_and_it_sits_the_study_out(m) -> None:
    m.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    join(m, "old", OLD)
    join(m, "new", code_label())
    g = m.acquire("old", TRAINERS)
    assert g is not None
    # max_retries 0: counted, this failure would end the candidate
    assert m.fail(g.lease_id, "unknown selection method 'dsir'", retryable=False)
    failed = by_number(m, "s", g.trial_number)
    assert failed.state == TrialState.FAIL
    reason = failed.user_attrs["fail_reason"]
    assert reason.startswith("unknown selection method 'dsir' | worker old runs other")
    assert OLD in reason and code_label() in reason and "re-queued without counting" in reason
    waiting = [t for t in trials(m, "s") if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs[FAILURES_ATTR] == 0
    # the same report again gets the same answer, not "already failed"
    assert m.fail(g.lease_id, "unknown selection method 'dsir'", retryable=False)

    # the old worker sits the study out while the new one is connected ...
    assert m.acquire("old", TRAINERS) is None
    retry = m.acquire("new", TRAINERS)
    assert retry is not None and retry.trial_number == waiting[0].number
    # ... and the second failure for good counts, whoever reports it
    assert not m.fail(retry.lease_id, "unknown selection method 'dsir'", retryable=False)
    assert by_number(m, "s", retry.trial_number).user_attrs["fail_reason"] == (
        "unknown selection method 'dsir'"
    )
    assert not [t for t in trials(m, "s") if t.state == TrialState.WAITING]


@pytest.mark.parametrize("label", [code_label(), ""])
def test_a_failure_counts_as_reported_from_the_servers_code_or_an_unlabelled_client(
    m, label: str
) -> None:
    """An unlabelled worker is a client of the wire contract (or an archsearch from before
    labels): its trainers' verdicts stand."""
    m.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    join(m, "new", label)
    g = m.acquire("new", TRAINERS)
    assert g is not None
    assert not m.fail(g.lease_id, "a candidate this trainer cannot build", retryable=False)
    assert by_number(m, "s", g.trial_number).user_attrs["fail_reason"] == (
        "a candidate this trainer cannot build"
    )


def test_old_worker_alone_still_trains_and_second_failure_counts(m) -> None:
    """With no worker running the server's code, the old one is not set aside (the study
    would wait for ever); the reopened candidate's next failure counts."""
    m.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    join(m, "old", OLD)
    g = m.acquire("old", TRAINERS)
    assert g is not None
    assert m.fail(g.lease_id, "broken", retryable=False)
    assert OLD in by_number(m, "s", g.trial_number).user_attrs["fail_reason"]
    again = m.acquire("old", TRAINERS)
    assert again is not None  # the re-queued candidate, to the only worker there is
    assert not m.fail(again.lease_id, "broken", retryable=False)
    assert by_number(m, "s", again.trial_number).user_attrs["fail_reason"] == "broken"


def test_upgraded_worker_is_served_again(m) -> None:
    m.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    join(m, "w", OLD)
    join(m, "other", code_label())
    g = m.acquire("w", TRAINERS)
    assert g is not None
    assert m.fail(g.lease_id, "broken", retryable=False)
    assert m.acquire("w", TRAINERS) is None
    join(m, "w", code_label())  # upgraded and restarted
    assert m.acquire("w", TRAINERS) is not None


def test_a_set_aside_worker_serves_other_studies(m) -> None:
    m.launch(SearchSpec.from_dict(table_spec("a", 5, max_retries=0)))
    m.launch(SearchSpec.from_dict(table_spec("b", 5, max_retries=0)))
    join(m, "old", OLD)
    join(m, "new", code_label())
    g = m.acquire("old", TRAINERS, study_name="a")
    assert g is not None and g.study_name == "a"
    assert m.fail(g.lease_id, "broken", retryable=False)
    other = m.acquire("old", TRAINERS)
    assert other is not None and other.study_name == "b"


def test_the_second_opinion_comes_from_the_servers_code(m) -> None:
    """Another worker of the same old code took the re-queued candidate first, and its
    failure counted: the candidate was lost while the upgraded worker stood idle."""
    m.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    for worker, label in (("old1", OLD), ("old2", OLD), ("new", code_label())):
        join(m, worker, label)
    g = m.acquire("old1", TRAINERS)
    assert g is not None and m.fail(g.lease_id, "unknown method", retryable=False)
    assert m.acquire("old2", TRAINERS) is None  # its code sits the study out
    retry = m.acquire("new", TRAINERS)
    assert (
        retry is not None and "requeued_because" in by_number(m, "s", retry.trial_number).user_attrs
    )


def test_a_cancel_is_the_users_stop_not_the_candidates_verdict(m) -> None:
    """With an old worker, `stop --cancel-running` was taken for a failure to re-queue: the
    cancel mark was lost, the worker set aside, and resume ran the trial again."""
    m.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    join(m, "old", OLD)
    join(m, "new", code_label())
    g = m.acquire("old", TRAINERS)
    assert g is not None
    m.stop("s", cancel_running=True)
    cancel = "cancelled: the study was stopped with --cancel-running"
    assert not m.fail(g.lease_id, cancel, retryable=False)
    trial = by_number(m, "s", g.trial_number)
    assert trial.user_attrs["fail_reason"] == cancel and trial.user_attrs["cancelled"] is True
    m.resume("s")
    assert m.acquire("old", TRAINERS) is not None  # not set aside for the user's cancel
    assert not [t for t in trials(m, "s") if "requeued_because" in t.user_attrs]


def test_a_failure_whose_write_failed_keeps_its_second_opinion(m) -> None:
    """The second opinion was recorded before the failure was stored: the worker's retried
    report, after the storage failed the first, counted, and the candidate was lost."""
    m.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    join(m, "old", OLD)
    join(m, "new", code_label())
    g = m.acquire("old", TRAINERS)
    assert g is not None
    real = m.outcomes.writer.submit
    failed_once: list[bool] = []

    def flaky(op: Any, **kw: Any) -> Future[Any]:
        if not failed_once:
            failed_once.append(True)
            broken: Future[Any] = Future()
            broken.set_exception(OSError("database is locked"))
            return broken
        return real(op, **kw)

    m.outcomes.writer.submit = flaky
    with pytest.raises(OSError):
        m.fail(g.lease_id, "unknown method", retryable=False)
    assert m.fail(g.lease_id, "unknown method", retryable=False)  # re-queued, not counted
    assert [t.state for t in trials(m, "s")].count(TrialState.WAITING) == 1


def test_a_deleted_studys_memory_does_not_reach_the_next_launch(m) -> None:
    """The next launch reuses a deleted study's storage id: it inherited its set-aside
    workers and second opinions."""
    m.launch(SearchSpec.from_dict(table_spec("s", 3, max_retries=0, seed=1)))
    join(m, "old", OLD)
    join(m, "new", code_label())
    g = m.acquire("old", TRAINERS)
    assert g is not None and m.fail(g.lease_id, "x", retryable=False)
    first_id = m.get("s").study_id
    m.stop("s")
    m.delete("s")
    m.launch(SearchSpec.from_dict(table_spec("t", 3, max_retries=0, seed=1)))
    assert m.get("t").study_id == first_id
    again = m.acquire("old", TRAINERS)
    assert again is not None  # not set aside in a study it never touched
    assert m.fail(again.lease_id, "x", retryable=False)  # its first failure here: reopened


def test_a_set_aside_study_worker_is_told_why_it_waits(sqlite_server: Any) -> None:
    srv = sqlite_server()
    old = pb.WorkerCapabilities(trainers=["table"], source=OLD)
    new = pb.WorkerCapabilities(trainers=["table"], source=code_label())
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        admin.launch(table_spec("s", 5, max_retries=0))
        worker.register("old", old)
        worker.register("new", new)
        lease = worker.acquire("old", old, 5, study_name="s").lease
        worker.fail(lease.lease_id, "unknown method", False)
        worker.acquire("new", new, 0)  # connected
        answer = worker.acquire("old", old, 0.2, study_name="s")
    assert not answer.has_trial
    assert answer.waiting_because.startswith(f"this worker runs other archsearch code ({OLD})")


def test_a_worker_met_before_a_restart_is_judged_by_its_leases_label(tmp_path: Path) -> None:
    """A worker registers once: mid-trial across a server restart it was unknown to the new
    server, and its failure for good counted, whatever code it ran."""
    url = f"sqlite:///{tmp_path}/r.db"
    first = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    first.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    join(first, "old", OLD)
    g = first.acquire("old", TRAINERS)
    assert g is not None
    first.close()
    again = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        assert again.directory.source_of("old") is None  # not met by this server
        assert again.fail(g.lease_id, "unknown method", retryable=False)  # reopened
        stored = by_number(again, "s", g.trial_number)
        assert stored.user_attrs["worker_code"] == OLD and OLD in stored.user_attrs["fail_reason"]
    finally:
        again.close()


def test_a_regranted_lease_does_not_keep_the_last_holders_label(tmp_path: Path) -> None:
    """The label was written only when known: a trial taken back from an old worker and
    leased to an unlabelled one kept the old label, and after a restart the unlabelled
    worker's failure was reopened in the old code's name."""
    url = f"sqlite:///{tmp_path}/g.db"
    first = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    first.launch(SearchSpec.from_dict(table_spec("s", 5, max_retries=0)))
    join(first, "old", OLD)
    join(first, "anon", "")
    g = first.acquire("old", TRAINERS)
    assert g is not None
    h = first.get("s")
    live = next(lt for lt in h.index.live.values() if lt.lease_id == g.lease_id)
    first.dispatcher._take_back(h, live)  # old's call ended before it got the lease
    again = first.acquire("anon", TRAINERS)
    assert again is not None and again.trial_number == g.trial_number
    first.close()
    restarted = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    try:
        assert not restarted.fail(again.lease_id, "unknown method", retryable=False)
        trial = by_number(restarted, "s", again.trial_number)
        assert trial.user_attrs["worker_code"] == ""
        assert trial.user_attrs["fail_reason"] == "unknown method"
    finally:
        restarted.close()
