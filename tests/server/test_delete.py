"""`archsearch delete`: a stopped or completed study goes for good, with its trials and the
files they uploaded; nothing that could still write to it is deleted from under it; the
name is free again."""

from __future__ import annotations

import threading
import time
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
ANSWERS = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


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


def test_calls_racing_a_delete_answer_not_found_and_the_others_are_listed(
    server: ArchsearchServer,
) -> None:
    """``delete`` stopped serving the study, then deleted its rows, while ``stop``, ``resume``,
    ``show``, ``studies`` and trial listings that had found it went on reading or writing it: they
    answered INTERNAL (``KeyError`` from Optuna's cache, 'Record does not exist.'), 35 times in
    40 rounds. Now they answer NOT_FOUND for it, and ``studies`` lists the other studies."""
    unexpected: list[str] = []
    with SearchClient(server.address) as admin:
        admin.launch(table_spec("other", 2))
        admin.stop("other")
        for _ in range(25):
            admin.launch(table_spec("x", 5))
            admin.stop("x")
            done = threading.Event()

            def hammer(kind: int, done: threading.Event) -> None:
                with SearchClient(server.address) as c:
                    while not done.is_set():
                        try:
                            if kind == 0:
                                listed = {s.name for s in c.list_studies()}
                                if "other" not in listed:
                                    unexpected.append(f"studies: {sorted(listed)}")
                            elif kind == 1:
                                c.get_study("x")
                            elif kind == 2:
                                c.stop("x")
                            elif kind == 3:
                                c.resume("x")
                            else:
                                c.list_trials("x")
                        except ClientError as e:  # NOT_FOUND: deleted; resuming a running x
                            if e.code not in ANSWERS or kind == 0:
                                unexpected.append(f"{e.method}: {e.code.name}: {e.details}")

            threads = [threading.Thread(target=hammer, args=(k, done)) for k in range(5)]
            for t in threads:
                t.start()
            time.sleep(0.02)
            try:
                for _ in range(100):  # resume may have made it run again: stop it, retry
                    try:
                        admin.delete("x")
                        break
                    except ClientError as e:
                        assert e.code == grpc.StatusCode.FAILED_PRECONDITION, e
                        admin.stop("x")
                        time.sleep(0.01)
                else:
                    raise AssertionError("x was never deleted")
            finally:
                done.set()
                for t in threads:
                    t.join(30)
            refused(lambda: admin.get_study("x"), grpc.StatusCode.NOT_FOUND)
        assert [s.name for s in admin.list_studies()] == ["other"]
    assert not unexpected, unexpected[:5]


def test_a_launch_the_server_did_not_finish_is_named_and_can_be_deleted(
    sqlite_server, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """A server killed inside ``launch`` left an Optuna study without the archsearch spec
    (creating it and writing its attributes are separate commits). Its name could then never
    be used again: launch said it was "not launched by archsearch", and show and delete said
    NOT_FOUND. Now launch and show say what it is and how to remove it, and ``delete --yes``
    removes it; an Optuna study with trials is never deleted."""
    optuna.create_study(study_name="K4", storage=sqlite_url)  # the half launch
    mine = optuna.create_study(study_name="mine", storage=sqlite_url)
    mine.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    srv = sqlite_server()
    empty = (
        "a study named 'K4' exists with no trials and no archsearch spec (a launch the server "
        "did not finish, or an empty Optuna study): `archsearch delete K4 --yes` removes it"
    )
    with SearchClient(srv.address) as admin:
        said = refused(lambda: admin.launch(table_spec("K4", 2)), grpc.StatusCode.ALREADY_EXISTS)
        assert said == empty
        said = refused(lambda: admin.get_study("K4"), grpc.StatusCode.NOT_FOUND)
        assert said == "no archsearch study named 'K4': " + empty.replace(
            "named 'K4'", "of that name"
        )
        said = refused(lambda: admin.launch(table_spec("mine", 2)), grpc.StatusCode.ALREADY_EXISTS)
        assert "not launched by archsearch" in said
        said = refused(lambda: admin.delete("mine"), grpc.StatusCode.FAILED_PRECONDITION)
        assert said.startswith("study 'mine' in the storage was not launched by archsearch and")
        said = refused(lambda: admin.get_study("mine"), grpc.StatusCode.NOT_FOUND)
        assert "an Optuna study that archsearch did not launch" in said
        assert "optuna-dashboard or Optuna's API" in said
    assert cli.main(["delete", "K4", "--yes", "--server", srv.address]) == 0
    assert capsys.readouterr().out.strip() == "deleted K4: 0 trial(s), 0 file(s)"
    with SearchClient(srv.address) as admin:
        assert admin.launch(table_spec("K4", 2)).name == "K4"
        assert [s.name for s in admin.list_studies()] == ["K4"]
    assert len(optuna.load_study(study_name="mine", storage=sqlite_url).trials) == 1


def finished_study_with_files(address: str, tmp_path: Path, n: int = 2) -> None:
    """Study "s": ``n`` trials, each with an uploaded file, completed."""
    with SearchClient(address) as admin, WorkerClient(address) as worker:
        admin.launch({**table_spec("s", n), "objectives": ["score:max"]})
        worker.register("w", CAPS)
        model = tmp_path / "model.bin"
        model.write_bytes(b"w" * 1000)
        for _ in range(n):
            lease = worker.acquire("w", CAPS, 5, study_name="s").lease
            worker.upload_artifact(lease.lease_id, model, "model.bin")
            worker.complete(lease.lease_id, {"score": 0.5}, {})
        assert admin.get_study("s").state == pb.STUDY_COMPLETED


def stored_files(folder: str | None) -> list[Path]:
    root = Path(folder or "")
    return [p for p in root.rglob("*") if p.is_file() and ".uploads" not in p.parts]


def test_a_delete_says_the_recorded_files_it_did_not_find(
    sqlite_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server on the wrong --artifact-dir said "deleted s: 2 trial(s), 0 file(s)" while
    the study's files stayed in the real folder. Now it says how many recorded files it did
    not find, and where it looked."""
    srv = sqlite_server()  # the folder next to the database (no pictures drawn)
    right, wrong = srv.artifact_dir, tmp_path / "wrong"
    finished_study_with_files(srv.address, tmp_path)
    srv.stop(0)
    srv = sqlite_server(artifact_dir=str(wrong))
    assert cli.main(["delete", "s", "--yes", "--server", srv.address]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "deleted s: 2 trial(s), 0 file(s)",
        f"2 recorded file(s) were not found in {wrong}; if the server runs with the wrong "
        "--artifact-dir, they are still in the right one",
    ]
    assert len(stored_files(right)) == 2


def test_a_file_that_cannot_be_removed_leaves_no_half_study(
    server: ArchsearchServer, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing file removal stopped the delete with the study's records still stored and
    some of its files gone. Now the records go all the same; the file stays, unreferenced."""
    finished_study_with_files(server.address, tmp_path)

    def broken(_trial: object) -> int:
        raise OSError("read-only file system")

    monkeypatch.setattr(server.manager, "remove_files", broken)
    with SearchClient(server.address) as admin:
        assert admin.delete("s").n_files == 0
        refused(lambda: admin.get_study("s"), grpc.StatusCode.NOT_FOUND)
    assert [s.study_name for s in optuna.get_all_study_summaries(sqlite_url)] == []
    assert len(stored_files(server.artifact_dir)) == 2


def test_a_server_killed_during_a_delete_finishes_it_when_it_starts_again(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed during ``delete`` left the study stored with some of its files removed
    (``fetch`` then said DATA_LOSS). Now a deletion that began is finished by the next server:
    the study's records and its remaining files go, and its name is free."""
    srv = ArchsearchServer(ServerConfig(storage=sqlite_url, port=0))
    srv.start()
    try:
        finished_study_with_files(srv.address, tmp_path, 3)
        folder = srv.artifact_dir
        assert len(stored_files(folder)) == 3
        remove, calls = srv.manager.remove_files, []

        def killed_after_one(trial: optuna.trial.FrozenTrial) -> tuple[int, int]:  # then dies
            calls.append(trial)
            return remove(trial) if len(calls) == 1 else (0, 0)

        def never(_study_id: int) -> None:
            raise RuntimeError("killed")

        monkeypatch.setattr(srv.manager, "remove_files", killed_after_one)
        monkeypatch.setattr(srv.manager.storage, "delete_study", never)
        with SearchClient(srv.address) as admin:
            refused(lambda: admin.delete("s"), grpc.StatusCode.INTERNAL)
    finally:
        srv.stop(0)
    assert len(stored_files(folder)) == 2
    srv = ArchsearchServer(ServerConfig(storage=sqlite_url, port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin:
            refused(lambda: admin.get_study("s"), grpc.StatusCode.NOT_FOUND)
            assert admin.launch(table_spec("s", 1)).name == "s"
    finally:
        srv.stop(0)
    assert stored_files(folder) == []
    assert [s.study_name for s in optuna.get_all_study_summaries(sqlite_url)] == ["s"]
