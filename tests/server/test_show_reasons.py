"""`archsearch show` says why: why a completed study ended (kept across a restart), every
failed trial's whole reason under the table (the note column shows only its start), and each
trial's worker ``info`` in ``--json``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _procs import make_unreadable, table_spec

from archsearch.server import cli
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")
LONG = (
    "candidate error: custom task 'reviews': train file /data/nope/train.csv not found; "
    "fix the path in data.custom_task.train"
)
WARN = "size 5000 is not below the rte train split's 2490 examples: every example was kept"


def show(address: str, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["show", "s", "--server", address, *args]) == 0
    return capsys.readouterr().out


def test_show_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    srv = ArchsearchServer(ServerConfig(storage=url, port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
            admin.launch({**table_spec("s", 3), "max_retries": 0, "objectives": ["score:max"]})
            worker.register("w", CAPS)
            for i in range(3):
                lease = worker.acquire("w", CAPS, 5).lease
                if i == 0:
                    info = {
                        "data_source": "/glue",
                        "checkpoint": "/ckpt/0",
                        "rte.selection_warning": WARN,
                    }
                    worker.complete(lease.lease_id, {"score": 0.5}, info)
                else:
                    worker.fail(lease.lease_id, LONG, False)
            running = show(srv.address, capsys=capsys)
            first_line = "study s: completed (n_trials reached: 3 distinct candidates)"
            assert running.splitlines()[0] == first_line
        # the table shows the start of the reason; the whole one follows, once for both trials
        assert LONG not in running.split("why trials failed:")[0]
        assert f"  #1, #2: {LONG}" in running.split("why trials failed:")[1]
        # a worker's warning (a selection that kept the whole split) is said under the table
        assert running.split("warnings from the workers:\n")[1].splitlines()[0] == (
            f"  #0: rte selection: {WARN}"
        )
        data = json.loads(show(srv.address, "--json", capsys=capsys))
        assert data["completed_reason"].startswith("n_trials reached")
        first = data["trials"][0]
        assert first["info"]["checkpoint"] == "/ckpt/0"
        assert data["trials"][1]["fail_reason"] == LONG
    finally:
        srv.stop(0)
    srv = ArchsearchServer(ServerConfig(storage=url, port=0))  # the reason is stored
    srv.start()
    try:
        again = show(srv.address, capsys=capsys)
        assert again.splitlines()[0].startswith("study s: completed (n_trials reached: 3")
    finally:
        srv.stop(0)


def test_a_checkpoint_the_server_refused_is_a_warning_from_the_workers() -> None:
    """A trial that completed with its checkpoint upload refused (the server's disk full)
    had its ``checkpoint_upload_error`` said nowhere by ``show``."""
    from archsearch.server._format_notes import trial_warnings

    error = "UploadArtifact: RESOURCE_EXHAUSTED: the artifact folder /a is full"
    trials = [
        pb.Trial(number=n, state=pb.COMPLETE, info={"checkpoint_upload_error": error})
        for n in (3, 4)
    ]
    assert trial_warnings([*trials, pb.Trial(number=5, state=pb.COMPLETE)]) == [
        "  #3, #4: checkpoint not uploaded (the result stands; its files stay on the worker, "
        f"`archsearch fetch` says where): {error}"
    ]


def test_a_curriculum_is_shown_by_what_was_chosen_not_every_default() -> None:
    """A PUDF curriculum's stored form holds every default (about 350 characters); the
    architecture column shows the method and the fields set otherwise."""
    from archsearch.server._format import describe
    from archsearch.spaces import validate_curriculum

    arch = {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4}
    for given, shown in [
        ({"method": "pudf"}, "[curriculum: pudf]"),
        ({"method": "pudf", "crowd_trials": 3}, "[curriculum: pudf crowd_trials=3]"),
        ({"method": "none"}, None),
    ]:
        stored = validate_curriculum(given)
        cand = {"space": "bert", "architecture": {**arch, "intermediate_size": 256}}
        text = describe(json.dumps({**cand, "data": {"curriculum": stored}}))
        assert text.startswith("L1 H64 A4 I256")
        assert (shown in text) if shown else "[" not in text, text
        assert len(text) < 60


def test_a_retry_names_the_trial_it_retries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed trial and its retry point at each other: the retry's note, the failure line,
    ``retry_of`` in --json, and fetch on the failed trial names the retry to fetch."""
    srv = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
            admin.launch({**table_spec("s", 1), "objectives": ["score:max"]})
            worker.register("w", CAPS)
            first = worker.acquire("w", CAPS, 5).lease
            worker.fail(first.lease_id, "CUDA out of memory", True)  # a machine's failure
            again = worker.acquire("w", CAPS, 5).lease
            assert again.trial_number != first.trial_number
            worker.complete(again.lease_id, {"score": 0.5}, {})
        out = show(srv.address, capsys=capsys)
        retry_row = next(r for r in out.splitlines() if r.startswith(f"{again.trial_number} "))
        assert f"retries #{first.trial_number}" in retry_row
        why = out.split("why trials failed:")[1]
        assert f"#{first.trial_number} (retried as #{again.trial_number}): CUDA out of" in why
        data = json.loads(show(srv.address, "--json", capsys=capsys))
        by_number = {t["number"]: t for t in data["trials"]}
        assert by_number[again.trial_number]["retry_of"] == first.trial_number
        assert by_number[first.trial_number]["retry_of"] is None
        fetched = cli.main(["fetch", "s", str(first.trial_number), "--server", srv.address])
        err = capsys.readouterr().err
        assert fetched == 1  # it failed: nothing to fetch
        assert f"it was retried as trial {again.trial_number}: fetch that one" in err
    finally:
        srv.stop(0)


def test_a_prepared_candidate_is_not_shown_as_running_on_a_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server stores the next candidate RUNNING (so that a restart finds it) before any
    worker holds it: show said "1 running" with no worker at all."""
    srv = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
            admin.launch({**table_spec("s", 4), "objectives": ["score:max"]})
            worker.register("w", CAPS)
            worker.register("w2", CAPS)
            held = worker.acquire("w2", CAPS, 5).lease
            first = worker.acquire("w", CAPS, 5).lease
            worker.complete(first.lease_id, {"score": 0.5}, {})  # prepares the next ones
            deadline = time.monotonic() + 10
            while len(admin.list_trials("s")) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            trials = admin.list_trials("s")
            prepared = [t for t in trials if t.state == pb.RUNNING and not t.worker_id]
            assert prepared
        out = show(srv.address, capsys=capsys)
        counts = out.splitlines()[3]
        assert f"1 running, {len(prepared)} prepared for the next worker, 0 waiting" in counts
        rows = {r.split()[0]: r.split()[1] for r in out.splitlines() if r[:1].isdigit()}
        assert rows[str(held.trial_number)] == "RUNNING"
        assert all(rows[str(t.number)] == "PREPARED" for t in prepared)
    finally:
        srv.stop(0)


def test_a_stored_study_the_server_cannot_read_is_named_not_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study launched with a plugin's space, served later by a server without the plugin:
    `show` said "no archsearch study named" although it is in the storage."""

    url = f"sqlite:///{tmp_path / 's.db'}"
    srv = ArchsearchServer(ServerConfig(storage=url, port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin:
            admin.launch(table_spec("s", 2))
    finally:
        srv.stop(0)
    make_unreadable(url, "s")
    srv = ArchsearchServer(ServerConfig(storage=url, port=0))
    srv.start()
    try:
        assert cli.main(["show", "s", "--server", srv.address]) != 0
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "study 's' is in the storage, but this server cannot serve it" in line
        assert "unknown space 'digits'" in line and "a plugin's space or trainer" in line
    finally:
        srv.stop(0)


def test_json_says_which_running_trials_are_only_prepared() -> None:
    """``show`` prints PREPARED for a candidate the server holds ready for the next acquire
    (stored RUNNING, no worker); --json said "RUNNING" alone, so a script counted it as
    training."""
    from archsearch.server._format_json import trial_dict
    from archsearch.v1 import archsearch_pb2 as pb

    ready = trial_dict(pb.Trial(number=3, state=pb.RUNNING, duplicate_of=-1))
    held = trial_dict(pb.Trial(number=2, state=pb.RUNNING, worker_id="w", duplicate_of=-1))
    assert (ready["state"], ready["prepared"]) == ("RUNNING", True)
    assert (held["state"], held["prepared"]) == ("RUNNING", False)


def test_a_rank_trial_alone_names_its_training_trial() -> None:
    """``wait --json`` prints the best trials without the trial list: a rank trial's rank_of
    was null there (show --json found it through the training trial in the list)."""
    from archsearch.server._format_json import trial_dict
    from archsearch.v1 import archsearch_pb2 as pb

    rank = pb.Trial(
        number=4, state=pb.COMPLETE, derived_from=0, params_json='{"lora_rank": 2}', duplicate_of=-1
    )
    student = pb.Trial(number=5, state=pb.COMPLETE, derived_from=1, duplicate_of=-1)
    assert trial_dict(rank)["rank_of"] == 0
    assert trial_dict(student)["rank_of"] is None  # an AutoDistil student: derived, no rank


def test_show_keeps_the_jobs_in_view_behind_their_derived_trials() -> None:
    """An AutoDistil study adds hundreds of student rows: `show`'s last 50 trials were all
    students, and the supernet, rank and training jobs (what failed, what runs) were hidden."""
    import json

    from archsearch.server._format import format_study
    from archsearch.v1 import archsearch_pb2 as pb

    study = pb.Study(name="ad", spec_json=json.dumps({"space": "autodistil"}))
    study.objectives.add(metric="accuracy", direction=pb.MAXIMIZE)
    jobs = [pb.Trial(number=n, state=pb.COMPLETE, duplicate_of=-1) for n in range(3)]
    students = [
        pb.Trial(number=n, state=pb.COMPLETE, duplicate_of=-1, derived_from=n % 3)
        for n in range(3, 103)
    ]
    trainings = [pb.Trial(number=103, state=pb.FAIL, duplicate_of=-1)]
    trials = [*jobs, *students, *trainings]
    rows = format_study(study, trials, limit=10).splitlines()
    numbers = [int(line.split()[0]) for line in rows if line.split() and line.split()[0].isdigit()]
    assert numbers == [0, 1, 2, *range(97, 103), 103]
    assert "  (94 more trials not shown; --limit N or --json)" in rows
    plain = format_study(study, jobs, limit=2).splitlines()
    assert [ln.split()[0] for ln in plain if ln.split() and ln.split()[0].isdigit()] == ["1", "2"]


def test_show_says_which_rows_are_proxy_scores() -> None:
    """An AutoDistil student's row holds the proxy scores its rank job gave it; the table and
    --json said nothing to tell it from a trained student's true scores."""
    from archsearch.server._format import format_study
    from archsearch.server._format_json import trial_dict

    study = pb.Study(name="ad", spec_json=json.dumps({"space": "autodistil"}), n_derived=1)
    study.objectives.add(metric="accuracy", direction=pb.MAXIMIZE)
    rank = pb.Trial(number=1, state=pb.COMPLETE, duplicate_of=-1)
    student = pb.Trial(
        number=2,
        state=pb.COMPLETE,
        duplicate_of=-1,
        derived_from=1,
        params_json=json.dumps({"target": "student", "student": "L1_A2_H64_I128"}),
        metrics={"accuracy": 0.6},
    )
    trained = pb.Trial(number=3, state=pb.COMPLETE, duplicate_of=-1, metrics={"accuracy": 0.7})
    shown = format_study(study, [rank, student, trained])
    (row,) = [ln for ln in shown.splitlines() if ln.split() and ln.split()[0] == "2"]
    assert row.rstrip().endswith("proxy scores (rank #1)")
    assert "students scored by rank jobs (no training: proxy scores)" in shown
    assert [trial_dict(t)["proxy"] for t in (rank, student, trained)] == [False, True, False]
