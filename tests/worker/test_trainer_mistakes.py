"""A plugin trainer's natural mistakes end its trial at once, failed with the reason and not
retried: a NaN (a diverged model), a negative step, a metric that is not a number, a result
without the study's objective. Before, the worker counted the refusal as a lost lease: the
trial hung for a lease, then failed as "no heartbeat" and was retried. An ``info`` value
that is not text (a number) is stored as text; it used to crash the worker process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _procs import table_spec

from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import SearchClient, WorkerClient
from archsearch.spaces import Candidate
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker import TrainContext, Trainer, TrainResult
from archsearch.worker._result_checks import check_report, checked_metrics
from archsearch.worker._runner import Worker
from archsearch.worker._trainer import CandidateError
from archsearch.worker._trial_watch import IgnoredStop

pytestmark = pytest.mark.timeout(60)


class _Plugin(Trainer):
    name = "table"  # served as the table trainer's studies

    def __init__(self, train: Callable[[TrainContext], Any]) -> None:
        self._train = train

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        return self._train(context)  # type: ignore[no-any-return]


@pytest.fixture
def server(sqlite_server) -> ArchsearchServer:  # type: ignore[no-untyped-def]
    return sqlite_server(lease_duration_s=30)  # type: ignore[no-any-return]


def run_one(server: ArchsearchServer, train: Callable[[TrainContext], Any]) -> pb.Trial:
    """One trial of a fresh study with ``train`` as its trainer; the trial as stored."""
    with SearchClient(server.address) as admin, WorkerClient(server.address) as client:
        name = f"s{len(admin.list_studies())}"
        admin.launch({**table_spec(name, 1), "objectives": ["accuracy:max"], "max_retries": 2})
        worker = Worker(client, {"table": _Plugin(train)}, poll_s=1, max_trials=1)
        worker.register()
        resp = client.acquire(worker.worker_id, worker.capabilities, 5)
        assert resp.has_trial
        assert worker.run_trial(resp) == "done"
        (trial,) = admin.list_trials(name)  # no retry was queued
        return trial


def returns(metrics: dict[str, Any], info: dict[str, Any] | None = None) -> Callable:  # type: ignore[type-arg]
    return lambda context: TrainResult(metrics=metrics, info=info or {})


def reports(step: Any, value: Any) -> Callable:  # type: ignore[type-arg]
    def train(context: TrainContext) -> TrainResult:
        context.report(step, value)
        return TrainResult(metrics={"accuracy": 0.5})

    return train


@pytest.mark.parametrize(
    ("train", "reason"),
    [
        (returns({"accuracy": float("nan")}), "metrics must be finite numbers; got accuracy=nan"),
        (
            returns({"accuracy": 0.5, "dev_loss": float("inf")}),
            "metrics must be finite numbers; got dev_loss=inf",
        ),
        (returns({"accuracy": "high"}), "got accuracy='high'"),
        (returns({}), "train returned no metrics"),
        (lambda context: {"accuracy": 0.5}, "train returned dict, not a TrainResult"),
        (reports(-1, 0.5), "context.report(-1, 0.5): the step must be a whole number >= 0"),
        (reports(1, float("nan")), "context.report(1, nan): the value must be a finite number"),
        (
            returns({"acc": 0.9}),
            "result refused by the server: metrics lack the objective 'accuracy'",
        ),
    ],
)
def test_a_trainers_mistake_fails_its_trial_at_once_with_the_reason(
    server: ArchsearchServer,
    train: Callable,
    reason: str,  # type: ignore[type-arg]
) -> None:
    trial = run_one(server, train)
    assert trial.state == pb.FAIL
    assert reason in trial.fail_reason, trial.fail_reason


def test_info_values_that_are_not_text_are_stored_as_text(server: ArchsearchServer) -> None:
    trial = run_one(server, returns({"accuracy": 0.75}, {"n_layers": 3, "note": None}))
    assert trial.state == pb.COMPLETE
    assert trial.info["n_layers"] == "3" and trial.info["note"] == "None"


def test_the_checks_alone() -> None:
    check_report(0, 1)  # whole numbers are numbers
    for step, value in [(True, 0.5), (1.5, 0.5), (2**62, 0.5), (1, None), (1, float("-inf"))]:
        with pytest.raises(CandidateError):
            check_report(step, value)
    got = checked_metrics(TrainResult(metrics={"a": 1, "b": 0.5}))
    assert got == {"a": 1.0, "b": 0.5} and all(type(v) is float for v in got.values())
    with pytest.raises(CandidateError, match=r"got acc=nan, loss=nan"):
        checked_metrics(TrainResult(metrics={"loss": float("nan"), "acc": float("nan")}), ["acc"])
    # a string float() reads completed as 0.9 before; numpy and torch scalars are numbers
    with pytest.raises(CandidateError, match=r"got acc='0.9'"):
        checked_metrics(TrainResult(metrics={"acc": "0.9"}))  # type: ignore[dict-item]
    with pytest.raises(CandidateError):
        check_report(1, "0.5")
    import numpy as np
    import torch

    odds = (np.bool_(True), torch.tensor(True), bytearray(b"0.5"), torch.tensor([0.5]))
    for odd in (*odds, np.array("0.9"), np.str_("0.9")):  # numpy text, 0-d too
        with pytest.raises(CandidateError):
            check_report(1, odd)
    numbers = {"a": np.float32(0.5), "b": torch.tensor(0.25), "c": np.array(3), "d": np.uint8(2)}
    got = checked_metrics(TrainResult(metrics=numbers))  # type: ignore[arg-type]
    assert got == {"a": 0.5, "b": 0.25, "c": 3.0, "d": 2.0}


def test_a_trainer_that_ignores_a_cancel_is_named_once(tmp_path: Path, caplog) -> None:
    """A trainer that never calls check() or report() cannot be cancelled: the trial runs to
    its end (the server keeps its result); the worker says so once, with the fix."""
    srv = ArchsearchServer(
        ServerConfig(storage=f"sqlite:///{tmp_path / 'c.db'}", port=0, heartbeat_interval_s=1)
    )
    srv.start()
    caplog.set_level(logging.INFO, logger="archsearch.worker")
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as client:
            admin.launch({**table_spec("c", 1), "objectives": ["accuracy:max"]})

            def deaf(context: TrainContext) -> TrainResult:
                admin.stop("c", cancel_running=True)
                time.sleep(4)  # no check(), no report()
                return TrainResult(metrics={"accuracy": 0.5})

            worker = Worker(client, {"table": _Plugin(deaf)}, stop_grace_s=1)
            worker.register()
            assert worker.run_trial(client.acquire(worker.worker_id, worker.capabilities, 5))
    finally:
        srv.stop(0)
    said = [r.getMessage() for r in caplog.records if "trains on" in r.getMessage()]
    assert len(said) == 1, said
    assert "after the worker asked it to stop (the cancel); a trainer must call" in said[0]


def test_ignored_stop_waits_its_grace_and_speaks_once() -> None:
    now = [0.0]
    watch = IgnoredStop(10, clock=lambda: now[0])
    assert not watch.tick("s#0", "")  # nothing asked
    assert not watch.tick("s#0", "SIGTERM")  # asked now
    now[0] = 9.0
    assert not watch.tick("s#0", "SIGTERM")
    now[0] = 10.5
    assert watch.tick("s#0", "SIGTERM")
    now[0] = 30.0
    assert not watch.tick("s#0", "SIGTERM")  # said once


def test_a_trainer_without_info_is_named_with_the_fix(caplog) -> None:
    """A plugin class that left ``info`` None registered by name only, and every launch on it
    said "unknown trainer ... start a worker that offers it" while one did."""
    from archsearch.worker._capabilities import declared_trainer_info

    with caplog.at_level(logging.WARNING, logger="archsearch.worker"):
        assert declared_trainer_info({"table": _Plugin(returns({}))}) == []
    (said,) = [r.getMessage() for r in caplog.records]
    assert "trainer table declares no TrainerInfo" in said
    assert "set info = TrainerInfo(name='table'" in said
