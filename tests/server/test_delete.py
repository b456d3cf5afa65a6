"""`archsearch delete`: a stopped or completed study goes for good, with its trials and the
files they uploaded; nothing that could still write to it is deleted from under it; the
name is free again."""

from __future__ import annotations

from pathlib import Path

import grpc
import optuna
import pytest
from _procs import make_unreadable, table_spec

from archsearch.server import cli
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

pytestmark = pytest.mark.timeout(120)
CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


@pytest.fixture
def server(sqlite_server) -> ArchsearchServer:  # type: ignore[no-untyped-def]
    return sqlite_server()  # type: ignore[no-any-return]


def refused(call, code: grpc.StatusCode) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as e:
        call()
    assert e.value.code == code, e.value
    return e.value.details


def test_a_finished_study_goes_with_its_files_and_its_name_is_free(
    server: ArchsearchServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {**table_spec("s", 2), "objectives": ["score:max"]}
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch(spec)
        admin.launch({**spec, "name": "other"})
        worker.register("w", CAPS)
        model = tmp_path / "model.bin"
        model.write_bytes(b"w" * 1000)
        for _ in range(2):
            lease = worker.acquire("w", CAPS, 5, study_name="s").lease
            worker.upload_artifact(lease.lease_id, model, "model.bin")
            worker.complete(lease.lease_id, {"score": 0.5}, {})
        assert admin.get_study("s").state == pb.STUDY_COMPLETED
    folder = Path(server.artifact_dir or "")
    stored = [p for p in folder.rglob("*") if p.is_file() and ".uploads" not in p.parts]
    assert len(stored) >= 2
    args = ["delete", "s", "--server", server.address]
    assert cli.main(args) == 2  # not without --yes
    err = capsys.readouterr().err
    assert "deleting s removes its 2 finished trial(s) and their files for good; pass --yes" in err
    assert cli.main([*args, "--yes"]) == 0
    assert capsys.readouterr().out.strip() == "deleted s: 2 trial(s), 2 file(s)"
    left = [p for p in folder.rglob("*") if p.is_file() and ".uploads" not in p.parts]
    assert len(left) == len(stored) - 2
    with SearchClient(server.address) as admin:
        assert [s.name for s in admin.list_studies()] == ["other"]
        refused(lambda: admin.get_study("s"), grpc.StatusCode.NOT_FOUND)
        assert admin.launch(spec).name == "s"  # the name is free again
        assert admin.get_study("s").n_complete == 0


def test_nothing_that_could_still_write_is_deleted(server: ArchsearchServer) -> None:
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch({**table_spec("s", 3), "objectives": ["score:max"]})
        worker.register("w", CAPS)
        lease = worker.acquire("w", CAPS, 5).lease
        said = refused(lambda: admin.delete("s"), grpc.StatusCode.FAILED_PRECONDITION)
        assert said == "study s is running; stop it first (archsearch stop s), then delete it"
        admin.stop("s")
        said = refused(lambda: admin.delete("s"), grpc.StatusCode.FAILED_PRECONDITION)
        assert said.startswith("1 trial(s) of s still run on workers; wait for them")
        worker.complete(lease.lease_id, {"score": 0.5}, {})
        assert admin.delete("s").n_trials >= 1
        refused(lambda: admin.delete("s"), grpc.StatusCode.NOT_FOUND)
        refused(lambda: admin.delete(""), grpc.StatusCode.INVALID_ARGUMENT)


def test_a_study_this_server_cannot_serve_can_be_deleted(sqlite_url: str) -> None:
    srv = ArchsearchServer(ServerConfig(storage=sqlite_url, port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin:
            admin.launch(table_spec("p", 2))
            admin.stop("p")
    finally:
        srv.stop(0)
    make_unreadable(sqlite_url, "p")
    srv = ArchsearchServer(ServerConfig(storage=sqlite_url, port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin:
            refused(lambda: admin.get_study("p"), grpc.StatusCode.FAILED_PRECONDITION)
            admin.delete("p")
            refused(lambda: admin.get_study("p"), grpc.StatusCode.NOT_FOUND)
    finally:
        srv.stop(0)
    assert [s.study_name for s in optuna.get_all_study_summaries(sqlite_url)] == []
