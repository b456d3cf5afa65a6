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
def server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    srv = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0))
    srv.start()
    yield srv
    srv.stop(0)


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
        assert len(e.details) < 2100
    assert admin.list_studies() == []
