"""Which archsearch code a process runs (``server/_source.py``).

Every build called itself 0.1.0, so an upgrade could not tell old workers' trials from new ones,
and a worker of an older version took a new study's candidates it could not read (a DSIR
selection, to a version without DSIR) and failed them for good with nothing said at its start.
"""

from __future__ import annotations

import logging
import re
import types
from pathlib import Path
from typing import Any

import pytest

from archsearch.server import _source
from archsearch.server._source import code_label, mismatch, source_digest
from archsearch.server.client import WorkerClient
from archsearch.v1 import archsearch_pb2 as pb


def test_the_digest_follows_the_source_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", source_digest())
    assert code_label().endswith(f"+src.{source_digest()}")
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.proto").write_text("message B {}\n")

    def find_spec(name: str) -> Any:
        return types.SimpleNamespace(submodule_search_locations=[str(package)])

    monkeypatch.setattr(_source.importlib.util, "find_spec", find_spec)

    def digest() -> str:
        source_digest.cache_clear()
        return source_digest()

    try:
        first = digest()
        (package / "__pycache__").mkdir()
        (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
        (package / "notes.txt").write_text("not code")
        # an editor's lock file (a dangling link) and backups: every worker failed to register
        (package / ".#a.py").symlink_to("user@host.1:1")
        (package / "sub" / ".a.py").write_text("backup")
        assert digest() == first  # caches, hidden and other files change nothing
        (package / "a.py").write_text("x = 2\n")
        assert digest() != first
    finally:
        monkeypatch.undo()
        source_digest.cache_clear()


def test_mismatch_names_who_and_both_labels() -> None:
    assert mismatch("1+src.a", "1+src.a", "worker w") == ""
    said = mismatch("1+src.a", "1+src.b", "worker w")
    assert said.startswith("worker w runs other archsearch code (1+src.b) than this process")
    assert "run the same archsearch on the server and every worker" in said
    assert "from before code labels" in mismatch("1+src.a", "", "the server")


def test_the_server_names_a_worker_of_other_code_when_it_registers(
    sqlite_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    srv = sqlite_server()
    caplog.set_level(logging.WARNING, logger="archsearch.server")
    with WorkerClient(srv.address) as worker:
        same = pb.WorkerCapabilities(trainers=["table"], source=code_label())
        answer = worker.register("same", same)
        assert answer.server_source == code_label()
        assert "runs other archsearch code" not in caplog.text
        worker.register("old", pb.WorkerCapabilities(trainers=["table"]))  # no label: older
        worker.register("other", pb.WorkerCapabilities(trainers=["table"], source="9+src.0"))
    assert "worker old runs other archsearch code (an archsearch from before" in caplog.text
    assert "worker other runs other archsearch code (9+src.0)" in caplog.text
    # the server keeps each worker's label (its failures are judged by it: test_other_code)
    labels = {w: srv.manager.directory.source_of(w) for w in ("same", "old", "other", "none")}
    assert labels == {"same": code_label(), "old": "", "other": "9+src.0", "none": None}


def test_a_worker_says_when_the_servers_code_is_not_its_own(
    sqlite_server: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archsearch.worker import TableTrainer, _runner
    from archsearch.worker._runner import Worker

    srv = sqlite_server()
    caplog.set_level(logging.WARNING, logger="archsearch.worker")
    with WorkerClient(srv.address) as client:
        Worker(client, {"table": TableTrainer.__new__(TableTrainer)}, poll_s=1).register()
        assert "runs other archsearch code" not in caplog.text
        monkeypatch.setattr(_runner, "code_label", lambda: "9+src.0")
        worker = Worker(client, {"table": TableTrainer.__new__(TableTrainer)}, poll_s=1)
        assert worker.capabilities.source == "9+src.0"
        worker.register()
    assert (
        f"the server runs other archsearch code ({code_label()}) than this process (9+src.0)"
        in (caplog.text)
    )


def test_a_worker_met_after_a_server_restart_is_named_too(
    sqlite_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker registers once, when it starts: one still attached across a server upgrade
    asked for work unnamed, and its failures were not judged by its code."""
    srv = sqlite_server()
    caplog.set_level(logging.WARNING, logger="archsearch.server")
    old = pb.WorkerCapabilities(trainers=["table"], source="9+src.0")
    with WorkerClient(srv.address) as worker:
        assert not worker.acquire("kept", old, 0).has_trial  # no RegisterWorker first
        worker.acquire("kept", old, 0)
    said = "worker kept runs other archsearch code (9+src.0)"
    assert caplog.text.count(said) == 1 and "registered before this server started" in caplog.text
    assert srv.manager.directory.source_of("kept") == "9+src.0"
