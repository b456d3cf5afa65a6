"""A trial whose GLUE split this worker lacks (its folder has SST-2 only, the study is on CoLA)
is the machine's failure: the worker hands it back (not counted against its retries), says once,
as an error, what it lacks and the fix, and asks for none of that study's trials for a while,
so another worker takes it. Failing it (retryable) sent it straight back to the same worker,
which spent every retry within a second; it used to log a five-frame traceback per attempt."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from _procs import table_spec

from archsearch.server.app import ArchsearchServer
from archsearch.server.client import SearchClient, WorkerClient
from archsearch.spaces import Candidate
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker import TrainContext, Trainer, TrainResult
from archsearch.worker._exits import BadSetup
from archsearch.worker._glue_dir import load_split
from archsearch.worker._runner import HANDED_BACK, Worker

pytestmark = pytest.mark.timeout(60)


class _ReadsCola(Trainer):
    name = "table"

    def __init__(self, glue_dir: Path) -> None:
        self.glue_dir = glue_dir

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        load_split("cola", "train", self.glue_dir)
        return TrainResult(metrics={"accuracy": 0.5})


def _hand_back_one_trial(server: ArchsearchServer, glue_dir: Path) -> tuple[pb.Trial, Worker]:
    """One trial of a table study trained by a worker reading CoLA from ``glue_dir``: it is
    handed back and queued again, its retry budget whole; returns the trial and the worker."""
    with SearchClient(server.address) as admin, WorkerClient(server.address) as client:
        admin.launch({**table_spec("s", 1), "objectives": ["accuracy:max"], "max_retries": 0})
        worker = Worker(client, {"table": _ReadsCola(glue_dir)}, poll_s=1, max_trials=1)
        worker.register()
        resp = client.acquire(worker.worker_id, worker.capabilities, 5)
        assert worker.run_trial(resp) == HANDED_BACK
        first, retry = admin.list_trials("s")
        # max_retries 0, yet queued again: a hand-back is not a failure of the candidate
        assert first.state == pb.FAIL and retry.state == pb.WAITING
        assert retry.retry_of == first.number
        # this worker asks for none of the study's trials now; another worker gets it
        assert worker.skips.studies() == ["s"]
        again = client.acquire(
            worker.worker_id, worker.capabilities, 0, skip_studies=worker.skips.studies()
        )
        assert not again.has_trial
        study = admin.get_study("s")
        assert study.workers_for_trainer == 0  # it does not count for "s"
        # counted apart from failures: `show` and `studies` said "1 failed", "done 1"
        assert (study.n_fail, study.n_handed_back) == (1, 1)
        from archsearch.server._format import format_study

        assert "1 failed (1 handed back by workers: queued again" in format_study(study, [])
        from archsearch.server._worker_note import worker_note

        assert study.workers_lacking_data == 1
        note = worker_note(study, "--server H:1")
        assert note.startswith("note: the 1 connected worker running the table trainer lacks s's")
        other = client.acquire("other", worker.capabilities, 5)
        assert other.has_trial and other.lease.trial_number == retry.number
    return first, worker


def test_a_split_this_worker_lacks_is_handed_back_to_another_worker(
    sqlite_server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    server: ArchsearchServer = sqlite_server(lease_duration_s=30)
    (tmp_path / "SST-2").mkdir()
    caplog.set_level(logging.INFO, logger="archsearch")
    first, worker = _hand_back_one_trial(server, tmp_path)
    path = tmp_path / "CoLA" / "train.tsv"
    assert first.fail_reason.startswith(f"worker {worker.worker_id} lacks the data: GLUE cola")
    assert f"looked for {path}" in first.fail_reason
    said = [r for r in caplog.records if "this worker lacks its data" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR
    assert not any("Traceback" in r.getMessage() for r in caplog.records)


def test_a_worker_for_one_study_lacking_its_data_exits_2(sqlite_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A ``--study`` worker has nothing else to do: it exits 2 (fleets do not restart it)
    rather than wait for ever."""
    server: ArchsearchServer = sqlite_server(lease_duration_s=30)
    with SearchClient(server.address) as admin, WorkerClient(server.address) as client:
        admin.launch({**table_spec("s", 1), "objectives": ["accuracy:max"]})
        worker = Worker(client, {"table": _ReadsCola(tmp_path)}, study_name="s", poll_s=1)
        with pytest.raises(BadSetup, match="s: this worker lacks its data: GLUE"):
            worker.run()
        assert [t.state for t in admin.list_trials("s")] == [pb.FAIL, pb.WAITING]


def test_a_server_that_reads_no_skip_list_gets_a_counted_failure(
    sqlite_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """An older server gives the skipped study's trial anyway: it fails retryable (counted),
    so the release loop is bounded by the study's retries."""
    server: ArchsearchServer = sqlite_server(lease_duration_s=30)
    with SearchClient(server.address) as admin, WorkerClient(server.address) as client:
        admin.launch({**table_spec("s", 1), "objectives": ["accuracy:max"], "max_retries": 1})
        worker = Worker(client, {"table": _ReadsCola(tmp_path)}, poll_s=1)
        worker.register()
        worker.skips.lacks("s", "GLUE cola train split not found")
        resp = client.acquire(worker.worker_id, worker.capabilities, 5)  # no skip_studies sent
        assert worker.run_trial(resp) == "done"
        first = admin.list_trials("s")[0]
        assert first.state == pb.FAIL and "lacks the data" in first.fail_reason


def test_a_hub_warning_is_logged_once_under_the_workers_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The libraries' own stderr handlers go when the program logs: their records reach it."""
    import datasets  # noqa: F401 - adds its handlers
    import huggingface_hub  # noqa: F401

    from archsearch.worker._hub import one_line_per_message

    caplog.set_level(logging.WARNING)
    one_line_per_message()
    for name in ("datasets", "huggingface_hub"):
        library = logging.getLogger(name)
        assert library.propagate and not library.handlers
    logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
    assert [r.getMessage() for r in caplog.records] == ["Retrying in 1s [Retry 1/5]."]


def test_a_split_this_worker_cannot_parse_is_handed_back(
    sqlite_server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    """A damaged copy (a row cut short) is this machine's too: one line naming the file and
    line, handed back; it used to be a traceback at ERROR per attempt."""
    server: ArchsearchServer = sqlite_server(lease_duration_s=30)
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text("gj04\t1\t\tgood sentence\ngj04\t1\n")
    caplog.set_level(logging.INFO, logger="archsearch")
    first, _ = _hand_back_one_trial(server, tmp_path)
    path = tmp_path / "CoLA" / "train.tsv"
    assert f"lacks the data: {path}:2: 2 columns, expected at least 4" in first.fail_reason
    assert not any("Traceback" in r.getMessage() for r in caplog.records)


def test_a_split_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    """A byte that is not UTF-8 gave a traceback of UnicodeDecodeError naming neither the file
    nor the line; the custom reader said it without the file too."""
    from archsearch.spaces import get_task
    from archsearch.worker._glue_dir import GlueDataInvalid, read_tsv

    path = tmp_path / "train.tsv"
    path.write_bytes(b"sentence\tlabel\nfine\t1\na broken \xff\xfe row\t1\n")
    with pytest.raises(GlueDataInvalid, match=r"train.tsv:3: not UTF-8 text \(byte b'\\xff'"):
        read_tsv(get_task("sst2"), path)  # type: ignore[arg-type]
    from archsearch.worker._custom_files import _iter_records

    with pytest.raises(ValueError, match=r"train.tsv:3: not UTF-8 text"):
        list(_iter_records(path, "tsv"))


def test_idle_exit_counts_a_worker_that_only_hands_back_as_idle(
    sqlite_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A worker that can serve nothing took the trial again each time its skip ran out, handed
    it back, and its --idle-exit clock started again: it never exited."""
    import time

    from archsearch.worker._data_skips import DataSkips

    server: ArchsearchServer = sqlite_server(lease_duration_s=30)
    with SearchClient(server.address) as admin, WorkerClient(server.address) as client:
        admin.launch({**table_spec("s", 1), "objectives": ["accuracy:max"]})
        worker = Worker(client, {"table": _ReadsCola(tmp_path)}, poll_s=0.5, idle_exit_s=3)
        worker.skips = DataSkips(worker.worker_id, skip_s=0.3)  # tries again, and again
        start = time.monotonic()
        assert worker.run() == 0
        assert time.monotonic() - start < 8 and worker.handed_back >= 2
