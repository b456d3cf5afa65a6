"""TLS: the server speaks TLS from cert/key files; plaintext clients cannot talk to it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from _procs import table_spec

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
