"""What a careless or hostile client sends is refused with a precise status, quickly, and the
answer reaches the client whole."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _procs import table_spec

from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient


@pytest.fixture
def server(sqlite_server) -> ArchsearchServer:  # type: ignore[no-untyped-def]
    return sqlite_server()  # type: ignore[no-any-return]


@pytest.fixture
def admin(server: ArchsearchServer) -> Iterator[SearchClient]:
    with SearchClient(server.address) as c:
        yield c


def refused(fn, *args) -> ClientError:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as e:
        fn(*args)
    return e.value


@pytest.mark.parametrize("table", ["/dev/zero", "fifo"])
def test_a_table_that_never_ends_is_refused_at_once(
    admin: SearchClient, tmp_path: Path, table: str
) -> None:
    """``space_options.table: /dev/zero`` grew the server by gigabytes until the client's
    deadline; a FIFO blocked a server thread for good."""
    import os

    if table == "fifo":
        os.mkfifo(tmp_path / "fifo")
        table = str(tmp_path / "fifo")
    spec = table_spec("z", 3)
    spec["space_options"]["table"] = table
    start = time.monotonic()
    e = refused(admin.launch, spec)
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "not a regular file" in e.details
    assert time.monotonic() - start < 10


def test_an_error_quoting_a_huge_field_reaches_the_client_cut(admin: SearchClient) -> None:
    """A spec error quoted a 200 KB trainer name back; the client dropped the header and said
    RESOURCE_EXHAUSTED ("received metadata size exceeds hard limit")."""
    for spec in (
        {**table_spec("big", 3), "trainer": "t" * 200_000},
        {**table_spec("big", 3), "trainer": "é" * 40_000},  # two UTF-8 bytes, each percent-encoded
    ):
        e = refused(admin.launch, spec)
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "trainer" in e.details and "more characters)" in e.details
        assert len(e.details) < 2100 and len(e.details.encode()) < 2100
    assert admin.list_studies() == []


def test_a_large_pareto_front_is_cut_to_fit_and_stop_and_resume_answer(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    """A Pareto front of trials with large info outgrew the message limit: GetStudy failed for
    good, and StopSearch and ResumeSearch answered RESOURCE_EXHAUSTED after they had acted."""
    from archsearch.server.app import MIN_MESSAGE_BYTES
    from archsearch.server.client import WorkerClient
    from archsearch.v1 import archsearch_pb2 as pb

    srv = sqlite_server(max_message_bytes=MIN_MESSAGE_BYTES)
    caps = pb.WorkerCapabilities(trainers=["bert"], device="cpu")
    info = {f"k{i}": "x" * 1990 for i in range(64)}  # 127 KB a trial, as much as allowed
    many = {f"m{i:04d}_{'x' * 55}": 0.5 for i in range(1500)}  # 100 KB of metrics
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        spec = {**table_spec("par", 20), "trainer": "bert"}
        admin.launch({**spec, "objectives": ["accuracy:max", "params:min"]})
        worker.register("w", caps)
        for i in range(20):  # each better and larger than the last: all on the front
            lease = worker.acquire("w", caps, 5).lease
            metrics = {"accuracy": i / 20, "params": 1e6 * i, **many}
            worker.complete(lease.lease_id, metrics, info)
        admin.launch({**table_spec("other", 1), "trainer": "bert"})
        study = admin.get_study("par")
        assert study.best_trials_left_out > 0
        front = srv.manager.best_trials(srv.manager.get("par"))
        assert len(study.best_trials) + study.best_trials_left_out == len(front) >= 20
        assert [t.number for t in study.best_trials] == [t.number for t in front][
            : len(study.best_trials)
        ]
        assert all(not t.info for t in study.best_trials)
        from archsearch.server._format import format_study

        said = f"({study.best_trials_left_out} more left out so the answer fits"
        assert said in format_study(study, [])
        # what was cut is still there
        assert len(list(admin.iter_trials("par"))) >= 20
        assert admin.resume("par", n_trials=21).study.state == pb.STUDY_RUNNING
        assert admin.stop("par").state == pb.STUDY_STOPPED


def test_studies_are_listed_page_by_page(admin: SearchClient, server: ArchsearchServer) -> None:
    """Every study in one answer: stored specs past 4 MiB made ListStudies fail for every
    client (a spec may be 256 KiB)."""
    from archsearch.v1 import archsearch_pb2 as pb

    for i in range(24):
        admin.launch(
            {
                "name": f"fat{i:02d}",
                "space": "bert",
                "n_trials": 1,
                "recipe": {"teacher": "x" * 200_000},
            }
        )
    names = [s.name for s in admin.list_studies()]
    assert names == [f"fat{i:02d}" for i in range(24)]
    page = admin._stub.ListStudies(pb.ListStudiesRequest(page_size=5))
    assert [s.name for s in page.studies] == names[:5] and page.next_page_token == "fat04"
    with pytest.raises(grpc.RpcError) as e:
        admin._stub.ListStudies(pb.ListStudiesRequest(page_size=1001))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_silent_uploads_cannot_take_the_servers_threads(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    """Streams opened and left silent held every RPC thread: heartbeats waited behind them
    and other workers' leases expired. Now a few at once (one more: UNAVAILABLE, which a worker
    retries), and a silent one is cancelled."""
    from archsearch.server.client import WorkerClient
    from archsearch.v1 import archsearch_pb2 as pb

    srv = sqlite_server(max_long_polls=2, max_uploads=2, upload_idle_s=1.0)
    caps = pb.WorkerCapabilities(trainers=["table"], device="cpu")
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        admin.launch(table_spec("s", 2))
        worker.register("w", caps)
        lease = worker.acquire("w", caps, 5).lease

        def silent() -> Iterator[pb.UploadArtifactRequest]:
            time.sleep(8)
            yield from ()

        held = [worker.stub.UploadArtifact.future(silent()) for _ in range(40)]
        start = time.monotonic()
        assert worker.heartbeat(lease.lease_id)  # answered while they wait
        assert time.monotonic() - start < 3
        codes = [f.exception(timeout=10).code() for f in held]  # type: ignore[union-attr]
        assert codes.count(grpc.StatusCode.UNAVAILABLE) == 38  # over the two slots
        assert codes.count(grpc.StatusCode.CANCELLED) == 2  # silent for 1 s: cancelled
        assert time.monotonic() - start < 6  # not held for the streams' 8 s
        assert worker.heartbeat(lease.lease_id)


def test_a_name_taken_says_what_to_do_with_the_study_there(admin: SearchClient) -> None:
    admin.launch(table_spec("taken", 1))
    e = refused(admin.launch, table_spec("taken", 1))
    assert e.code == grpc.StatusCode.ALREADY_EXISTS
    assert "`archsearch resume taken`" in e.details and "`archsearch delete taken`" in e.details


def test_a_postgres_url_is_read_as_postgresql() -> None:
    """libpq's and Heroku's postgres:// was refused ("Can't load plugin ... postgres")."""
    cfg = ServerConfig(storage="postgres://u:p@db.example:5432/archsearch")
    assert cfg.storage == "postgresql://u:p@db.example:5432/archsearch"


def test_an_upload_to_a_busy_server_waits_for_a_slot(sqlite_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Only checkpoint uploads retried the server's "too many uploads" answer: a fleet stopped
    at once lost the progress files it shares on the way out."""
    import hashlib
    import threading

    from archsearch.server.client import WorkerClient
    from archsearch.v1 import archsearch_pb2 as pb

    srv = sqlite_server(max_uploads=1)
    caps = pb.WorkerCapabilities(trainers=["table"], device="cpu")
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        admin.launch(table_spec("s", 2))
        worker.register("w", caps)
        lease = worker.acquire("w", caps, 5).lease.lease_id
        data = b"slow bytes"
        header = pb.UploadArtifactHeader(
            lease_id=lease,
            name="slow.bin",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

        def slow() -> Iterator[pb.UploadArtifactRequest]:
            yield pb.UploadArtifactRequest(header=header)
            time.sleep(1.5)
            yield pb.UploadArtifactRequest(chunk=data)

        held = threading.Thread(target=lambda: worker.stub.UploadArtifact(slow(), timeout=30))
        held.start()
        time.sleep(0.3)  # the slow one holds the only slot
        (tmp_path / "progress.bin").write_bytes(b"x" * 100)
        start = time.monotonic()
        assert worker.upload_artifact(lease, tmp_path / "progress.bin")
        assert time.monotonic() - start > 0.5  # it waited for the slot, then went through
        held.join(10)
        names = sorted(a.name for a in worker.list_artifacts("s", 0))
        assert names == ["progress.bin", "slow.bin"]
