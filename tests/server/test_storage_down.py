"""A storage the server cannot use right now (a full disk, a read-only file, a lost database
connection) is UNAVAILABLE, said in the database's words: clients retry it as they retry a
server that does not answer. It was INTERNAL: every worker exited at its next AcquireTrial and
dropped its finished result at CompleteTrial, and `archsearch stop` blamed "invalid data in
the commit". A worker whose server went away no longer reads the closed socket as a TLS
server refusing plain text."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import grpc
import optuna
import pytest
import sqlalchemy.exc
from _procs import table_spec

from archsearch.server import cli
from archsearch.server._channel import STORAGE_DOWN, ClientError, connection_cause
from archsearch.server._outage import OutageLog
from archsearch.server._rpc import storage_down
from archsearch.server._writer import StorageWriter, WriterClosed
from archsearch.server.app import ArchsearchServer
from archsearch.server.client import SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker import TableTrainer
from archsearch.worker._reach import Outage
from archsearch.worker._runner import Worker

pytestmark = pytest.mark.timeout(60)


def disk_full() -> Exception:
    """What Optuna raises when SQLite cannot commit: its StorageInternalError over
    SQLAlchemy's OperationalError over sqlite3's."""
    import sqlite3

    orig = sqlite3.OperationalError("database or disk is full")
    try:
        try:
            raise sqlalchemy.exc.OperationalError("UPDATE trials ...", {}, orig)
        except sqlalchemy.exc.OperationalError as e:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens due to "
                "invalid data in the commit, e.g. exceeding max length. "
            ) from e
    except optuna.exceptions.StorageInternalError as wrapped:
        return wrapped


def test_what_counts_as_a_storage_outage() -> None:
    assert storage_down(disk_full()) == "database or disk is full"
    assert storage_down(WriterClosed("the storage writer is closed")) is not None
    assert storage_down(KeyError(1)) is None
    assert storage_down(sqlalchemy.exc.IntegrityError("INSERT", {}, ValueError("dup"))) is None


def failing(times: int, real: Any) -> Any:
    """``real``, raising a full disk the first ``times`` calls."""
    calls = iter(range(times))

    def call(*args: Any, **kwargs: Any) -> Any:
        if next(calls, None) is not None:
            raise disk_full()
        return real(*args, **kwargs)

    return call


def test_a_full_disk_is_unavailable_and_said_as_the_database_said_it(
    sqlite_server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    server: ArchsearchServer = sqlite_server()
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("s", 2))
        monkeypatch.setattr(server.manager, "stop", failing(1, server.manager.stop))
        with pytest.raises(ClientError) as info:
            admin.stop("s")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.transient
    assert info.value.details.startswith(
        "StopSearch: the server's storage cannot be used right now (database or disk is full)"
    )
    monkeypatch.setattr(server.manager, "stop", failing(1, server.manager.stop))
    assert cli.main(["stop", "s", "--server", server.address]) == 3  # try again later
    err = capsys.readouterr().err
    assert err.startswith(
        f"archsearch: the server at {server.address} answers, but its storage cannot be used "
        "right now (database or disk is full); try again once it can be written"
    )
    assert "invalid data" not in err and "database or disk is full" in err


def test_workers_wait_out_a_full_disk_and_keep_their_results(
    sqlite_server,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    from _procs import TABLE

    server: ArchsearchServer = sqlite_server(lease_duration_s=30)
    manager = server.manager
    with SearchClient(server.address) as admin, WorkerClient(server.address) as client:
        admin.launch(table_spec("s", 2))
        monkeypatch.setattr(manager, "acquire", failing(2, manager.acquire))
        monkeypatch.setattr(manager, "complete", failing(2, manager.complete))
        worker = Worker(client, {"table": TableTrainer(TABLE)}, poll_s=1, max_trials=2)
        assert worker.run() == 2  # trials finished; the old worker exited at AcquireTrial
        trials = admin.list_trials("s")
    assert [t.state for t in trials] == [pb.COMPLETE, pb.COMPLETE]  # nothing trained twice


def test_a_closed_socket_after_answers_is_a_server_gone_not_tls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = ClientError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    assert "speaks TLS" in (connection_cause(closed, "h:1", tls=False) or "")
    assert connection_cause(closed, "h:1", tls=False, answered_before=True) is None
    outage = Outage("h:1")
    outage.answered()
    caplog.set_level(logging.INFO, logger="archsearch")
    outage.failed("acquire", closed, 1.0)
    (said,) = [r for r in caplog.records if "acquire" in r.getMessage()]
    assert said.levelno == logging.WARNING and "TLS" not in said.getMessage()
    assert "no archsearch server answers at h:1 (Socket closed)" in said.getMessage()


def test_a_shutdown_during_a_candidates_preparation_is_not_an_error(
    sqlite_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGTERM while a GP loop prepared the next candidate logged ERROR tracebacks."""
    server: ArchsearchServer = sqlite_server()
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("s", 4))
    pool = server.manager.pool

    def closed(h: Any) -> None:
        raise WriterClosed("the storage writer is closed (the server is shutting down)")

    monkeypatch.setattr(pool, "prepare", closed)
    caplog.set_level(logging.INFO, logger="archsearch.server")  # an in-process demo sets it
    h = server.manager.get("s")
    h.index.pool.clear()
    pool.top_up(h)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("stopped by the shutdown" in r.getMessage() for r in caplog.records)


def test_no_lease_expires_while_heartbeats_cannot_be_stored(
    sqlite_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During an outage longer than a lease the reaper tried to fail the leases whose stored
    heartbeats had stopped: once the storage was back, whichever came first, the reaper or
    the worker's result, decided whether a finished trial was trained again."""
    import time

    server: ArchsearchServer = sqlite_server(lease_duration_s=2, heartbeat_interval_s=1)
    manager = server.manager
    with SearchClient(server.address) as admin, WorkerClient(server.address) as client:
        admin.launch(table_spec("s", 2))
        caps = pb.WorkerCapabilities(trainers=["table"], device="cpu")
        lease = client.acquire("w", caps, 5).lease
        time.sleep(2.2)  # past the start-up grace
        monkeypatch.setattr(manager, "heartbeat", failing(1, manager.heartbeat))
        with pytest.raises(ClientError) as info:
            client.heartbeat(lease.lease_id)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert not manager.leases.expiring()  # one lease from the failed heartbeat
        time.sleep(1.0)
        manager.reap_once()
        (trial, *_) = admin.list_trials("s")
        assert trial.state == pb.RUNNING


def test_the_workers_reminder_says_the_storage_not_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reminder said "still no answer from the server" while the server answered."""
    clock = iter([0.0, 61.0]).__next__
    outage = Outage("h:1", remind_s=60, clock=clock)
    down = ClientError(
        grpc.StatusCode.UNAVAILABLE,
        "CompleteTrial: the server's storage cannot be used right now (database or disk is full)",
    )
    caplog.set_level(logging.INFO, logger="archsearch")
    outage.failed("complete", down, 1.0)
    outage.failed("complete", down, 1.0)
    first, reminder = [r.getMessage() for r in caplog.records if "complete" in r.getMessage()]
    assert "answers, but its storage cannot be used right now" in first
    assert reminder.startswith("complete: its storage still cannot be used at h:1 after 61s")


def test_an_outage_is_said_once_reminded_now_and_then_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    outage = OutageLog(remind_s=60, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="archsearch.server")
    outage.up()  # no outage: nothing to say
    for t in (0, 10, 20, 30, 61, 70, 100):
        now[0] = t
        outage.down("storage writer", "connection refused")
    now[0] = 125
    outage.up()
    outage.up()
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"{STORAGE_DOWN}: connection refused (storage writer); retrying, clients are answered "
        "UNAVAILABLE and retry too",
        f"{STORAGE_DOWN} for 61 s now: connection refused (storage writer; 3 more failures "
        "since the last line)",
        "storage reconnected after 125 s; serving again",
    ]


def connection_refused() -> sqlalchemy.exc.OperationalError:
    """What psycopg says when PostgreSQL is down: several lines."""
    orig = Exception(
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    return sqlalchemy.exc.OperationalError("connect", {}, orig)


class _Down:
    """An engine whose database cannot be reached."""

    def connect(self) -> Any:
        raise connection_refused()


def test_a_writer_that_cannot_reach_its_database_says_it_once_without_tracebacks(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A PostgreSQL stopped for 35 s logged a 94-line traceback per failed batch (19 of them,
    "storage writer: connection failed; reconnecting"): now one line in the database's words
    (their first line), the tracebacks at debug level (-v), and one line once it is back."""
    real = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/w.db")
    writer = StorageWriter(real)
    try:
        writer.engine = _Down()  # type: ignore[assignment]
        caplog.set_level(logging.DEBUG, logger="archsearch.server")
        for _ in range(20):
            with pytest.raises(sqlalchemy.exc.OperationalError):
                writer.run(lambda conn: None)
        loud = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert [r.getMessage() for r in loud] == [
            f'{STORAGE_DOWN}: connection to server at "127.0.0.1", port 5432 failed: '
            "Connection refused (storage writer); retrying, clients are answered UNAVAILABLE "
            "and retry too"
        ]
        assert all(r.exc_info is None for r in loud)
        assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)  # -v
        writer.engine = real
        writer.run(lambda conn: None)
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        assert len(said) == 2 and re.match(r"storage reconnected after \d+ s", said[1])
    finally:
        writer.close()
        real.dispose()


def test_rpcs_failing_in_an_outage_are_not_a_warning_each(
    sqlite_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server: ArchsearchServer = sqlite_server()
    caplog.set_level(logging.INFO, logger="archsearch.server")
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("s", 2))
        monkeypatch.setattr(server.manager, "stop", failing(10, server.manager.stop))
        for _ in range(10):
            with pytest.raises(ClientError) as info:
                admin.stop("s")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    said = [r.getMessage() for r in caplog.records if STORAGE_DOWN in r.getMessage()]
    assert said == [
        f"{STORAGE_DOWN}: database or disk is full (StopSearch); retrying, clients are "
        "answered UNAVAILABLE and retry too"
    ]
    server.manager.writer.barrier()  # a commit: the storage is back
    assert "storage reconnected after" in caplog.records[-1].getMessage()


def test_an_outage_only_reads_noticed_is_said_over_when_the_database_answers(
    sqlite_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a committed write said an outage was over: one that reads alone met (show, while
    nothing wrote) never ended, and the next one was not said at all."""
    server: ArchsearchServer = sqlite_server()
    server.manager.retries.interval_s = 0.1  # the reaper's pass asks the database
    caplog.set_level(logging.INFO, logger="archsearch.server")
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("s", 2))
        monkeypatch.setattr(server.manager, "stop", failing(1, server.manager.stop))
        with pytest.raises(ClientError):
            admin.stop("s")
    deadline = time.monotonic() + 10
    while server.manager.writer.outage.down_since is not None:
        assert time.monotonic() < deadline, "the outage was never said to be over"
        time.sleep(0.05)
    assert any("storage reconnected after" in r.getMessage() for r in caplog.records)
