"""The Python client's arguments: Optuna's ``TrialState`` read by name (it was read by
number, one state off: PRUNED listed the COMPLETE trials), a wrong type or value refused
before any call in words that name the argument, numpy numbers in a spec, and what a caller
is told when no server answers."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import numpy as np
import optuna
import pytest
from _procs import free_port, table_spec

from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.server.fetch import NoSuchTrial, fetch_checkpoint, fetch_files
from archsearch.v1 import archsearch_pb2 as pb

CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


def test_states_are_read_by_name_whatever_enum_gives_them(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    srv = sqlite_server()
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        admin.launch({**table_spec("s", 3), "objectives": ["accuracy:max"]})
        worker.register("w", CAPS)
        lease = worker.acquire("w", CAPS, 5, study_name="s").lease
        worker.complete(lease.lease_id, {"accuracy": 0.5}, {})
        done = [t.number for t in admin.list_trials("s", states=(pb.COMPLETE,))]
        assert done == [lease.trial_number]
        for given in (optuna.trial.TrialState.COMPLETE, "COMPLETE", "complete", pb.COMPLETE):
            assert [t.number for t in admin.list_trials("s", states=(given,))] == done
        assert admin.list_trials("s", states=(optuna.trial.TrialState.PRUNED,)) == []
        for bad in (0, 9, "DONE", True):
            with pytest.raises(ValueError, match=r"not a trial state|unknown trial state"):
                admin.list_trials("s", states=(bad,))


def test_wrong_arguments_are_refused_before_any_call(sqlite_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv = sqlite_server()
    with SearchClient(srv.address) as admin:
        admin.launch({**table_spec("s", 2), "n_trials": np.int64(2)})  # a notebook's number
        assert admin.get_study("s").spec_json
        for timeout_s, poll_s in ((math.nan, 1.0), (-1, 1.0), (1, math.nan), (1, 0)):
            with pytest.raises(ValueError, match="finite number of seconds"):
                admin.wait("s", timeout_s=timeout_s, poll_s=poll_s)
        with pytest.raises(TypeError, match="study name must be a str, got int 5"):
            admin.get_study(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="n_trials must be an int, got str '5'"):
            admin.resume("s", n_trials="5")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="is not JSON"):
            admin.launch({**table_spec("t", 2), "seed": object()})
        with pytest.raises(TypeError, match="trial must be an int, got str '0'"):
            fetch_checkpoint(srv.address, "s", "0", tmp_path / "x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="rank must be >= 1, got 0"):
            fetch_checkpoint(srv.address, "s", 0, tmp_path / "x", rank=0)
        with pytest.raises(TypeError, match="names must be a list of artifact names"):
            fetch_files(srv.address, "s", 0, "config.json")  # type: ignore[arg-type]
        with pytest.raises(NoSuchTrial, match="no archsearch study named 'nope'"):
            fetch_checkpoint(srv.address, "nope", 0, tmp_path / "x")  # as fetch_files does
    with pytest.raises(TypeError, match="target"):
        SearchClient(None)  # type: ignore[arg-type]
    bad: tuple[object, ...] = ("5", 0, -1, math.inf)
    for given in bad:
        with pytest.raises((TypeError, ValueError), match="timeout_s"):
            SearchClient(srv.address, timeout_s=given)  # type: ignore[arg-type]


def test_no_server_is_said_with_the_fix_and_wait_does_not_call_it_running() -> None:
    target = f"127.0.0.1:{free_port()}"
    with SearchClient(target, timeout_s=2) as admin:
        with pytest.raises(ClientError) as refused:
            admin.get_study("s")
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert "start one with `archsearch serve`" in str(refused.value)
        assert "start one" not in refused.value.details  # grpc's text, as it was
        with pytest.raises(TimeoutError) as late:
            admin.wait("s", timeout_s=1, poll_s=0.2)
    said = str(late.value)
    assert f"no answer from the server at {target} in 1s (UNAVAILABLE" in said
    assert "still running" not in said


def test_numpy_values_none_and_flags(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    """What the first checks refused or misread: numpy integers as states, a numpy float32
    timeout, states=None, timeout_s=None (no deadline, as before), and a str as
    cancel_running (bool("no") is True: it cancelled the running trials)."""
    srv = sqlite_server()
    with SearchClient(srv.address, timeout_s=None) as admin:
        admin.launch(table_spec("s", 2))
        assert admin.list_trials("s", states=[np.int64(pb.COMPLETE)]) == []
        assert admin.list_trials("s", states=np.int64(pb.COMPLETE)) == []  # one, not a list
        assert admin.list_trials("s", states=None) == admin.list_trials("s")
        with pytest.raises(TimeoutError):
            admin.wait("s", timeout_s=np.float32(0.3), poll_s=0.1)
        with pytest.raises(TypeError, match="cancel_running must be True or False, got str 'no'"):
            admin.stop("s", cancel_running="no")  # type: ignore[arg-type]
        assert admin.get_study("s").state == pb.STUDY_RUNNING  # nothing was stopped
        admin.stop("s", cancel_running=np.bool_(False))  # a numpy bool, as 0/1 were taken
        assert admin.get_study("s").state == pb.STUDY_STOPPED
