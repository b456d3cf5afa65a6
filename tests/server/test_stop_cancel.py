"""`archsearch stop --cancel-running`: the running trials end too. Their workers learn it at
the next heartbeat, stop training, and report the trial failed ("cancelled"); it is not
retried, the worker goes on to other work, and a restarted server remembers the cancel. A
plain `stop` still lets running trials finish."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _procs import Proc, ServerProc, table_spec, table_worker, wait_for

from archsearch.server import cli
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

pytestmark = pytest.mark.timeout(180)
CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


def test_heartbeats_say_stop_only_after_a_cancel_and_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    srv = ArchsearchServer(ServerConfig(storage=url, port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
            admin.launch(table_spec("s", 4))
            worker.register("w", CAPS)
            lease = worker.acquire("w", CAPS, 5).lease
            assert not worker.heartbeat(lease.lease_id).should_stop
            admin.stop("s")  # a plain stop: the running trial goes on
            assert not worker.heartbeat(lease.lease_id).should_stop
            study = admin.stop("s", cancel_running=True)  # a stopped study, cancelled later
            assert study.state == pb.STUDY_STOPPED and study.n_running == 1
            assert worker.heartbeat(lease.lease_id).should_stop
    finally:
        srv.stop(0)
    srv = ArchsearchServer(ServerConfig(storage=url, port=0))
    srv.start()
    try:
        with WorkerClient(srv.address) as worker:
            assert worker.heartbeat(lease.lease_id).should_stop
    finally:
        srv.stop(0)


def test_a_cancelled_trial_stops_on_its_worker_and_is_not_retried(
    tmp_path: Path, procs: list[Proc], capsys: pytest.CaptureFixture[str]
) -> None:
    server = ServerProc(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "server.log", heartbeat=1)
    procs.append(server.start())
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("c", 3))
        admin.launch(table_spec("other", 1))
        # each trial would take 120 s: only a cancel ends it early
        worker = table_worker(
            server.address, tmp_path / "w.log", 120.0, "--study", "c", "--idle-exit", "4"
        )
        procs.append(worker.start())

        def running() -> list[pb.Trial]:
            return [t for t in admin.list_trials("c") if t.state == pb.RUNNING and t.worker_id]

        (held,) = wait_for(running, 60, "the worker to start a trial")
        assert cli.main(["stop", "c", "--cancel-running", "--server", server.address]) == 0
        said = capsys.readouterr().out
        assert "1 running trial(s) are told to stop at their next heartbeat" in said
        cancelled_at = time.monotonic()

        def ended() -> pb.Trial | None:
            t = admin.list_trials("c")[held.number]
            return t if t.state == pb.FAIL else None

        trial = wait_for(ended, 60, "the cancelled trial to end")
        assert time.monotonic() - cancelled_at < 30, "the trial ran on after the cancel"
        assert trial.fail_reason.startswith("cancelled: the study was stopped")
        study = admin.get_study("c")
        assert study.n_running == 0 and study.n_waiting == 0 and study.n_complete == 0
        assert len(admin.list_trials("c")) == 1  # not retried
    worker.wait(30)  # a stopped study is waited for (resume goes on) until --idle-exit
    log = (tmp_path / "w.log").read_text()
    assert "cancelled by the server" in log and "Traceback" not in log
    assert "study c is stopped; this worker waits for `archsearch resume c`" in log


def test_stop_says_what_happens_to_running_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
            admin.launch(table_spec("s", 2))
            worker.register("w", CAPS)
            worker.acquire("w", CAPS, 5)
        assert cli.main(["stop", "s", "--server", srv.address]) == 0
        said = capsys.readouterr().out
        assert "1 running trial(s) will finish (stop --cancel-running ends them now)" in said
    finally:
        srv.stop(0)
