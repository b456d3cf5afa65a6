"""Real server and worker processes on 127.0.0.1: the whole service, and its faults."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from _procs import (
    TABLE,
    ServerProc,
    candidate_root,
    load_trials,
    table_spec,
    table_worker,
    wait_for,
    wait_study,
)
from optuna.trial import TrialState

from archsearch.server.client import SearchClient
from archsearch.spaces import load_table
from archsearch.v1 import archsearch_pb2 as pb


def _assert_each_candidate_completed_once(trials, n_trials: int) -> None:
    """n_trials distinct candidates, each trained to completion once; repeats (a result
    reused, ``duplicate_of``) are recorded besides and are not counted."""
    trained = [t for t in trials if "duplicate_of" not in t.user_attrs]
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    roots = Counter(candidate_root(t) for t in complete)
    assert len(complete) == n_trials, Counter(t.state.name for t in trials)
    assert all(c == 1 for c in roots.values()), roots  # nothing completed twice
    originals = [t for t in trained if "failed_trial" not in t.system_attrs]
    assert len(originals) == n_trials  # every candidate of the budget, once
    assert len({t.user_attrs["arch"] for t in complete}) == n_trials  # distinct
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("fail_reason"), t.number


def test_thirty_trials_four_table_workers(tmp_path: Path, procs) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log").start()
    procs.append(server)
    for i in range(4):
        procs.append(table_worker(server.address, tmp_path / f"w{i}.log", 0.02).start())
    with SearchClient(server.address) as client:
        client.launch(table_spec("thirty", 30, loop="tpe"))
        study = wait_study(client, "thirty", 120, procs)
        trials = client.list_trials("thirty", page_size=7)  # paging across 5 pages
    assert study.n_complete >= 30 and study.n_fail == 0  # 30 distinct, and any repeats
    assert [t.number for t in trials] == list(range(len(trials)))
    table = load_table(TABLE)
    import json

    for t in trials:
        cand = json.loads(t.candidate_json)
        assert t.state == pb.COMPLETE
        assert t.values[0] == pytest.approx(table.score(cand["architecture"], "sst2"), abs=0)
        assert t.metrics["accuracy"] == t.values[0]
    workers_used = {t.worker_id for t in trials}
    assert len(workers_used) >= 2  # the work was shared
    _assert_each_candidate_completed_once(load_trials(storage, "thirty"), 30)


def test_sigkilled_worker_trial_is_requeued_and_finished_elsewhere(tmp_path: Path, procs) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log", lease=3, heartbeat=1).start()
    procs.append(server)
    victim = table_worker(
        server.address, tmp_path / "victim.log", 30.0, "--worker-id", "victim"
    ).start()
    procs.append(victim)
    with SearchClient(server.address) as client:
        client.launch(table_spec("killed", 4))
        running = wait_for(
            lambda: [
                t for t in client.list_trials("killed") if t.state == pb.RUNNING and t.worker_id
            ],
            60,
            "the victim to start a trial",
        )
        assert running[0].worker_id == "victim"
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        procs.append(
            table_worker(
                server.address, tmp_path / "rescuer.log", 0.05, "--worker-id", "rescuer"
            ).start()
        )
        wait_study(client, "killed", 90, procs)
        assert time.monotonic() - killed_at >= 2.5  # only the expired lease freed the trial
    trials = load_trials(storage, "killed")
    lost = next(t for t in trials if t.number == running[0].number)
    assert lost.state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == lost.number)
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["worker"] == "rescuer"
    assert retry.params == lost.params
    assert retry.user_attrs["candidate"] == lost.user_attrs["candidate"]
    _assert_each_candidate_completed_once(trials, 4)


def test_sigterm_hands_the_lease_back_at_once(tmp_path: Path, procs) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    # A long lease: only the hand-back can explain a quick re-queue.
    server = ServerProc(storage, tmp_path / "server.log", lease=120, heartbeat=1).start()
    procs.append(server)
    worker = table_worker(server.address, tmp_path / "w.log", 60.0, "--worker-id", "polite").start()
    procs.append(worker)
    with SearchClient(server.address) as client:
        client.launch(table_spec("handback", 2))
        running = wait_for(
            lambda: [
                t for t in client.list_trials("handback") if t.state == pb.RUNNING and t.worker_id
            ],
            60,
            "a running trial",
        )
        t0 = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        waiting = wait_for(
            lambda: [t for t in client.list_trials("handback") if t.state == pb.WAITING],
            10,
            "the re-queued candidate",
        )
        assert time.monotonic() - t0 < 10
        released = next(t for t in client.list_trials("handback") if t.number == running[0].number)
        assert released.state == pb.FAIL
        assert "SIGTERM" in released.fail_reason
        assert waiting[0].candidate_json == released.candidate_json
        # Handing back does not use up the retry budget.
        trials = load_trials(storage, "handback")
        retry = next(t for t in trials if t.number == waiting[0].number)
        assert retry.system_attrs["archsearch:failures"] == 0


def test_server_sigkill_and_restart_loses_nothing(tmp_path: Path, procs) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    log = tmp_path / "server.log"
    server = ServerProc(storage, log, lease=20, heartbeat=1).start()
    procs.append(server)
    for i in range(3):
        procs.append(table_worker(server.address, tmp_path / f"w{i}.log", 0.3).start())
    n = 24
    with SearchClient(server.address) as client:
        client.launch(table_spec("restart", n, loop="tpe"))
        wait_for(lambda: client.get_study("restart").n_complete >= 6, 60, "6 completed trials")
    before = {
        t.number: t.values
        for t in load_trials(storage, "restart")
        if t.state == TrialState.COMPLETE
    }
    server.signal(signal.SIGKILL)
    server.wait(10)
    time.sleep(2)  # workers now see UNAVAILABLE and back off
    restarted = ServerProc(storage, log, port=server.port, lease=20, heartbeat=1).start()
    procs.append(restarted)
    with SearchClient(restarted.address) as client:
        wait_study(client, "restart", 120, procs)
    trials = load_trials(storage, "restart")
    after = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    assert all(after[k] == v for k, v in before.items())  # no completed result lost
    _assert_each_candidate_completed_once(trials, n)
    assert all(p.alive() for p in procs[1:4])  # the workers reconnected by themselves
    assert sum("UNAVAILABLE" in p.output() for p in procs[1:4]) >= 1


def test_result_finished_while_the_server_was_down_is_kept(tmp_path: Path, procs) -> None:
    """The worker finishes training while the server is down (SIGKILL), for longer than the
    lease; the restarted server gives the lease a grace of one lease duration from its start
    and the worker heartbeats until its result is acknowledged: the result is stored, and
    nothing is retrained."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    log = tmp_path / "server.log"
    server = ServerProc(storage, log, lease=4, heartbeat=1).start()
    procs.append(server)
    worker = table_worker(server.address, tmp_path / "w.log", 4.0, "--worker-id", "finisher")
    procs.append(worker.start())
    with SearchClient(server.address) as client:
        client.launch(table_spec("outage", 1))
        wait_for(
            lambda: [t for t in client.list_trials("outage") if t.worker_id == "finisher"],
            60,
            "the worker to start its trial",
        )
    server.signal(signal.SIGKILL)
    server.wait(10)
    killed_at = time.monotonic()
    wait_for(lambda: "complete: UNAVAILABLE" in worker.output(), 30, "training to end")
    time.sleep(max(0.0, killed_at + 6 - time.monotonic()))  # down longer than the lease
    restarted = ServerProc(storage, log, port=server.port, lease=4, heartbeat=1).start()
    procs.append(restarted)
    with SearchClient(restarted.address) as client:
        wait_study(client, "outage", 60, procs)
    trials = load_trials(storage, "outage")
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # no FAIL, no retry
    assert trials[0].user_attrs["worker"] == "finisher"
    out = worker.output()
    assert "completion refused" not in out
    assert "trial outage#0 complete" in out


def test_sigterm_while_the_server_is_down_exits_within_the_grace(tmp_path: Path, procs) -> None:
    """SIGTERM while the server is unreachable: the worker tries to hand its trial back for
    ``--stop-grace`` seconds, sleeping between attempts (a few log lines, no busy loop), and
    exits."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log", lease=60, heartbeat=1).start()
    procs.append(server)
    worker = table_worker(
        server.address, tmp_path / "w.log", 60.0, "--worker-id", "stuck", "--stop-grace", "2"
    )
    procs.append(worker.start())
    with SearchClient(server.address) as client:
        client.launch(table_spec("down", 1))
        wait_for(
            lambda: [t for t in client.list_trials("down") if t.worker_id == "stuck"],
            60,
            "the worker to start its trial",
        )
    server.signal(signal.SIGKILL)
    server.wait(10)
    time.sleep(1.5)  # a heartbeat or two fail
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert time.monotonic() - t0 < 2 + 8  # the grace, plus a margin for a loaded machine
    lines = worker.output().splitlines()
    assert len(lines) < 50, lines[-20:]
    assert any("handing back" in line for line in lines)
