"""``archsearch wait``: a script blocks until its study ends, and the exit status says how."""

from __future__ import annotations

import json
import threading
import time

import pytest
from _procs import table_spec, wait_for

from archsearch.server import cli
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


def _finish(address: str, study: str, n: int, fail: bool = False) -> threading.Thread:
    """A worker thread that ends ``n`` trials of ``study`` (completed, or failed for good)
    after a short delay, so that ``wait`` waits."""

    def run() -> None:
        time.sleep(0.5)
        with WorkerClient(address) as worker:
            worker.register("w", CAPS)
            for i in range(n):
                lease = worker.acquire("w", CAPS, 5, study_name=study).lease
                if fail:
                    worker.fail(lease.lease_id, "broken", retryable=False)
                else:
                    worker.complete(lease.lease_id, {"accuracy": 0.5 + i / 10}, {})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_returns_when_the_study_completes(sqlite_server, capsys) -> None:  # type: ignore[no-untyped-def]
    srv = sqlite_server()
    with SearchClient(srv.address) as admin:
        admin.launch({**table_spec("s", 2), "objectives": ["accuracy:max"]})
    thread = _finish(srv.address, "s", 2)
    code = cli.main(["wait", "s", "--server", srv.address, "--interval", "0.1"])
    thread.join(10)
    out = capsys.readouterr().out.strip()
    assert code == 0
    assert out.startswith("s completed (n_trials reached: 2 distinct candidates): 2 complete")
    assert out.endswith("best trial #1: accuracy 0.6")
    assert cli.main(["wait", "s", "--server", srv.address, "--json"]) == 0  # at once: ended
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "completed" and shown["best_trials"][0]["number"] == 1


def test_wait_says_a_study_without_a_result_and_a_timeout(sqlite_server, capsys) -> None:  # type: ignore[no-untyped-def]
    srv = sqlite_server()
    with SearchClient(srv.address) as admin:
        admin.launch({**table_spec("f", 1), "objectives": ["accuracy:max"], "max_retries": 0})
        admin.launch(table_spec("idle", 1))
    thread = _finish(srv.address, "f", 1, fail=True)
    assert cli.main(["wait", "f", "--server", srv.address, "--interval", "0.1"]) == 1
    thread.join(10)
    out, err = capsys.readouterr()
    assert "0 complete, 0 pruned, 1 failed" in out
    assert err.strip() == (
        "archsearch: study f ended without a result (no trial has a measured score); "
        "`archsearch show f` says why"
    )
    started = time.monotonic()
    code = cli.main(["wait", "idle", "--server", srv.address, "--timeout", "0.5"])
    assert code == 124 and time.monotonic() - started < 5
    assert "study idle is still running after 0.5s (--timeout)" in capsys.readouterr().err
    assert cli.main(["wait", "nosuch", "--server", srv.address]) == 4
    with SearchClient(srv.address) as admin:
        with pytest.raises(TimeoutError):
            admin.wait("idle", timeout_s=0.2, poll_s=0.05)
        admin.stop("idle")
        assert admin.wait("idle", timeout_s=5).state == pb.STUDY_STOPPED
    assert cli.main(["wait", "idle", "--server", srv.address]) == 1
    assert "(it was stopped)" in capsys.readouterr().err


def test_a_stopped_study_with_a_best_trial_is_not_said_to_have_none(sqlite_server, capsys) -> None:  # type: ignore[no-untyped-def]
    """It printed the best trial, then "ended without a result (it was stopped)"."""
    srv = sqlite_server()
    with SearchClient(srv.address) as admin:
        admin.launch({**table_spec("half", 3), "objectives": ["accuracy:max"]})
        _finish(srv.address, "half", 1).join(10)
        admin.stop("half")
    assert cli.main(["wait", "half", "--server", srv.address]) == 1
    out, err = capsys.readouterr()
    assert "half stopped: 1 complete" in out and "best trial #" in out
    assert "was stopped before its budget was spent" in err and "without a result" not in err
    assert "`archsearch resume half` goes on" in err


def test_a_closed_client_says_so(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    """A call after the ``with`` block raised grpc's "Cannot invoke RPC on closed channel!"."""
    srv = sqlite_server()
    with SearchClient(srv.address) as admin:
        admin.list_studies()
    with pytest.raises(RuntimeError, match=r"client of .* is closed"):
        admin.list_studies()


def test_wait_keeps_its_timeout_when_the_server_hangs_and_says_a_deletion(
    sqlite_server,  # type: ignore[no-untyped-def]
) -> None:
    """A server that accepts and never answers (SIGSTOP) held each call for the default 30 s
    deadline, so ``--timeout 4`` took 32 s; a study deleted while waited for looked as if it
    had never existed."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        with SearchClient(f"127.0.0.1:{hung.getsockname()[1]}") as client:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match=r"no answer from the server at .* in 1s"):
                client.wait("s", timeout_s=1.0, poll_s=0.2)  # never seen: not "still running"
            assert time.monotonic() - started < 5
    srv = sqlite_server()
    with SearchClient(srv.address) as admin:
        admin.launch(table_spec("gone", 1))  # running: no worker takes it

        def delete_soon() -> None:  # between two looks of the waiter (every 2 s)
            time.sleep(0.5)
            with SearchClient(srv.address) as other:
                other.stop("gone")
                other.delete("gone")

        thread = threading.Thread(target=delete_soon, daemon=True)
        thread.start()
        with pytest.raises(ClientError, match="study gone was deleted while it was waited for"):
            admin.wait("gone", timeout_s=10, poll_s=2)
        thread.join(10)


def test_wait_fails_a_completed_study_without_a_best_trial(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AutoDistil study whose jobs completed (values ±inf) but trained no student has
    completed trials and no best one: it has no result (wait said exit 0)."""
    import contextlib

    from archsearch.server import _cli_wait

    study = pb.Study(name="a", state=pb.STUDY_COMPLETED, n_complete=3, spec_json="{}")

    class Client:
        def get_study(self, _: str) -> pb.Study:
            return study

        def wait(self, *_: object) -> pb.Study:
            return study

    monkeypatch.setattr(_cli_wait, "_search_client", lambda args: contextlib.nullcontext(Client()))
    assert cli.main(["wait", "a"]) == 1
    assert "ended without a result (no trial has a measured score)" in capsys.readouterr().err


def test_studies_marks_a_study_that_ended_without_a_result(sqlite_server, capsys) -> None:  # type: ignore[no-untyped-def]
    """A study whose every trial failed was listed as plain "completed", like a good one."""
    srv = sqlite_server()
    with SearchClient(srv.address) as admin:
        admin.launch({**table_spec("f", 1), "objectives": ["accuracy:max"], "max_retries": 0})
        admin.launch({**table_spec("ok", 1), "objectives": ["accuracy:max"]})
    _finish(srv.address, "f", 1, fail=True).join(10)
    _finish(srv.address, "ok", 1).join(10)
    with SearchClient(srv.address) as admin:
        wait_for(lambda: admin.get_study("f").state == pb.STUDY_COMPLETED, 10, "f to end")
        wait_for(lambda: admin.get_study("ok").state == pb.STUDY_COMPLETED, 10, "ok to end")
    assert cli.main(["studies", "--server", srv.address]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "completed (no result)" in rows["f"] and "no result" not in rows["ok"]
    assert rows["(no"].startswith("(no result: the study ended with no completed trial")


def test_wait_counts_the_trials_a_stop_left_running(sqlite_server, capsys) -> None:  # type: ignore[no-untyped-def]
    """After `stop --cancel-running`, wait said "0 failed" while the cancelled trial had not
    yet reported: it did not say one was still running."""
    srv = sqlite_server()
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        admin.launch(table_spec("r", 3))
        worker.register("w", CAPS)
        assert worker.acquire("w", CAPS, 5, study_name="r").has_trial
        admin.stop("r", cancel_running=True)
    assert cli.main(["wait", "r", "--server", srv.address]) == 1
    assert "0 complete, 0 pruned, 0 failed, 1 still running" in capsys.readouterr().out
