"""Names and text from clients: a name checked by pattern is refused with a trailing newline
(``$`` matched before one); lists and info keys are bounded; a worker's failure reason with
control characters cannot rewrite the terminal of whoever runs ``show``."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from _procs import table_spec

from archsearch.server import cli
from archsearch.server.app import ArchsearchServer
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


@pytest.fixture
def server(sqlite_server) -> ArchsearchServer:  # type: ignore[no-untyped-def]
    return sqlite_server()  # type: ignore[no-any-return]


def refused(call, contains: str = "") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as e:
        call()
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert contains in e.value.details, e.value.details
    return e.value.details


def test_a_trailing_newline_is_refused_in_every_name(
    server: ArchsearchServer, tmp_path: Path
) -> None:
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        refused(lambda: admin.launch(table_spec("abc\n", 2)), "name")
        refused(lambda: worker.register("w\n", CAPS), "worker_id")
        refused(lambda: worker.register("w", pb.WorkerCapabilities(trainers=["table\n"])))
        admin.launch(table_spec("s", 2))
        worker.register("w", CAPS)
        lease = worker.acquire("w", CAPS, 5).lease
        refused(lambda: worker.complete(lease.lease_id, {"accuracy": 0.5, "foo\n": 1.0}))
        refused(
            lambda: worker.complete(lease.lease_id, {"accuracy": 0.5}, {"key\n": "v"}),
            "info key 'key\\n'",
        )
        (tmp_path / "f").write_bytes(b"abc")
        refused(lambda: worker.upload_artifact(lease.lease_id, tmp_path / "f", "x\n"))
        assert [s.name for s in admin.list_studies()] == ["s"]
        assert admin.list_trials("s")[0].state == pb.RUNNING  # nothing was stored


def test_capabilities_list_at_most_32_distinct_trainers(server: ArchsearchServer) -> None:
    """200,000 trainer names were accepted, and every study's connected_trainers then made
    ListStudies larger than a message may be, for every client."""
    with WorkerClient(server.address) as worker, SearchClient(server.address) as admin:
        many = pb.WorkerCapabilities(trainers=[f"t{i}" for i in range(33)])
        refused(lambda: worker.register("w", many), "33 names; at most 32")
        twice = pb.WorkerCapabilities(trainers=["table", "table"])
        refused(lambda: worker.register("w", twice), "a trainer named twice (['table'])")
        refused(lambda: worker.acquire("w", many, 0), "at most 32")
        assert admin.list_studies() == []


def test_a_reason_with_control_characters_is_shown_escaped_on_one_line(
    server: ArchsearchServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch({**table_spec("s", 1), "max_retries": 0})
        worker.register("w", CAPS)
        lease = worker.acquire("w", CAPS, 5).lease
        worker.fail(lease.lease_id, "bad\x00\x1b[31mred\nline2", False)
        assert admin.list_trials("s")[0].fail_reason == "bad\x00\x1b[31mred\nline2"  # kept
    assert cli.main(["show", "s", "--server", server.address]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x00" not in out
    why = out.split("why trials failed:\n")[1].splitlines()[0]
    assert why == "  #0: bad\\x00\\x1b[31mred line2"
