"""`archsearch resume`: a completed study gets more trials, a stopped one runs again (the
candidates its stop left unrun first), a running one a new budget; the budget survives a
restart; what cannot be resumed is refused with a precise status and one line."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from _procs import table_spec

from archsearch.server import cli
from archsearch.server._format import format_study
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

pytestmark = pytest.mark.timeout(120)
CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")
BERT_CAPS = pb.WorkerCapabilities(trainers=["bert"], device="cpu")


@pytest.fixture
def server(sqlite_server) -> ArchsearchServer:  # type: ignore[no-untyped-def]
    return sqlite_server()  # type: ignore[no-any-return]


def spec(name: str, n_trials: int) -> dict:
    return {**table_spec(name, n_trials), "objectives": ["score:max"], "max_retries": 0}


def run_trials(worker: WorkerClient, n: int) -> list[pb.Lease]:
    """Acquires and completes ``n`` trials; their leases."""
    leases = []
    for i in range(n):
        resp = worker.acquire("w", CAPS, 5)
        assert resp.has_trial, f"no trial {i + 1} of {n}"
        worker.complete(resp.lease.lease_id, {"score": 0.1 * (i + 1)}, {})
        leases.append(resp.lease)
    return leases


def code(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as e:
        call()
    return e.value.code, e.value.details


def test_a_completed_study_gets_more_trials_and_keeps_them_across_a_restart(
    sqlite_url: str,
) -> None:
    srv = ArchsearchServer(ServerConfig(storage=sqlite_url, port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
            admin.launch(spec("s", 2))
            worker.register("w", CAPS)
            first = run_trials(worker, 2)
            assert admin.get_study("s").state == pb.STUDY_COMPLETED
            resp = admin.resume("s", n_trials=4)
            assert resp.study.state == pb.STUDY_RUNNING and resp.study.n_trials == 4
            assert resp.study.completed_reason == "" and resp.requeued == 0
            more = run_trials(worker, 2)
            study = admin.get_study("s")
            assert study.state == pb.STUDY_COMPLETED
            assert study.completed_reason == "n_trials reached: 4 distinct candidates"
            trials = admin.list_trials("s")
            assert [t.number for t in trials] == [x.trial_number for x in first + more]
            params = {t.params_json for t in trials}
            assert len(params) == 4  # four distinct candidates, none trained twice
            assert not worker.acquire("w", CAPS, 0.5).has_trial
    finally:
        srv.stop(0)
    srv = ArchsearchServer(ServerConfig(storage=sqlite_url, port=0))  # the new budget is stored
    srv.start()
    try:
        with SearchClient(srv.address) as admin:
            study = admin.get_study("s")
            assert study.n_trials == 4 and json.loads(study.spec_json)["n_trials"] == 4
            assert study.state == pb.STUDY_COMPLETED
    finally:
        srv.stop(0)


def test_a_stopped_study_runs_again_its_unrun_candidates_first(server: ArchsearchServer) -> None:
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch(spec("s", 5))
        worker.register("w", CAPS)
        worker.register("w2", CAPS)
        running = worker.acquire("w2", CAPS, 5).lease
        run_trials(worker, 1)  # two workers active: its completion prepares candidates
        deadline = time.monotonic() + 10
        while len(admin.list_trials("s")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        admin.stop("s")
        unrun = [
            t
            for t in admin.list_trials("s")
            if t.state == pb.FAIL and t.fail_reason == "study stopped before this candidate ran"
        ]
        assert unrun, "the stop left no prepared candidate to test with"
        assert not worker.acquire("w", CAPS, 0.5).has_trial  # stopped
        resp = admin.resume("s")
        assert resp.study.state == pb.STUDY_RUNNING and resp.requeued == len(unrun)
        assert resp.study.n_trials == 5  # kept
        # the candidates the stop left unrun come first, with their parameters
        again = worker.acquire("w", CAPS, 5)
        by_number = {t.number: t for t in admin.list_trials("s")}
        assert by_number[again.lease.trial_number].retry_of == unrun[0].number
        assert by_number[again.lease.trial_number].params_json == unrun[0].params_json
        worker.complete(again.lease.lease_id, {"score": 0.9}, {})
        worker.complete(running.lease_id, {"score": 0.5}, {})  # ran through stop and resume
        while (resp2 := worker.acquire("w", CAPS, 2)).has_trial:
            worker.complete(resp2.lease.lease_id, {"score": 0.2}, {})
        study = admin.get_study("s")
        assert study.state == pb.STUDY_COMPLETED
        assert study.completed_reason == "n_trials reached: 5 distinct candidates"
        done = [t for t in admin.list_trials("s") if t.state == pb.COMPLETE]
        assert len({t.params_json for t in done}) == 5  # the stop cost no budget
        # the unrun candidates have run since: no longer said to be waiting for a resume
        assert study.n_unrun == 0
        assert "never ran" not in format_study(study, admin.list_trials("s"))


def test_resume_clears_a_cancel_and_changes_a_running_budget(server: ArchsearchServer) -> None:
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch(spec("s", 3))
        worker.register("w", CAPS)
        lease = worker.acquire("w", CAPS, 5).lease
        admin.stop("s", cancel_running=True)
        assert worker.heartbeat(lease.lease_id).should_stop
        admin.resume("s")
        assert not worker.heartbeat(lease.lease_id).should_stop  # it may finish now
        assert admin.resume("s", n_trials=6).study.n_trials == 6  # running: a new budget
        assert admin.resume("s", n_trials=1).study.n_trials == 1  # down to what was asked
        status, details = code(lambda: admin.resume("s"))
        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert details == "study s is running (budget 1); pass --n-trials N to change its budget"


def test_what_cannot_be_resumed_is_refused_precisely(server: ArchsearchServer) -> None:
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch(spec("s", 2))
        worker.register("w", CAPS)
        run_trials(worker, 2)
        cases = [
            (lambda: admin.resume("nope"), grpc.StatusCode.NOT_FOUND, "nope"),
            (lambda: admin.resume(""), grpc.StatusCode.INVALID_ARGUMENT, "name"),
            (  # the server's own check (the Python client refuses -3 before calling)
                lambda: admin._call(
                    admin._stub.ResumeSearch, pb.ResumeSearchRequest(name="s", n_trials=-3)
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "1..100000",
            ),
            (lambda: admin.resume("s", 10**6), grpc.StatusCode.INVALID_ARGUMENT, "1..100000"),
            (
                lambda: admin.resume("s"),
                grpc.StatusCode.FAILED_PRECONDITION,
                "study s completed with its budget of 2 spent (2 distinct candidates); "
                "pass --n-trials above 2 to try more",
            ),
            (  # completed: more than asked, not "2 or more" (2 is refused too)
                lambda: admin.resume("s", 1),
                grpc.StatusCode.FAILED_PRECONDITION,
                "pass --n-trials above 2 to try more",
            ),
        ]
        for call, status, part in cases:
            got, details = code(call)
            assert got == status and part in details, (got, details)
        assert admin.get_study("s").state == pb.STUDY_COMPLETED  # nothing changed
        with pytest.raises(ValueError, match="n_trials must be >= 0, got -3"):
            admin.resume("s", -3)


def test_a_study_whose_loop_has_nothing_new_is_not_resumed(server: ArchsearchServer) -> None:
    """One candidate in the whole space: after it, every proposal is a repeat and the study
    completes "nothing new left"; more trials cannot change that, so resume says so."""
    one = {
        "name": "one",
        "space": "bert",
        "n_trials": 3,
        "loop": "random",
        "objectives": ["accuracy:max"],
        "space_options": {
            "num_hidden_layers": [1],
            "hidden_size": [64],
            "num_attention_heads": [2],
            "intermediate_ratio": [2],
        },
    }
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch(one)
        worker.register("w", BERT_CAPS)
        lease = worker.acquire("w", BERT_CAPS, 5).lease
        worker.complete(lease.lease_id, {"accuracy": 0.5}, {})
        worker.acquire("w", BERT_CAPS, 1)  # the repeats are recorded while asking
        study = admin.get_study("one")
        assert study.state == pb.STUDY_COMPLETED, study
        assert "nothing new left" in study.completed_reason
        got, details = code(lambda: admin.resume("one", 10))
        assert got == grpc.StatusCode.FAILED_PRECONDITION
        assert details.startswith("study one cannot go on: ")
        assert "nothing new left" in details and details.endswith("to search further")


def test_the_cli_says_what_resume_did_in_one_line(
    server: ArchsearchServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch(spec("s", 1))
        worker.register("w", CAPS)
        run_trials(worker, 1)
    args = ["resume", "s", "--server", server.address]
    assert cli.main([*args, "--n-trials", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        "resumed s: budget 3 distinct candidates (1 distinct complete, 0 running)"
    )
    with pytest.raises(SystemExit) as bad:  # argparse: a whole number >= 1
        cli.main([*args, "--n-trials", "0"])
    assert bad.value.code == 2
    assert "argument --n-trials: expected a whole number in 1..100000" in capsys.readouterr().err
    assert cli.main(["resume", "nope", "--server", server.address]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("archsearch: ") and "nope" in line


def test_resume_does_not_count_recorded_repeats_as_candidates(
    server: ArchsearchServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "budget 3 distinct candidates (4 complete, ...)" for 3 distinct and a repeat,
    as if the budget were spent twice over. (TPE, seed 3, repeats its first candidate.)"""
    tpe = {
        "name": "t",
        "space": "bert",
        "n_trials": 3,
        "loop": "tpe",
        "seed": 3,
        "objectives": ["accuracy:max"],
        "space_options": {
            "num_hidden_layers": [1],
            "hidden_size": [32, 64, 128, 256],
            "num_attention_heads": [2],
            "intermediate_ratio": [2],
        },
    }
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch(tpe)
        worker.register("w", BERT_CAPS)
        for _ in range(6):
            got = worker.acquire("w", BERT_CAPS, 1)
            if not got.HasField("lease"):
                break
            worker.complete(got.lease.lease_id, {"accuracy": 0.5}, {})
        repeats = sum(t.duplicate_of >= 0 for t in admin.list_trials("t"))
    assert repeats >= 1
    assert cli.main(["resume", "t", "--server", server.address, "--n-trials", "4"]) == 0
    out = capsys.readouterr().out
    said = f"(3 distinct complete, 0 running, {repeats} recorded repeat{'s' * (repeats != 1)})"
    assert out.startswith(f"resumed t: budget 4 distinct candidates {said}"), out


def test_stop_twice_says_it_was_already_stopped(
    server: ArchsearchServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with SearchClient(server.address) as admin:
        admin.launch(spec("s", 3))
    args = ["stop", "s", "--server", server.address]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.startswith("stopped s: no new trials")
    assert cli.main(args) == 0
    assert capsys.readouterr().out.startswith("s was already stopped; 0 running trial(s)")


def test_a_trial_handed_back_while_stopped_runs_again_on_resume(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    """Stopped mid-trial, its worker got SIGTERM and handed the trial back: the candidate was
    failed, not re-queued (the study was stopped), and lost for good, though its budget was
    spent. Resume now queues it again, also after a restart."""
    srv = sqlite_server()
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        admin.launch(spec("s", 2))
        worker.register("w", CAPS)
        lease = worker.acquire("w", CAPS, 5).lease
        admin.stop("s")
        worker.release(lease.lease_id, "worker stopped (SIGTERM)")
    srv.stop(0)
    srv = sqlite_server()  # restarted: the hand-back is remembered
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        assert admin.resume("s").requeued == 1
        worker.register("w", CAPS)
        again = worker.acquire("w", CAPS, 5).lease
        by_number = {t.number: t for t in admin.list_trials("s")}
        assert by_number[again.trial_number].retry_of == lease.trial_number
        worker.complete(again.lease_id, {"score": 0.5}, {})
        run_trials(worker, 1)
        study = admin.get_study("s")
        assert study.state == pb.STUDY_COMPLETED and study.n_complete == 2


def test_show_says_which_failures_a_stop_made(
    server: ArchsearchServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each stop fails the candidates it leaves unrun; `show` counted them as plain
    failures, though nothing failed."""
    with SearchClient(server.address) as admin, WorkerClient(server.address) as worker:
        admin.launch(spec("s", 5))
        worker.register("w", CAPS)
        worker.register("w2", CAPS)
        worker.acquire("w2", CAPS, 5)
        run_trials(worker, 1)
        deadline = time.monotonic() + 10
        while len(admin.list_trials("s")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        admin.stop("s")
        study = admin.get_study("s")
        unrun = study.n_fail
    assert unrun >= 1 and study.n_unrun == unrun
    assert cli.main(["show", "s", "--server", server.address]) == 0
    counts = capsys.readouterr().out.splitlines()[3]
    assert f"{unrun} failed ({unrun} never ran: a stop ended them)" in counts
    # `studies` too: none of them failed
    assert cli.main(["studies", "--server", server.address]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("s "))
    assert row.endswith(f" 0 +{unrun} unrun")  # failed: none; the workers column is empty
    assert "`archsearch resume STUDY` queues them again" in out


def test_resume_counts_trained_candidates_not_the_trials_a_job_added(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DyLoRA study of 2 trainings and 8 rank trials said "(10 complete, ...)" against a
    budget of 3 candidates, as if the budget were spent."""
    import contextlib

    from archsearch.server import _cli_studies

    study = pb.Study(name="d", n_trials=3, n_complete=10, n_derived=8, spec_json="{}")
    answer = pb.ResumeSearchResponse(study=study)

    class Client:
        def resume(self, *_: object) -> pb.ResumeSearchResponse:
            return answer

        def iter_trials(self, *_: object, **__: object) -> list[pb.Trial]:
            trained = [pb.Trial(number=n, duplicate_of=-1) for n in (0, 1)]
            ranks = [pb.Trial(number=n, duplicate_of=-1, derived_from=n % 2) for n in range(2, 10)]
            return trained + ranks

    monkeypatch.setattr(
        _cli_studies, "_search_client", lambda args: contextlib.nullcontext(Client())
    )
    assert cli.main(["resume", "d", "--n-trials", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "resumed d: budget 3 distinct candidates (2 distinct complete, 0 running, +8 "
    )
