"""A worker's life as the server sees it: a study it can never serve is refused at once with
the reason (not a silent wait), and a worker id that registers again while it holds leases is
a restarted worker whose trials are re-queued at once (not after the lease expires)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _procs import Proc, ServerProc, load_trials, table_spec, table_worker, wait_for, wait_study
from optuna.trial import TrialState

from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

# Without the fixes these waited forever: fail instead.
pytestmark = pytest.mark.timeout(120)

TABLE_CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")
BERT_CAPS = pb.WorkerCapabilities(trainers=["bert"], device="cpu")


def start_server(url: str) -> ArchsearchServer:
    # A lease far longer than any test: only a re-registration can end one early.
    srv = ArchsearchServer(
        ServerConfig(storage=url, port=0, lease_duration_s=120, heartbeat_interval_s=5)
    )
    srv.start()
    return srv


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 's.db'}"


@pytest.fixture
def server(url: str) -> Iterator[ArchsearchServer]:
    srv = start_server(url)
    yield srv
    srv.stop(0)


@pytest.fixture
def admin(server: ArchsearchServer) -> Iterator[SearchClient]:
    with SearchClient(server.address) as c:
        yield c


@pytest.fixture
def worker(server: ArchsearchServer) -> Iterator[WorkerClient]:
    with WorkerClient(server.address) as c:
        yield c


def refusal(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(ClientError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION, info.value
    return info.value.details


# ----------------------------------------------------------------------------- unservable


def test_a_completed_study_is_refused_with_its_reason(admin, worker) -> None:
    admin.launch(table_spec("flexi", 1))
    worker.register("w1", TABLE_CAPS)
    g = worker.acquire("w1", TABLE_CAPS, 5, study_name="flexi")
    assert g.has_trial
    worker.complete(g.lease.lease_id, {"accuracy": 0.5})
    assert admin.get_study("flexi").state == pb.STUDY_COMPLETED
    said = refusal(worker.acquire, "w2", TABLE_CAPS, 5, study_name="flexi")
    assert said == (
        "study flexi is completed (n_trials reached: 1 distinct candidates); nothing left to train"
    )
    # A worker that names no study waits for any study, as before: no trial, no error.
    assert not worker.acquire("w2", TABLE_CAPS, 0).has_trial


def test_a_stopped_studys_workers_wait_for_its_resume_while_its_running_trial_finishes(
    url, admin, worker
) -> None:
    """A stopped study is resumable: its ``--study`` workers exited 0 at a stop meant as a
    pause, and a fleet (SLURM, Kubernetes, Ray) took that as done for good."""
    admin.launch(table_spec("s", 4))
    worker.register("busy", TABLE_CAPS)
    held = worker.acquire("busy", TABLE_CAPS, 5, study_name="s")
    assert held.has_trial
    admin.stop("s")
    late = worker.acquire("late", TABLE_CAPS, 0.2, study_name="s")
    assert not late.has_trial
    assert late.waiting_because == (
        "study s is stopped; this worker waits for `archsearch resume s` (--idle-exit ends "
        "the wait)"
    )
    assert not worker.acquire("late", TABLE_CAPS, 0).has_trial  # no study named: waits
    assert worker.acquire("late", TABLE_CAPS, 0).waiting_because == ""
    # The worker mid-trial is not refused anything: it heartbeats and completes as usual.
    worker.heartbeat(held.lease.lease_id)
    done = worker.complete(held.lease.lease_id, {"accuracy": 0.75})
    assert done.state == pb.COMPLETE
    trial = load_trials(url, "s")[held.lease.trial_number]
    assert trial.state == TrialState.COMPLETE and trial.values == [0.75]
    admin.resume("s")  # the waiting worker is served again
    assert worker.acquire("late", TABLE_CAPS, 5, study_name="s").has_trial


def test_a_study_of_another_trainer_is_refused_with_the_flag_to_use(admin, worker) -> None:
    admin.launch(table_spec("q2", 3))
    worker.register("b1", BERT_CAPS)
    said = refusal(worker.acquire, "b1", BERT_CAPS, 5, study_name="q2")
    assert said == (
        "study q2 is trained by the table trainer; this worker runs bert "
        "(start it with --trainer table)"
    )
    assert not worker.acquire("b1", BERT_CAPS, 0).has_trial  # no study named: waits
    # A worker that has the trainer among others is served.
    both = pb.WorkerCapabilities(trainers=["bert", "table"], device="cpu")
    assert worker.acquire("b1", both, 5, study_name="q2").has_trial


def test_an_unknown_study_is_still_not_found(worker) -> None:
    with pytest.raises(ClientError) as info:
        worker.acquire("w", TABLE_CAPS, 0, study_name="nosuch")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "no archsearch study named 'nosuch'" in info.value.details


# ----------------------------------------------------------------------------- restarts


def test_a_worker_that_registers_again_gets_its_trial_back_at_once(url, admin, worker) -> None:
    admin.launch(table_spec("r", 6))
    worker.register("w", TABLE_CAPS)
    old = worker.acquire("w", TABLE_CAPS, 5)
    worker.register("other", TABLE_CAPS)
    kept = worker.acquire("other", TABLE_CAPS, 5)
    assert old.has_trial and kept.has_trial

    worker.register("w", TABLE_CAPS)  # the same id, from a new process

    trials = load_trials(url, "r")
    failed = trials[old.lease.trial_number]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"] == (
        "worker w restarted: it registered again while holding this lease"
    )
    # The same bookkeeping as an expired lease: a WAITING retry, counted as a failure.
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.system_attrs["retry_history"] == [old.lease.trial_number]
    assert retry.system_attrs["archsearch:failures"] == 1
    # The dead process's lease is refused; the new process gets the candidate right away.
    refusal(worker.heartbeat, old.lease.lease_id)
    again = worker.acquire("w", TABLE_CAPS, 5)
    assert again.has_trial and again.candidate_json == old.candidate_json
    assert again.lease.trial_number == retry.number
    # Another worker's lease is untouched, and so is a worker that re-registers holding none.
    worker.heartbeat(kept.lease.lease_id)
    worker.register("idle", TABLE_CAPS)
    worker.register("idle", TABLE_CAPS)
    worker.heartbeat(again.lease.lease_id)
    worker.heartbeat(kept.lease.lease_id)
    states = [t.state for t in load_trials(url, "r")]
    assert states.count(TrialState.FAIL) == 1


def test_a_restarted_worker_gets_a_lease_of_the_previous_server_back(url) -> None:
    first = start_server(url)
    try:
        with SearchClient(first.address) as admin, WorkerClient(first.address) as w:
            admin.launch(table_spec("p", 4))
            w.register("pod-0", TABLE_CAPS)
            old = w.acquire("pod-0", TABLE_CAPS, 5)
            assert old.has_trial
    finally:
        first.stop(0)
    second = start_server(url)  # the leases it finds come from the storage alone
    try:
        with WorkerClient(second.address) as w:
            w.register("pod-0", TABLE_CAPS)
            failed = load_trials(url, "p")[old.lease.trial_number]
            assert failed.state == TrialState.FAIL
            assert failed.user_attrs["fail_reason"].startswith("worker pod-0 restarted")
            again = w.acquire("pod-0", TABLE_CAPS, 5)
            assert again.has_trial and again.candidate_json == old.candidate_json
    finally:
        second.stop(0)


def test_a_worker_killed_mid_trial_and_restarted_gets_the_trial_back_at_once(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """SIGKILL (no hand-back), then the same ``--worker-id`` 1 s later, as a pod or a Ray
    actor restarts: its trial is re-queued when it registers, not after the 30 s lease."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    server = ServerProc(url, tmp_path / "server.log", lease=30, heartbeat=1).start()
    procs.append(server)
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("k", 2))
        slow = table_worker(server.address, tmp_path / "w1.log", 60.0, "--worker-id", "w")
        procs.append(slow.start())

        def running() -> list[pb.Trial]:
            return [t for t in admin.list_trials("k") if t.state == pb.RUNNING and t.worker_id]

        (held,) = wait_for(running, 60, "the worker to start a trial")
        slow.signal(signal.SIGKILL)
        slow.wait(10)
        killed_at = time.monotonic()
        fresh = table_worker(server.address, tmp_path / "w2.log", 0.0, "--worker-id", "w")
        procs.append(fresh.start())
        wait_study(admin, "k", 60, procs)
        took = time.monotonic() - killed_at
        trials = {t.number: t for t in admin.list_trials("k")}
    assert trials[held.number].state == pb.FAIL
    assert trials[held.number].fail_reason.startswith("worker w restarted")
    assert took < 25, f"the trial waited for its lease to expire ({took:.0f}s)"
    retried = [t for t in trials.values() if t.candidate_json == held.candidate_json]
    assert [t.state for t in retried] == [pb.FAIL, pb.COMPLETE]
