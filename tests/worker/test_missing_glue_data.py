"""A trial whose GLUE split this worker lacks (its folder has SST-2 only, the study is on CoLA)
fails with one line that names the path and the worker, and is retried: another worker may
have the data. It used to log a five-frame traceback per attempt, as for a bug."""

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
from archsearch.worker._glue_dir import load_split
from archsearch.worker._runner import Worker

pytestmark = pytest.mark.timeout(60)


class _ReadsCola(Trainer):
    name = "table"

    def __init__(self, glue_dir: Path) -> None:
        self.glue_dir = glue_dir

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        load_split("cola", "train", self.glue_dir)
        return TrainResult(metrics={"accuracy": 0.5})


def _fail_one_trial(server: ArchsearchServer, glue_dir: Path) -> tuple[pb.Trial, str]:
    """One trial of a table study trained by a worker reading CoLA from ``glue_dir``: it
    fails and is retried; returns the failed trial and the worker's id."""
    with SearchClient(server.address) as admin, WorkerClient(server.address) as client:
        admin.launch({**table_spec("s", 1), "objectives": ["accuracy:max"], "max_retries": 2})
        worker = Worker(client, {"table": _ReadsCola(glue_dir)}, poll_s=1, max_trials=1)
        worker.register()
        resp = client.acquire(worker.worker_id, worker.capabilities, 5)
        assert worker.run_trial(resp) == "done"
        first, retry = admin.list_trials("s")
    assert first.state == pb.FAIL and retry.state == pb.WAITING and retry.retry_of == first.number
    return first, worker.worker_id


def test_a_split_this_worker_lacks_is_one_line_and_retried(
    sqlite_server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    server: ArchsearchServer = sqlite_server(lease_duration_s=30)
    (tmp_path / "SST-2").mkdir()
    caplog.set_level(logging.INFO, logger="archsearch")
    first, worker_id = _fail_one_trial(server, tmp_path)
    path = tmp_path / "CoLA" / "train.tsv"
    assert first.fail_reason.startswith(f"GLUE cola train split not found: looked for {path}")
    assert first.fail_reason.endswith(f"(on worker {worker_id}; retried: another may have it)")
    said = [r for r in caplog.records if "this worker's GLUE data lacks it" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert not any("Traceback" in r.getMessage() for r in caplog.records)


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


def test_a_split_this_worker_cannot_parse_is_one_line_and_retried(
    sqlite_server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    """A damaged copy (a row cut short) is this machine's too: one line naming the file and
    line, retried; it used to be a traceback at ERROR per attempt."""
    server: ArchsearchServer = sqlite_server(lease_duration_s=30)
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text("gj04\t1\t\tgood sentence\ngj04\t1\n")
    caplog.set_level(logging.INFO, logger="archsearch")
    first, _ = _fail_one_trial(server, tmp_path)
    path = tmp_path / "CoLA" / "train.tsv"
    assert first.fail_reason.startswith(f"{path}:2: 2 columns, expected at least 4")
    assert first.fail_reason.endswith("retried: another's copy may be readable)")
    said = [r for r in caplog.records if "this worker's GLUE data cannot be read" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


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
