"""Real server and worker processes for integration tests (127.0.0.1 only, always stopped)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import optuna
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from archsearch.server.client import SearchClient
from archsearch.v1 import archsearch_pb2 as pb

REPO = Path(__file__).resolve().parents[1]
TABLE = str(
    (REPO / ".." / "shared" / "data" / "flexibert-small" / "dataset_small_sst2.json").resolve()
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "archsearch.server.cli", *args]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> str:
    """Runs ``archsearch ARGS`` as a user would; its standard output (it must succeed)."""
    done = subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f"archsearch {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """The processes a test starts (append each): stopped at teardown, the last started first
    (workers, then the servers they talk to)."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


class Proc:
    """A child process whose output goes to a log file; stopped at teardown."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self.env = env or {}
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **self.env)
        fh = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.p = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.p is not None
            self.p.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.p is not None
        return self.p.wait(timeout=timeout)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wait(10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class ServerProc(Proc):
    def __init__(
        self,
        storage: str,
        log: Path,
        port: int | None = None,
        lease: int = 30,
        heartbeat: int = 1,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.storage = storage
        super().__init__(
            cli(
                "serve",
                "--storage",
                storage,
                "--port",
                str(self.port),
                "--lease-seconds",
                str(lease),
                "--heartbeat-seconds",
                str(heartbeat),
                *extra,
            ),
            log,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProc:
        super().start()
        wait_serving(self.address, self)
        return self


def wait_serving(address: str, proc: Proc | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"server exited:\n{proc.output()[-3000:]}")
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"no server at {address} after {timeout}s")


def table_worker(address: str, log: Path, duration: float = 0.0, *extra: str) -> Proc:
    return Proc(
        cli(
            "worker",
            "--server",
            address,
            "--trainer",
            "table",
            "--table",
            TABLE,
            "--duration",
            str(duration),
            "--poll-seconds",
            "1",
            *extra,
        ),
        log,
    )


def launch(address: str, spec: dict[str, Any], folder: Path) -> None:
    """Writes ``spec`` to ``folder/spec.json`` and launches it as a user does
    (``archsearch launch --spec``)."""
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    launched = subprocess.run(
        cli("launch", "--spec", str(path), "--server", address),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert launched.returncode == 0, launched.stderr


def pod_worker(address: str, trainer: str, folder: Path, name: str) -> Proc:
    """A worker with id ``name`` and its own checkpoint folder ``folder/name`` (a pod's own
    disk), logging to ``folder/name.log``."""
    argv = cli(
        "worker", "--server", address, "--trainer", trainer,
        "--poll-seconds", "1", "--worker-id", name,
    )  # fmt: skip
    return Proc(argv, folder / f"{name}.log", {"ARCHSEARCH_CHECKPOINT_DIR": str(folder / name)})


def hand_back_when(worker: Proc, cond: Any, timeout: float, what: str) -> None:
    """Sends ``worker`` SIGTERM once ``cond()`` holds (as SLURM preemption or a Kubernetes
    drain does) and checks that it handed its trial back and exited cleanly."""
    wait_for(cond, timeout, what)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.output()[-3000:]


def table_spec(name: str, n_trials: int, loop: str = "random", **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "space": "flexibert-small",
        "trainer": "table",
        "loop": loop,
        "n_trials": n_trials,
        "space_options": {"table": TABLE},
        **kw,
    }


def wait_study(client: SearchClient, name: str, timeout: float, procs: list[Proc] = ()) -> pb.Study:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = client.get_study(name)
        if study.state == pb.STUDY_COMPLETED:
            return study
        time.sleep(0.2)
    logs = "\n".join(p.output()[-2000:] for p in procs)
    raise TimeoutError(f"study {name} not completed after {timeout}s: {study}\n{logs}")


def wait_for(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def load_trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """Trials read straight from the storage, as optuna-dashboard would."""
    storage_obj = optuna.storages.RDBStorage(storage)
    try:
        return optuna.load_study(study_name=name, storage=storage_obj).get_trials(deepcopy=False)
    finally:
        storage_obj.engine.dispose()


def candidate_root(t: optuna.trial.FrozenTrial) -> int:
    """The original trial number of a (possibly retried) candidate."""
    return int(t.system_attrs.get("failed_trial", t.number))


def make_unreadable(url: str, name: str) -> None:
    """Rewrites study ``name``'s stored spec in the storage at ``url`` (no server on it) to
    name a space no installed archsearch has: what a server without a study's plugin reads."""
    import optuna

    from archsearch.server._index import SPEC_ATTR

    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(name)
    spec = storage.get_study_user_attrs(study_id)[SPEC_ATTR]
    storage.set_study_user_attr(study_id, SPEC_ATTR, {**spec, "space": "digits"})
    storage.engine.dispose()
