"""The artifact folder on disk: a folder the server cannot use is a config error at start, a
full or unwritable one answers uploads with a precise status and keeps nothing partial, a
wrong one is said at start and by downloads, and a retried upload restores a missing file."""

from __future__ import annotations

import errno
import logging
import os
import types
from pathlib import Path
from typing import Any

import grpc
import pytest
from _procs import table_spec
from optuna.artifacts import FileSystemArtifactStore

from archsearch.server import cli
from archsearch.server.app import ArchsearchServer, ConfigError, ServerConfig
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

pytestmark = pytest.mark.timeout(120)
CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


def refused(code: grpc.StatusCode, call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ClientError) as info:
        call(*args, **kw)
    assert info.value.code == code, info.value
    return info.value.details


def stored(folder: str | Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob("*") if p.is_file())


def lease_of(address: str, study: str = "s") -> tuple[WorkerClient, pb.Lease]:
    with SearchClient(address) as admin:
        admin.launch(table_spec(study, 3))
    worker = WorkerClient(address)
    worker.register("w", CAPS)
    return worker, worker.acquire("w", CAPS, 5, study_name=study).lease


def test_an_artifact_dir_that_is_a_file_is_a_one_line_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``serve --artifact-dir FILE`` ended in a FileExistsError traceback (exit 1)."""
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert cli.main(["serve", "--storage", url, "--port", "0", "--artifact-dir", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"archsearch: artifact folder {f} (--artifact-dir) is not a folder")
    assert "pass a folder to --artifact-dir" in err and f.read_text() == "x"


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.EROFS, "pass an --artifact-dir on a writable file system"),
        (errno.EACCES, "writable by this server's user, or pass another --artifact-dir"),
    ],
)
def test_an_artifact_dir_the_server_cannot_write_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    """An unwritable folder went unnoticed until the first upload (then INTERNAL)."""

    def cannot(*_a: Any, **_k: Any) -> Any:
        raise OSError(code, os.strerror(code))

    no_probe = types.SimpleNamespace(mkstemp=cannot)
    monkeypatch.setattr("archsearch.server._artifact_disk.tempfile", no_probe)
    folder = tmp_path / "art"
    cfg = ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0, artifact_dir=str(folder))
    with pytest.raises(ConfigError) as info:
        ArchsearchServer(cfg).stop(0)
    assert str(info.value).startswith(f"cannot write the artifact folder {folder} (--artifact-dir)")
    assert os.strerror(code) in str(info.value) and fix in str(info.value)


def _full_disk(code: int) -> Any:
    def write(self: FileSystemArtifactStore, artifact_id: str, body: Any) -> None:
        with open(self._base_path / artifact_id, "wb") as f:
            f.write(body.read(10))  # part of the file, then the disk is full
        raise OSError(code, os.strerror(code))

    return write


def test_a_full_or_unwritable_disk_at_upload_keeps_nothing(
    sqlite_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk answered INTERNAL (an OSError traceback in the log), left part of the file
    in the store and Optuna's record of it (a retry then got ALREADY_EXISTS). Now: precise
    statuses naming the folder and the fix, nothing kept, and the retry stores it."""
    srv = sqlite_server()
    worker, lease = lease_of(srv.address)
    src = tmp_path / "ckpt.bin"
    src.write_bytes(b"w" * 5000)
    with worker:
        for code, status, fix in (
            (errno.ENOSPC, grpc.StatusCode.RESOURCE_EXHAUSTED, "free space on its disk"),
            (errno.EDQUOT, grpc.StatusCode.RESOURCE_EXHAUSTED, "raise its quota"),
            (errno.EACCES, grpc.StatusCode.FAILED_PRECONDITION, "make it writable"),
            (errno.EROFS, grpc.StatusCode.FAILED_PRECONDITION, "make it writable"),
        ):
            with monkeypatch.context() as m:
                m.setattr(FileSystemArtifactStore, "write", _full_disk(code))
                said = refused(status, worker.upload_artifact, lease.lease_id, src)
            assert f"the artifact folder {srv.artifact_dir}" in said and fix in said, said
            assert "nothing stored" in said
            assert stored(srv.artifact_dir) == []
            assert worker.list_artifacts("s", lease.trial_number) == []
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        artifact_id = worker.upload_artifact(lease.lease_id, src)  # the disk has room again
        assert stored(srv.artifact_dir) == [artifact_id]


def test_a_restart_with_the_wrong_artifact_dir_is_said(
    sqlite_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong --artifact-dir (an unmounted volume) started silently, and downloads said only
    that the bytes are missing "from the artifact store". Now the start warns, naming the
    folder, and DATA_LOSS names it and the likely mistake."""
    srv = sqlite_server()  # the folder next to the database (no pictures drawn)
    right, wrong = srv.artifact_dir, tmp_path / "wrong"
    worker, lease = lease_of(srv.address)
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello")
    with worker:
        worker.upload_artifact(lease.lease_id, src)
        worker.complete(lease.lease_id, {"accuracy": 0.5})
    srv.stop(0)
    caplog.clear()
    srv = sqlite_server(artifact_dir=str(right))
    assert "wrong --artifact-dir" not in caplog.text
    srv.stop(0)
    srv = sqlite_server(artifact_dir=str(wrong))
    assert (
        f"wrong --artifact-dir? the artifact folder {wrong} holds none of the 1 artifacts "
        "the storage lists (an unmounted volume?)"
    ) in caplog.text
    with WorkerClient(srv.address) as w:
        said = refused(
            grpc.StatusCode.DATA_LOSS,
            w.download_artifact,
            "s",
            lease.trial_number,
            "f.txt",
            tmp_path / "back",
        )
    assert f"missing from the artifact folder {wrong} (wrong --artifact-dir?" in said, said


def test_a_retried_upload_restores_a_missing_file(sqlite_server: Any, tmp_path: Path) -> None:
    """Uploading the same bytes again answered OK with the old record and the file stayed
    missing (every download DATA_LOSS). Now the upload writes the file again."""
    srv = sqlite_server()
    worker, lease = lease_of(srv.address)
    src = tmp_path / "f.bin"
    src.write_bytes(b"weights" * 100)
    with worker:
        artifact_id = worker.upload_artifact(lease.lease_id, src)
        (Path(srv.artifact_dir) / artifact_id).unlink()
        back = tmp_path / "back"
        loss = grpc.StatusCode.DATA_LOSS
        refused(loss, worker.download_artifact, "s", lease.trial_number, "f.bin", back)
        assert worker.upload_artifact(lease.lease_id, src) == artifact_id
        worker.download_artifact("s", lease.trial_number, "f.bin", back)
    assert back.read_bytes() == src.read_bytes()


def test_a_picture_for_a_vanished_folder_is_one_warning_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The architecture pictures made the folder again when it vanished; now they do not, and
    a picture that cannot be stored is one warning line, no traceback."""
    import shutil

    import optuna

    from archsearch.server._artifacts import GraphArtifacts

    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'p.db'}")
    pictures = GraphArtifacts(tmp_path / "art", rdb)
    try:
        shutil.rmtree(tmp_path / "art")
        pictures._upload(lambda _arch: b"png", 1, 7, {})
    finally:
        pictures.close()
        rdb.engine.dispose()
    assert not (tmp_path / "art").exists()
    [record] = [r for r in caplog.records if r.name.startswith("archsearch")]
    assert record.levelno == logging.WARNING and not record.exc_info
    assert record.getMessage().startswith("architecture picture of trial 7 not stored:")
