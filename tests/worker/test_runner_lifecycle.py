"""A worker's life as its user sees it: a server that does not answer is said once, with the
address and the fix, and ``--idle-exit`` ends a worker that never reached it; a study it can
never serve ends it with the server's one line; Ctrl-C is named SIGINT; handed-back trials are
not counted as done."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _procs import TABLE, table_spec, wait_for

from archsearch.server import cli as archsearch_cli
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.spaces import Candidate, TrainerInfo
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker import TrainContext, Trainer, TrainResult
from archsearch.worker._reach import Outage
from archsearch.worker._runner import Worker

# Without the fixes these waited forever: fail instead.
pytestmark = pytest.mark.timeout(60)

LOG = "archsearch.worker"
TINY_BERT = {
    "name": "q3",
    "space": "bert",
    "n_trials": 2,
    "loop": "random",
    "space_options": {"num_hidden_layers": [1], "hidden_size": [64], "num_attention_heads": [2]},
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """The worker installs SIGTERM/SIGINT handlers in this (pytest's) process: put them back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    srv = ArchsearchServer(
        ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0, max_poll_s=1)
    )
    srv.start()
    yield srv
    srv.stop(0)


# ----------------------------------------------------------------------------- fakes


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Answer:
    """A finished AcquireTrial future."""

    def __init__(self, answer: pb.AcquireTrialResponse | grpc.RpcError) -> None:
        self.answer = answer

    def result(self, timeout: float | None = None) -> pb.AcquireTrialResponse:
        if isinstance(self.answer, grpc.RpcError):
            raise self.answer
        return self.answer

    def cancel(self) -> bool:
        return False


class _Client:
    """Answers the worker's calls from a script; records what it is told."""

    target = "127.0.0.1:7"

    def __init__(self, acquires: list[pb.AcquireTrialResponse | grpc.RpcError]) -> None:
        self.acquires = acquires
        self.registers = 0
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.release_error: ClientError | None = None
        self.leave_error: ClientError | None = None

    def register(self, worker_id: str, *_: Any) -> pb.RegisterWorkerResponse:
        self.registers += 1
        return pb.RegisterWorkerResponse(
            worker_id=worker_id, heartbeat_interval_s=5, lease_duration_s=30
        )

    def acquire_future(self, *_: Any) -> _Answer:
        return _Answer(self.acquires.pop(0) if self.acquires else pb.AcquireTrialResponse())

    def heartbeat(self, *_: Any) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse()

    def download_artifact(self, *_: Any) -> None:
        raise AssertionError("not used")

    def complete(self, *args: Any) -> pb.CompleteTrialResponse:
        self.calls.append(("complete", args))
        return pb.CompleteTrialResponse(values=[0.5])

    def fail(self, *args: Any) -> pb.FailTrialResponse:
        self.calls.append(("fail", args))
        return pb.FailTrialResponse()

    def leave(self, worker_id: str, **_: Any) -> pb.LeaveWorkerResponse:
        self.calls.append(("leave", (worker_id,)))
        if self.leave_error is not None:
            raise self.leave_error
        return pb.LeaveWorkerResponse(was_connected=True)

    def release(self, *args: Any) -> pb.ReleaseTrialResponse:
        self.calls.append(("release", args))
        if self.release_error is not None:
            raise self.release_error
        return pb.ReleaseTrialResponse(requeued=True)


class _Trainer(Trainer):
    """Completes a trial, except the ``interrupt``-th, during which this process gets SIGINT
    (Ctrl-C); it stops when the worker asks (at once when the worker is already stopping)."""

    name = "fake"
    info = TrainerInfo(name="fake", spaces=("bert",), metrics=("accuracy",))

    def __init__(self, interrupt: int = 0) -> None:
        self.interrupt, self.trained = interrupt, 0

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        self.trained += 1
        context.check()
        if self.trained == self.interrupt:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(500):
                time.sleep(0.01)  # the handler runs in this (the main) thread
                context.check()  # TrialStopped once the worker asks
            raise AssertionError("the worker never asked the trial to stop")
        return TrainResult(metrics={"accuracy": 0.5})


def grant(number: int, study: str = "s") -> pb.AcquireTrialResponse:
    cand = Candidate(space="bert", architecture={"num_hidden_layers": number + 1})
    return pb.AcquireTrialResponse(
        has_trial=True,
        lease=pb.Lease(lease_id=f"1.{number}.x", study_name=study, trial_number=number),
        candidate_json=cand.to_json(),
        trainer="fake",
        objective_metrics=["accuracy"],
    )


def unavailable() -> _RpcError:
    return _RpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")


# ----------------------------------------------------------------------------- unreachable


def test_an_unreachable_server_is_said_once_and_idle_exit_ends_the_worker(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG)
    port = closed_port()
    with WorkerClient(f"127.0.0.1:{port}") as client:
        worker = Worker(client, {"fake": _Trainer()}, idle_exit_s=1.5)
        with pytest.raises(SystemExit) as exited:
            worker.run()
    line = str(exited.value.code)
    assert line.startswith(f"worker: no archsearch server answers at 127.0.0.1:{port} (")
    assert "start one with `archsearch serve` or pass --server HOST:PORT" in line
    assert line.endswith("gave up after 1.5s (--idle-exit)")
    said = [r for r in caplog.records if r.name == LOG and r.levelno >= logging.WARNING]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert f"no archsearch server answers at 127.0.0.1:{port}" in said[0].getMessage()
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 2 and all(r.levelno == logging.DEBUG for r in retries)


def test_idle_exit_also_ends_a_worker_whose_server_went_away(
    server: ArchsearchServer, caplog
) -> None:
    """A fleet's worker outlives its server (stopped once the study ended): ``--idle-exit``
    counts the time without a trial whether the server answers with none or not at all, and
    the worker ends well (it used to retry for ever)."""
    caplog.set_level(logging.INFO, logger=LOG)
    with WorkerClient(server.address) as client:
        worker = Worker(client, {"fake": _Trainer()}, poll_s=0.2, idle_exit_s=2.0)
        done: list[int] = []
        thread = threading.Thread(target=lambda: done.append(worker.run()), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "registered" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
        server.stop(0)
        thread.join(20)
    assert not thread.is_alive(), "the worker kept retrying a server that is gone"
    assert done == [0]
    said = [r.getMessage() for r in caplog.records if r.name == LOG]
    assert any(
        f"no archsearch server answers at {server.address}" in m
        and m.endswith("no work for 2s (--idle-exit); exiting")
        for m in said
    ), said


def test_the_cli_worker_exits_with_one_line_when_no_server_answers(capsys, restore_signals) -> None:
    port = closed_port()
    argv = ["worker", "--server", f"127.0.0.1:{port}", "--trainer", "table", "--table", TABLE]
    assert (
        archsearch_cli.main([*argv, "--idle-exit", "1"]) == 3
    )  # never reached: as for any server no one can reach
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith(f"archsearch: no archsearch server answers at 127.0.0.1:{port} (")
    assert line.endswith("; gave up after 1s (--idle-exit)")


def test_outage_reminds_rarely_and_says_when_the_server_is_back(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG)
    now = [0.0]
    outage = Outage("h:1", remind_s=60, clock=lambda: now[0])
    e = ClientError(grpc.StatusCode.UNAVAILABLE, "connection refused", "Heartbeat")
    for t in range(0, 130, 2):
        now[0] = float(t)
        outage.failed("acquire", e, 2.0)
    now[0] = 131.0
    outage.answered()
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == [
        "acquire: UNAVAILABLE: no archsearch server answers at h:1 (connection refused); "
        "start one with `archsearch serve` or pass --server HOST:PORT; retrying until it answers",
        "acquire: still no answer from the server at h:1 after 60s (UNAVAILABLE); retrying",
        "acquire: still no answer from the server at h:1 after 120s (UNAVAILABLE); retrying",
        "the server at h:1 answers again (after 131s)",
    ]


def test_a_hand_back_the_server_never_got_says_unreachable_not_refused(caplog) -> None:
    client = _Client([])
    client.release_error = ClientError(grpc.StatusCode.UNAVAILABLE, "down", "ReleaseTrial")
    worker = Worker(client, {"fake": _Trainer()}, stop_grace_s=0.3)  # type: ignore[arg-type]
    worker.stop("SIGTERM")
    assert worker.run_trial(grant(0)) == "dropped"  # training saw the stop at once
    text = caplog.text
    assert "could not hand back trial s#0: the server at 127.0.0.1:7 is unreachable" in text
    assert "refused" not in text


class _Reports(_Client):
    """A server that does not answer the first ``down`` reports (a restart)."""

    def __init__(self, down: int) -> None:
        super().__init__([])
        self.down = down

    def report(self, *args: Any) -> pb.ReportIntermediateResponse:
        self.calls.append(("report", args))
        if self.down > 0:
            self.down -= 1
            raise ClientError(grpc.StatusCode.UNAVAILABLE, "down", "ReportIntermediate")
        return pb.ReportIntermediateResponse(should_prune=False)


class _Reporter(_Trainer):
    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        context.report(1, 0.5)
        return TrainResult(metrics={"accuracy": 0.5})


def test_a_report_waits_out_a_server_restart_longer_than_the_lease(caplog) -> None:
    """A report gave up after one lease duration and the trial was dropped as if pruned (its
    progress deleted), while the restarted server would have kept its lease (it gives leases
    one lease duration from its start)."""
    client = _Reports(down=4)
    worker = Worker(client, {"fake": _Reporter()})  # type: ignore[arg-type]
    worker.lease_duration_s = 0.2  # the outage (4 retries, about 1.4 s) is longer
    assert worker.run_trial(grant(0)) == "done"
    assert [c for c, _ in client.calls] == ["report"] * 5 + ["complete"]


def test_a_lost_lease_stops_a_trial_it_does_not_prune_it() -> None:
    """A trainer's report on a lost lease raised TrialPruned: a job deleted its progress."""
    from archsearch.worker import TrialPruned, TrialStopped

    lost = TrainContext(report=lambda step, value: True, should_stop=lambda: True)
    with pytest.raises(TrialStopped) as stopped:
        lost.report(3, 0.5)
    assert type(stopped.value) is TrialStopped
    pruned = TrainContext(report=lambda step, value: True, should_stop=lambda: False)
    with pytest.raises(TrialPruned):
        pruned.report(3, 0.5)


def test_only_the_workers_own_setup_exits_2() -> None:
    """A study the server cannot serve (a plugin missing there) exited 2 too, which fleets
    take as for good: the admin's fix on the server then found no worker."""
    from archsearch.worker._exits import BadSetup, end_refused

    def refused(details: str) -> SystemExit:  # a --study s worker's acquire refused
        with pytest.raises(SystemExit) as e:
            end_refused(ClientError(grpc.StatusCode.FAILED_PRECONDITION, details), "s", False)
        return e.value

    other = refused("study s is trained by the bert trainer; this worker runs table "
                    "(start it with --trainer bert)")  # fmt: skip
    assert isinstance(other, BadSetup)
    unserved = refused("study 's' is in the storage, but this server cannot serve it: ...")
    assert not isinstance(unserved, BadSetup)


def test_a_stop_during_an_outage_hands_back_it_loses_no_lease(caplog) -> None:
    """SIGTERM while a report retried through an outage said "lease lost; dropped" (the
    server was only unreachable) and that the trainer ignored the stop (it was inside
    report()), and no hand-back was tried."""
    client = _Reports(down=1000)
    client.release_error = ClientError(grpc.StatusCode.UNAVAILABLE, "down", "ReleaseTrial")
    worker = Worker(client, {"fake": _Reporter()}, stop_grace_s=0.5)  # type: ignore[arg-type]
    worker.heartbeat_interval_s = 0.1
    threading.Timer(0.3, worker.stop, ("SIGTERM",)).start()
    assert worker.run_trial(grant(0)) == "dropped"  # the server never heard the hand-back
    text = caplog.text
    assert "lease lost" not in text and "trains on" not in text
    assert "could not hand back trial s#0: the server at 127.0.0.1:7 is unreachable" in text


# ----------------------------------------------------------------------------- refusals


def test_a_study_the_worker_can_never_serve_ends_it_with_the_servers_line(
    server, capsys, caplog, restore_signals
) -> None:
    """A ``--study`` that completed before the worker started is no failure (a fleet's late
    worker exits 0, so that a Kubernetes Job does not restart it); a stopped one is waited
    for (``resume`` goes on; --idle-exit ends the wait); another trainer's study is the
    worker's setup (exit 2, which a fleet does not restart), and none of that name exit 4
    ("Scripting" in the README)."""
    caplog.set_level(logging.INFO, logger=LOG)
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("q2", 1))
        admin.stop("q2")
    base = ["worker", "--server", server.address, "--trainer", "table", "--table", TABLE]
    waits = [*base, "--study", "q2", "--poll-seconds", "1", "--idle-exit", "1.5"]
    assert archsearch_cli.main(waits) == 0
    said = "study q2 is stopped; this worker waits for `archsearch resume q2`"
    assert caplog.text.count(said) == 1  # once, not at every poll
    with SearchClient(server.address) as admin:
        admin.resume("q2")
    assert archsearch_cli.main([*base, "--study", "q2", "--poll-seconds", "1"]) == 0
    assert "study q2 is completed" in caplog.text  # it trained the one trial, then ended

    # deleted while its worker waits: ended too (exit 4 made fleets restart it for ever)
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("q4", 1))
        admin.stop("q4")

    def delete_once_it_waits() -> None:  # the worker runs in this (the main) thread
        wait_for(lambda: "waits for `archsearch resume q4`" in caplog.text, 30, "the wait")
        with SearchClient(server.address) as admin:
            admin.delete("q4")

    deleter = threading.Thread(target=delete_once_it_waits)
    deleter.start()
    assert archsearch_cli.main([*base, "--study", "q4", "--poll-seconds", "1"]) == 0
    deleter.join(30)
    assert "study q4 was deleted; nothing left to train; exiting" in caplog.text

    assert archsearch_cli.main([*base, "--study", "nosuch", "--poll-seconds", "1"]) == 4
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == "archsearch: no archsearch study named 'nosuch'; `archsearch studies` lists them"

    with SearchClient(server.address) as admin:
        admin.launch(TINY_BERT)
    assert archsearch_cli.main([*base, "--study", "q3"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        "archsearch: study q3 is trained by the bert trainer; this worker runs table "
        "(start it with --trainer bert)"
    )


def test_a_worker_that_trained_for_its_study_exits_cleanly_when_it_ends(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    ended = _RpcError(
        grpc.StatusCode.FAILED_PRECONDITION, "study s is completed (x); nothing left to train"
    )
    client = _Client([grant(0), ended])
    worker = Worker(client, {"fake": _Trainer()}, study_name="s")  # type: ignore[arg-type]
    assert worker.run() == 1
    assert "study s is completed (x); nothing left to train; exiting" in caplog.text
    assert client.calls[-1] == ("leave", (worker.worker_id,))  # no longer counted as connected
    # Never served it: the same answer ends the worker as well (nothing to do is no failure).
    client = _Client([ended])
    worker = Worker(client, {"fake": _Trainer()}, study_name="s")  # type: ignore[arg-type]
    assert worker.run() == 0
    # Another refusal (the study needs another trainer) ends it with the server's line.
    other = _RpcError(grpc.StatusCode.FAILED_PRECONDITION, "study s is trained by the bert")
    worker = Worker(_Client([other]), {"fake": _Trainer()}, study_name="s")  # type: ignore[arg-type]
    with pytest.raises(SystemExit) as exited:
        worker.run()
    assert exited.value.code == "worker: study s is trained by the bert"
    # A server without LeaveWorker (older) changes nothing: the worker exits as before.
    client = _Client([ended])
    client.leave_error = ClientError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    worker = Worker(client, {"fake": _Trainer()}, study_name="s")  # type: ignore[arg-type]
    assert worker.run() == 0 and client.calls == [("leave", (worker.worker_id,))]


# ----------------------------------------------------------------------------- stopping


def test_ctrl_c_is_named_sigint_and_a_handed_back_trial_is_not_done(
    caplog, restore_signals
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    client = _Client([grant(0), unavailable(), grant(1)])
    worker = Worker(client, {"fake": _Trainer(interrupt=2)}, worker_id="w2")  # type: ignore[arg-type]
    worker.install_signal_handlers()
    assert worker.run() == 1
    assert [c for c, _ in client.calls] == ["complete", "release", "leave"]  # hand back, leave
    assert client.calls[1][1] == ("1.1.x", "worker stopped (SIGINT)")
    assert "worker w2 exiting after 1 trial(s) (1 handed back)" in caplog.text
    assert "SIGINT: handing back the current trial and exiting" in caplog.text
    # Registered once: an acquire that found no server does not register again (a second
    # RegisterWorker with this id would tell the server this worker restarted).
    assert client.registers == 1


def test_idle_exit_cuts_the_long_poll_to_the_time_left(tmp_path: Path, caplog) -> None:
    """``--idle-exit 1`` with the default 20 s long poll exits after about a second of no
    work, not after a whole poll (the poll is cut to the idle time left)."""
    caplog.set_level(logging.INFO, logger=LOG)
    server = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0))
    server.start()
    with WorkerClient(server.address) as client:
        worker = Worker(client, {"fake": _Trainer()}, poll_s=20.0, idle_exit_s=1.0)
        started = time.monotonic()
        assert worker.run() == 0
        took = time.monotonic() - started
    server.stop(0)
    assert took < 6.0, f"--idle-exit 1 took {took:.1f}s with a 20 s long poll"
    assert any("(--idle-exit 1); exiting" in r.getMessage() for r in caplog.records)
