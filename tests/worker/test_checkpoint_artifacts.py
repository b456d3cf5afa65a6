"""Checkpoints through the server, worker side: trial references in ``transfer_from``, the
upload of a kept checkpoint's files and their names, the download into a local folder, and
the library loops naming an uploaded neighbour ``trial:N``. The server side and two real
worker processes are in tests/server/test_artifacts.py and
tests/integration/test_two_workers_artifacts.py; ``archsearch fetch`` in
tests/server/test_cli_fetch.py and tests/integration/test_dylora_service.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import optuna
import pytest
from _procs import TABLE

from archsearch.search._weight_transfer import transfer_source
from archsearch.server._suggest import loop_snapshot
from archsearch.server.client import ClientError
from archsearch.spaces import FlexiBertSmallSpace
from archsearch.spaces._checkpoint_names import checkpoint_artifact, parse_checkpoint_artifact
from archsearch.worker import CandidateError, TrainContext
from archsearch.worker._checkpoint_artifacts import (
    CHECKPOINT_FILES,
    fetch_transfer_source,
    parse_trial_ref,
    upload_checkpoint,
    upload_patiently,
)
from archsearch.worker._fidelity import check_fidelity


def test_trial_references() -> None:
    assert parse_trial_ref("trial:7") == ("", 7)
    assert parse_trial_ref("trial:my:study:12") == ("my:study", 12)
    assert parse_trial_ref("/ckpt/folder") is None
    assert parse_trial_ref("trial") is None  # a relative folder named "trial"
    for bad in ("trial:", "trial:x", "trial:s:", "trial:-1"):
        with pytest.raises(ValueError, match="trial:N"):
            parse_trial_ref(bad)
        with pytest.raises(ValueError, match="trial:N"):  # refused when the plan is checked
            check_fidelity({"transfer_from": bad})
    assert check_fidelity({"transfer_from": "trial:3"}).transfer_from == "trial:3"


class FakeServer:
    """What the runner wires into TrainContext, backed by a dict of (study, trial, name)."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, int, str], bytes] = {}
        self.refuse: ClientError | None = None
        self.down_for = 0  # the next uploads that find the server unreachable
        self.attempts = 0

    def context(self, study: str = "s", number: int = 0, should_stop: Any = None) -> TrainContext:
        def upload(path: Path, name: str) -> str:
            self.attempts += 1
            if self.down_for > 0:
                self.down_for -= 1
                raise ClientError(grpc.StatusCode.UNAVAILABLE, "connection refused", "Upload")
            if self.refuse is not None:
                raise self.refuse
            self.files[study, number, name] = path.read_bytes()
            return f"id-{name}"

        def download(study_name: str, trial: int, name: str, dest: Path) -> None:
            key = (study_name, trial, name)
            if key not in self.files:
                raise ClientError(grpc.StatusCode.NOT_FOUND, f"no artifact named {name!r}")
            dest.write_bytes(self.files[key])

        return TrainContext(
            upload=upload, download=download, study_name=study, should_stop=should_stop
        )


def test_upload_then_fetch_into_a_local_folder(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    for i, name in enumerate((*CHECKPOINT_FILES, "vocab.txt")):
        (kept / name).write_bytes(bytes([i]) * 10)
    (kept / "sub").mkdir()  # not a file: not uploaded
    server = FakeServer()
    info = upload_checkpoint(server.context("s", 4), kept)
    # every file of the folder, under checkpoint- names (what `archsearch fetch` downloads)
    names = sorted(f"checkpoint-{n}" for n in (*CHECKPOINT_FILES, "vocab.txt"))
    assert info == {"checkpoint_artifacts": " ".join(names)}
    assert sorted(n for (_, _, n) in server.files) == names
    got = fetch_transfer_source(server.context("s", 9), "trial:4", tmp_path / "root")
    assert Path(got) == tmp_path / "root" / "transfers" / "s" / "4"
    assert sorted(p.name for p in Path(got).iterdir()) == sorted(CHECKPOINT_FILES)
    for name in CHECKPOINT_FILES:
        assert (Path(got) / name).read_bytes() == (kept / name).read_bytes()
    # another study's trial, by name; a plain path is itself
    other = fetch_transfer_source(server.context("t", 1), "trial:s:4", tmp_path / "root")
    assert other == got
    assert fetch_transfer_source(server.context(), "/some/folder", tmp_path) == "/some/folder"


def test_a_multi_task_trial_names_each_tasks_files(tmp_path: Path) -> None:
    server = FakeServer()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "bad--name.txt").write_text("x")  # cannot be told from a task's file
    info = upload_checkpoint(server.context("s", 2), tmp_path, task="mnli")
    assert info == {
        "checkpoint_artifacts": "checkpoint-mnli--bad--name.txt checkpoint-mnli--config.json"
    }
    assert parse_checkpoint_artifact("checkpoint-mnli--config.json") == ("mnli", "config.json")
    assert parse_checkpoint_artifact("checkpoint-config.json") == (None, "config.json")
    assert parse_checkpoint_artifact("done-bert-x.pt") is None
    assert checkpoint_artifact("bad--name.txt") is None  # one task: would read back as a task
    assert checkpoint_artifact("x" * 200) is None
    assert checkpoint_artifact("model.safetensors", "my task/1") == (
        "checkpoint-my_task_1--model.safetensors"
    )


def test_a_transfer_reads_what_an_older_worker_uploaded(tmp_path: Path) -> None:
    server = FakeServer()  # bare file names, as workers before the checkpoint- names wrote
    for name in CHECKPOINT_FILES:
        server.files["s", 3, name] = name.encode()
    got = fetch_transfer_source(server.context("s", 5), "trial:3", tmp_path)
    for name in CHECKPOINT_FILES:
        assert (Path(got) / name).read_bytes() == name.encode()


def test_fetch_refusals_are_candidate_errors(tmp_path: Path) -> None:
    server = FakeServer()
    with pytest.raises(CandidateError, match="keep_checkpoint"):  # the trial kept nothing
        fetch_transfer_source(server.context(), "trial:3", tmp_path)
    with pytest.raises(CandidateError, match="connected to a server"):
        fetch_transfer_source(TrainContext(), "trial:3", tmp_path)
    with pytest.raises(CandidateError, match="trial:N"):
        fetch_transfer_source(server.context(), "trial:x", tmp_path)


def test_a_refused_upload_is_noted_not_fatal(tmp_path: Path) -> None:
    server = FakeServer()
    server.refuse = ClientError(grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-artifact-bytes")
    for name in CHECKPOINT_FILES:
        (tmp_path / name).write_bytes(b"x")
    info = upload_checkpoint(server.context(), tmp_path)
    assert "--max-artifact-bytes" in info["checkpoint_upload_error"]
    assert upload_checkpoint(TrainContext(), tmp_path) == {}  # no server: nothing to do


def test_an_upload_waits_for_a_server_that_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server restarting while a trial ends: the checkpoint's upload is tried again (as the
    result's report is), so the kept model is not lost; it gives up when the trial must end,
    when the server stays away past its patience, or at once when the server refuses."""
    monkeypatch.setattr("time.sleep", lambda s: None)
    for name in CHECKPOINT_FILES:
        (tmp_path / name).write_bytes(name.encode())
    server = FakeServer()
    server.down_for = 3
    info = upload_checkpoint(server.context(), tmp_path)
    assert info == {
        "checkpoint_artifacts": " ".join(
            checkpoint_artifact(n) or n for n in sorted(CHECKPOINT_FILES)
        )
    }
    assert server.attempts == 3 + len(CHECKPOINT_FILES)
    assert {k[2]: v for k, v in server.files.items()} == {
        checkpoint_artifact(n): n.encode() for n in CHECKPOINT_FILES
    }
    # the trial must end (lease lost, worker stopping): no more waiting
    server = FakeServer()
    server.down_for = 1000
    info = upload_checkpoint(server.context(should_stop=lambda: True), tmp_path)
    assert "UNAVAILABLE" in info["checkpoint_upload_error"] and server.attempts == 1
    # past its patience
    server = FakeServer()
    server.down_for = 1000
    with pytest.raises(ClientError, match="UNAVAILABLE"):
        upload_patiently(server.context(), tmp_path / CHECKPOINT_FILES[0], "x", patience_s=0.0)
    assert server.attempts == 1
    # a refusal is not retried
    server = FakeServer()
    server.refuse = ClientError(grpc.StatusCode.PERMISSION_DENIED, "no")
    assert (
        "PERMISSION_DENIED"
        in upload_checkpoint(server.context(), tmp_path)["checkpoint_upload_error"]
    )


def test_context_without_a_server_says_so(tmp_path: Path) -> None:
    context = TrainContext()
    assert not context.has_server
    with pytest.raises(RuntimeError, match="without a worker"):
        context.upload(tmp_path / "f")
    with pytest.raises(RuntimeError, match="download"):
        context.download(1, "f", tmp_path / "f")


def test_library_loop_names_an_uploaded_neighbour_by_trial() -> None:
    """An uploaded checkpoint is named ``trial:N`` (any worker fetches it); one left on its
    worker only keeps its folder path, as before."""
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    arch = next(iter(space.enumerate()))
    uploaded = {"checkpoint": "/on/worker/a", "checkpoint_artifacts": "model.safetensors"}
    for info, expected in ((uploaded, "trial:1"), ({"checkpoint": "/on/worker/b"}, "/on/worker/b")):
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
        study.tell(study.ask(), 0.5)  # trial 0 kept nothing
        t = study.ask()
        t.set_user_attr("candidate", {"architecture": arch})
        t.set_user_attr("info", info)
        study.tell(t, 0.8)
        assert transfer_source(loop_snapshot(study, space), arch) == expected
