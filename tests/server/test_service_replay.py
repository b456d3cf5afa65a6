"""``archsearch replay --server``: searches of a FlexiBERT table as studies on a running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from archsearch.server import cli
from archsearch.server._replay import ReplayError
from archsearch.server._service_replay import service_replay_search
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import SearchClient
from archsearch.spaces import read_table

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

TABLE = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "flexibert-small"
).resolve() / "dataset_small_sst2.json"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    srv = ArchsearchServer(
        ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0, lease_duration_s=30)
    )
    srv.start()
    yield srv
    srv.stop(0)


def test_a_search_through_the_service_is_the_tables_scores_in_completion_order(
    server: ArchsearchServer,
) -> None:
    table = read_table(str(TABLE))
    run = service_replay_search(server.address, table, "random", 3, 12, parallel=3)
    assert len(run.evaluated) == 12 and len(set(run.evaluated)) == 12
    by_key = {table.key(a): s for a, s in zip(table.architectures, table.scores, strict=True)}
    scores = [by_key[k] for k in run.evaluated]  # every evaluation is a row, scored as stored
    assert run.best == [max(scores[: i + 1]) for i in range(12)]
    with SearchClient(server.address) as client:
        (study,) = [s for s in client.list_studies() if s.name.startswith("replay-random-s3-")]
        assert study.state == 3  # STUDY_COMPLETED: its budget of 12 spent
        trials = client.list_trials(study.name)
    assert run.asks == len(trials) >= 12


def test_replay_cli_through_the_service_prints_the_report(
    server: ArchsearchServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(TABLE), "--server", server.address, "--loops", "random,tpe", "--seeds", "2"]
    code = cli.main(
        ["replay", *args, "--evals", "8", "--parallel", "2", "--plot", str(tmp_path / "p.png")]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| random |")]
    assert len(rows) == 1 and "| 2 |" in rows[0]
    assert any(line.startswith("| tpe |") for line in out.splitlines())


def test_what_a_service_cannot_replay_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("width,score\n1,0.5\n2,0.7\n")
    cases = [
        ([str(csv), "--server", "127.0.0.1:1"], "is no FlexiBERT table"),
        ([str(TABLE), "--server", "127.0.0.1:1", "--rounds"], "--rounds is for in-process"),
        ([str(TABLE), "--server", "127.0.0.1:1", "--jobs", "2"], "--jobs is for in-process"),
        ([str(TABLE), "--tls"], "go with --server HOST:PORT"),
    ]
    for args, message in cases:
        code = cli.main(["replay", *args, "--plot", str(tmp_path / "p.png")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err
    with pytest.raises(ReplayError, match="cannot launch the replay study"):
        service_replay_search(
            "127.0.0.1:1", read_table(str(TABLE)), "random", 0, 4, ready_timeout_s=1
        )


def test_trials_other_workers_completed_make_the_replay_an_error() -> None:
    """A ``worker --trainer table`` on the same server takes the replay study's trials too;
    their evaluations never reach the replay, whose figures were then wrong without a word."""
    from archsearch.server._service_replay import _only_ours
    from archsearch.v1 import archsearch_pb2 as pb

    ours = pb.Trial(number=0, state=pb.COMPLETE, worker_id="replay-x-w0")
    repeat = pb.Trial(number=1, state=pb.COMPLETE, worker_id="")  # answered by the server
    _only_ours("replay-x", "h:1", [ours, repeat])
    other = pb.Trial(number=2, state=pb.COMPLETE, worker_id="gpu-box-7")
    with pytest.raises(ReplayError, match=r"completed by other workers of h:1 \(gpu-box-7\)"):
        _only_ours("replay-x", "h:1", [ours, repeat, other])


def test_an_interrupted_replay_stops_its_study(
    server: ArchsearchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a search runs: the study is stopped (it stayed running, waiting for
    workers that were gone)."""
    import time
    import types

    import archsearch.server._service_replay as service

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    clock = types.SimpleNamespace(perf_counter=time.perf_counter, monotonic=time.monotonic)
    monkeypatch.setattr(service, "time", types.SimpleNamespace(**vars(clock), sleep=interrupt))
    with pytest.raises(KeyboardInterrupt):
        service_replay_search(server.address, read_table(str(TABLE)), "random", 0, 200)
    with SearchClient(server.address) as client:
        (study,) = client.list_studies()
    assert study.state != 1, "the replay study was left running"  # 1: STUDY_RUNNING


def test_an_unwritable_plot_is_said_before_any_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It failed only after every search had run (exit 2 at the very end)."""
    code = cli.main(["replay", str(TABLE), "--plot", str(tmp_path / "no" / "such" / "p.png")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a writable folder" in err
    assert "| random |" not in capsys.readouterr().out


def test_ctrl_c_during_the_launch_stops_the_study_the_server_made(
    server: ArchsearchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the launch call was in flight (a GP loop's launch takes seconds): the
    server made the study, and it stayed running for ever."""
    launch = SearchClient.launch

    def launch_then_interrupt(self: SearchClient, spec: object) -> object:
        launch(self, spec)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(SearchClient, "launch", launch_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        service_replay_search(server.address, read_table(str(TABLE)), "random", 0, 20)
    monkeypatch.undo()
    with SearchClient(server.address) as client:
        (study,) = client.list_studies()
    assert study.state == 2, "the replay study was left running"  # STUDY_STOPPED
