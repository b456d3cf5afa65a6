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
from _procs import REPO, Proc, ServerProc, cli, free_port, wait_for, wait_study

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


PLUGIN = """
from archsearch.spaces import TrainerInfo
from archsearch.worker import Trainer, TrainResult, register_trainer

INFO = TrainerInfo(name="echoplug", spaces=("bert",), metrics=("echo_score",))


@register_trainer
class EchoPlug(Trainer):
    name = "echoplug"
    info = INFO

    def train(self, candidate, context):
        context.check()
        context.report(1, 0.5)
        return TrainResult({"echo_score": candidate.architecture["num_hidden_layers"]}, {"n": 3})
"""


def installed_plugin(root: Path) -> dict[str, str]:
    """A plugin as pip would install it: its module and a dist-info folder whose
    entry_points.txt publishes its TrainerInfo; the environment that puts it on the path."""
    root.mkdir()
    (root / "echo_plugin.py").write_text(PLUGIN)
    dist = root / "echo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[archsearch.trainers]\nechoplug = echo_plugin:INFO\n")
    return {"PYTHONPATH": str(root)}


def test_archsearch_worker_runs_an_installed_plugin_trainer(tmp_path: Path) -> None:
    """`archsearch worker --trainer NAME` found only the built-in trainers, although the
    launch note told users to run exactly that for a plugin; it now loads the plugin's
    entry point (the same one the server reads the trainer's description from)."""
    env = installed_plugin(tmp_path / "site")
    port = free_port()
    server = Proc(
        cli("serve", "--storage", f"sqlite:///{tmp_path / 'p.db'}", "--port", str(port)),
        tmp_path / "server.log",
        env,
    ).start()
    address = f"127.0.0.1:{port}"
    worker = Proc(
        cli("worker", "--server", address, "--trainer", "echoplug", "--poll-seconds", "1",
            "--study", "plug", "--idle-exit", "60"),
        tmp_path / "worker.log",
        env,
    )  # fmt: skip
    try:
        with SearchClient(address) as c:
            # the server has the plugin installed: launchable before any worker registers
            spec = {**SPEC, "name": "plug", "trainer": "echoplug"}

            def answered() -> pb.Study | ClientError | None:
                got = _launch(c, spec)
                unavailable = isinstance(got, ClientError) and got.transient
                return None if unavailable else got

            study = wait_for(answered, 60, "the server to answer")
            assert isinstance(study, pb.Study), study
            worker.start()
            done = wait_study(c, "plug", 120, [worker, server])
            assert done.n_complete == 2
            assert {t.info["n"] for t in c.list_trials("plug")} == {"3"}
        assert worker.wait(60) == 0  # its study ended
    finally:
        worker.stop()
        server.stop()
    # without the plugin on its path, one line that says what to install
    r = subprocess.run(
        cli("worker", "--server", address, "--trainer", "echoplug"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "unknown trainer 'echoplug'" in r.stderr
    assert "install a plugin that publishes it (an 'archsearch.trainers' entry point)" in r.stderr
