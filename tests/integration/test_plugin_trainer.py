"""A trainer only a remote worker has: the server learns it from that worker's registration.

The ``echo`` trainer (tests/plugin_trainer.py) is published by no entry point, so the server
does not know it until a worker offering it registers; then a study on it launches, runs and
keeps being served after a restart (the study recorded the trainer's metadata at launch).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from _procs import REPO, Proc, ServerProc, cli, wait_for, wait_study

from archsearch.server.client import ClientError, SearchClient
from archsearch.v1 import archsearch_pb2 as pb

SPEC = {
    "name": "echo-study",
    "space": "bert",
    "trainer": "echo",
    "n_trials": 2,
    "objectives": ["echo_score:max"],
}


def _launch(c: SearchClient, spec: dict) -> pb.Study | ClientError:
    try:
        return c.launch(spec)
    except ClientError as e:
        return e


def test_a_plugin_trainer_is_launchable_once_a_worker_offering_it_registers(
    tmp_path: Path,
) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log").start()
    worker = Proc(
        [sys.executable, str(REPO / "tests" / "plugin_trainer.py"), "--server", server.address],
        tmp_path / "worker.log",
    )
    try:
        with SearchClient(server.address) as c:
            refused = _launch(c, SPEC)
            assert isinstance(refused, ClientError), refused
            assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "unknown trainer 'echo'" in refused.details
            assert "known: autodistil, bert, lora, table" in refused.details
            assert "start a worker that offers it" in refused.details
            assert c.list_studies() == []

            # the CLI does not refuse a trainer it lacks itself: the server answers
            r = subprocess.run(
                cli("launch", "--server", server.address, "--name", "echo-cli", "--space",
                    "bert", "--trials", "2", "--set", "trainer=echo"),
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert r.returncode != 0 and "start a worker that offers it" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr

            worker.start()

            def launched() -> pb.Study | None:
                answer = _launch(c, SPEC)
                return answer if isinstance(answer, pb.Study) else None

            study = wait_for(launched, 60, "the echo worker to register")
            assert study.name == "echo-study"
            wrong = _launch(c, {**SPEC, "name": "echo-2", "objectives": ["accuracy:max"]})
            assert isinstance(wrong, ClientError)
            assert wrong.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "the echo trainer never reports 'accuracy'" in wrong.details
            assert "it reports echo_score" in wrong.details

            done = wait_study(c, "echo-study", 120, [worker, server])
            assert done.n_complete == 2
            trials = c.list_trials("echo-study")
            assert all(dict(t.metrics)["echo_score"] in (2.0, 4.0, 6.0) for t in trials)
    finally:
        worker.stop()
        server.stop()

    # a restarted server that no worker has described echo to yet still serves the study
    again = ServerProc(storage, tmp_path / "server2.log").start()
    try:
        with SearchClient(again.address) as c:
            assert c.get_study("echo-study").state == pb.STUDY_COMPLETED
        assert "no longer valid" not in again.output()
    finally:
        again.stop()


@pytest.fixture(autouse=True)
def _no_stray_worker_output(tmp_path: Path):
    yield
    log = tmp_path / "worker.log"
    if log.exists():
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
