"""TLS: the server speaks TLS from cert/key files; plaintext clients cannot talk to it, and
every TLS mistake is named with the flag that fixes it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from _procs import TABLE, Proc, cli, table_spec, wait_for

from archsearch.server import cli as archsearch_cli
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient

TOKEN = "admin-token-0123456789abcdef"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate (apt-get install -y openssl)")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_server(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    srv = ArchsearchServer(
        ServerConfig(
            storage=f"sqlite:///{tmp_path / 's.db'}",
            port=0,
            admin_tokens=[TOKEN],
            tls_cert=str(cert),
            tls_key=str(key),
        )
    )
    srv.start()
    try:
        with SearchClient(srv.address, token=TOKEN, tls_ca=str(cert)) as c:
            c.launch(table_spec("tls", 2))
            assert c.get_study("tls").name == "tls"
        with SearchClient(srv.address, token=TOKEN, timeout_s=3) as plain:
            with pytest.raises(ClientError) as e:
                plain.list_studies()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(0)


@pytest.fixture
def tls_and_plain_servers(tmp_path: Path):
    """A TLS server with a self-signed certificate and a plain-text one, both without tokens."""
    cert, key = _self_signed(tmp_path)
    tls = ArchsearchServer(
        ServerConfig(
            storage=f"sqlite:///{tmp_path / 'tls.db'}",
            port=0,
            tls_cert=str(cert),
            tls_key=str(key),
        )
    )
    plain = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 'plain.db'}", port=0))
    tls.start()
    plain.start()
    try:
        yield tls.address, plain.address, cert
    finally:
        tls.stop(0)
        plain.stop(0)


def test_tls_mistakes_name_the_cause_and_the_flag(
    tls_and_plain_servers, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "no archsearch server answers ... start one with `archsearch serve`": the server
    is there; the message says what is wrong with TLS and which flag fixes it."""
    tls_addr, plain_addr, cert = tls_and_plain_servers
    cases = [
        (["--server", tls_addr], "most likely speaks TLS; pass --tls-ca FILE"),
        (["--server", tls_addr, "--tls"], "its certificate is not trusted (self signed"),
        (["--server", plain_addr, "--tls-ca", str(cert)], "does not speak TLS: drop --tls"),
    ]
    for flags, says in cases:
        assert archsearch_cli.main(["studies", *flags]) == 3  # the server could not be spoken to
        err = capsys.readouterr().err
        assert err.startswith("archsearch: ") and says in err, err
        assert "archsearch serve" not in err and len(err.strip().splitlines()) == 1
    assert archsearch_cli.main(["studies", "--server", tls_addr, "--tls-ca", str(cert)]) == 0
    assert "no studies yet" in capsys.readouterr().out


def test_worker_without_tls_logs_the_cause_once(tls_and_plain_servers, tmp_path: Path) -> None:
    """A worker that dials a TLS server in plain text keeps retrying (the server may be
    reconfigured; see README), and says why once, with the flag, not on every retry (each
    retry is a debug line: ``-v`` shows them)."""
    tls_addr, _, _ = tls_and_plain_servers
    worker = Proc(
        cli("-v", "worker", "--server", tls_addr, "--trainer", "table", "--table", TABLE),
        tmp_path / "worker.log",
    ).start()
    try:
        wait_for(lambda: worker.output().count("retrying in") >= 4, 120, "four retries")
        assert worker.alive()
    finally:
        worker.stop()
    log = worker.output()
    assert log.count("most likely speaks TLS; pass --tls-ca FILE") == 1, log
    assert "Traceback" not in log
