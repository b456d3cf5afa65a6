"""A study's loop that fails stops that study, not the workers (``server/_loop_guard.py``).

Before, anything a loop raised (or an answer that could not become a trial) went back to the
worker asking for work as INTERNAL: the worker exited, any other worker hit the same study
again, other studies starved, and the study read "running" with no reason outside the log.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import optuna
import pytest
from _procs import table_spec

from archsearch.search import LOOPS, LoopSnapshot, NoSuggestion, SearchLoop, Suggestion
from archsearch.server._acquire import refuse_unservable
from archsearch.server._errors import FailedPrecondition, NotFound
from archsearch.server._index import COMPLETED, RUNNING, STOPPED
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.spaces import SpecError


class Broken(SearchLoop):
    """Answers what ``mode`` says; ``"ok"`` suggests a random architecture."""

    name = "test-broken"
    mode: ClassVar[str] = "ok"

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        if Broken.mode == "ctor":
            raise RuntimeError("ctor boom")
        if Broken.mode == "ctor_exit":  # an argparse-using plugin's
            raise SystemExit(2)
        self.rng = random.Random(seed)

    def warm_up(self, space: Any, on_ready: Any = None) -> None:
        if Broken.mode == "warm_up":
            raise RuntimeError("warm_up boom")
        super().warm_up(space, on_ready)

    def ready(self, space: Any) -> bool:
        if Broken.mode == "ready":
            raise RuntimeError("ready boom")
        if Broken.mode == "ready_exit":
            raise SystemExit(3)
        return True

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        arch = snapshot.space.sample(self.rng)
        mode = Broken.mode
        if mode == "raise":
            raise RuntimeError("boom")
        if mode == "exit":
            raise SystemExit(3)
        if mode == "slow":
            time.sleep(3)
        if mode == "wait":
            raise NoSuggestion("waiting for nothing")
        answers: dict[str, Any] = {
            "dict": [{"architecture": arch}],
            "empty": [],
            "two": [Suggestion(architecture=arch)] * 2,
            "outside": [Suggestion(architecture={**arch, "nope": 1})],
            "attrs": [Suggestion(architecture=arch, attrs={"test:x": {1, 2}})],
            "recipe": [Suggestion(architecture=arch, recipe={"max_steps": -5})],
            "asked": [Suggestion(architecture=arch, asked_trial=999_999)],
            "numpy": [Suggestion(architecture={k: np.int64(7) for k in arch})],
        }
        return answers.get(mode, [Suggestion(architecture=arch)])


@pytest.fixture
def broken() -> Any:
    LOOPS.register("test-broken", Broken)
    Broken.mode = "ok"
    try:
        yield Broken
    finally:
        LOOPS.unregister("test-broken")


@pytest.fixture
def manager(tmp_path: Path) -> Any:
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    yield m
    m.close()


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("raise", "loop test-broken failed: RuntimeError: boom"),
        ("dict", "loop test-broken: it suggested a dict, not an archsearch.search.Suggestion"),
        ("empty", "it answered suggest(snapshot, 1) with 0 suggestions"),
        ("two", "it answered suggest(snapshot, 1) with 2 suggestions"),
        ("outside", "suggested a candidate the flexibert-small space cannot train"),
        ("attrs", "it suggested attrs that are not JSON"),
        ("recipe", "recipe.max_steps"),
        ("exit", "loop test-broken failed: SystemExit: 3"),
        ("ready", "loop test-broken: its ready() raised RuntimeError: ready boom"),
        ("ready_exit", "loop test-broken: its ready() raised SystemExit: 3"),
        ("asked", "asked_trial 999999 is no trial this study's loop just asked"),
        ("numpy", "suggested a candidate the flexibert-small space cannot train"),
        ("wait", "it has nothing to propose (waiting for nothing) and no trial in flight"),
    ],
)
def test_a_failing_loop_stops_its_study_with_the_reason_and_others_are_served(
    broken: Any, manager: Any, mode: str, said: str
) -> None:
    manager.launch(SearchSpec.from_dict(table_spec("bad", 3, loop="test-broken")))
    Broken.mode = mode
    assert manager.acquire("w", ("table",)) is None  # no exception: the worker goes on
    h = manager.get("bad")
    assert h.state == STOPPED
    reason = manager.snapshot(h).completed_reason
    assert said in reason and "archsearch resume bad" in reason, reason
    # a worker bound to it by --study says why it waits (resume goes on)
    assert refuse_unservable(h, ("table",)).startswith("study bad is stopped (loop test-broken")
    # another study is served by the same workers
    manager.launch(SearchSpec.from_dict(table_spec("good", 2)))
    grant = manager.acquire("w", ("table",))
    assert grant is not None and grant.study_name == "good"


def test_the_stopped_study_resumes_once_the_loop_is_fixed(broken: Any, manager: Any) -> None:
    manager.launch(SearchSpec.from_dict(table_spec("bad", 2, loop="test-broken")))
    Broken.mode = "raise"
    assert manager.acquire("w", ("table",)) is None
    Broken.mode = "ok"
    manager.resume("bad")
    h = manager.get("bad")
    assert h.state == RUNNING and manager.snapshot(h).completed_reason == ""
    for _ in range(2):
        grant = manager.acquire("w", ("table",))
        assert grant is not None and grant.study_name == "bad"
        manager.complete(grant.lease_id, {"accuracy": 0.5}, {})
    assert h.state == COMPLETED


def test_a_loop_that_waits_for_a_trial_in_flight_is_not_a_failure(
    broken: Any, manager: Any
) -> None:
    manager.launch(SearchSpec.from_dict(table_spec("w", 3, loop="test-broken")))
    assert manager.acquire("w1", ("table",)) is not None  # in flight
    Broken.mode = "wait"
    assert manager.acquire("w2", ("table",)) is None
    assert manager.get("w").state == RUNNING


class Batch(SearchLoop):
    """Proposes only when nothing runs (a synchronous batch loop's rightful wait); while it
    decides to wait, the test finishes the running trial."""

    name = "test-batch"
    deciding = threading.Event()
    go_on = threading.Event()

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        self.rng = random.Random(seed)

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        running = [t for t in snapshot.trials if t.state == "RUNNING"]
        if running:
            Batch.deciding.set()
            Batch.go_on.wait(10)
            raise NoSuggestion(f"waiting for {len(running)} running trial(s)")
        return [Suggestion(architecture=snapshot.space.sample(self.rng))]


def test_a_trial_finishing_while_the_loop_decides_to_wait_does_not_stop_the_study(
    manager: Any,
) -> None:
    """The "waits for nothing" check ran after the loop answered: the trial it waited for had
    finished meanwhile (its finish no longer asks a busy loop), so the study was stopped."""
    LOOPS.register("test-batch", Batch)
    try:
        manager.launch(SearchSpec.from_dict(table_spec("b", 3, loop="test-batch")))
        first = manager.acquire("w1", ("table",))
        assert first is not None
        got: list[Any] = []
        second = threading.Thread(target=lambda: got.append(manager.acquire("w2", ("table",))))
        second.start()
        assert Batch.deciding.wait(10)
        manager.complete(first.lease_id, {"accuracy": 0.5}, {})
        Batch.go_on.set()
        second.join(10)
        h = manager.get("b")
        assert h.state == RUNNING, manager.snapshot(h).completed_reason
        assert got and got[0] is not None and got[0].study_name == "b"  # asked again
    finally:
        LOOPS.unregister("test-batch")


class Asker(SearchLoop):
    """An Optuna-style loop: asks its trial itself, then answers with it (``asked_trial``);
    ``bad`` gives it a recipe the server refuses."""

    name = "test-asker"
    bad: ClassVar[bool] = True
    seen: ClassVar[list[list[tuple[int, str]]]] = []

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        pass

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        Asker.seen.append([(t.number, t.state) for t in snapshot.trials])
        assert snapshot.optuna_study is not None
        trial = snapshot.optuna_study.ask()
        arch = snapshot.space.suggest(trial)
        recipe = {"max_steps": -5} if Asker.bad else {}
        return [Suggestion(architecture=arch, asked_trial=trial._trial_id, recipe=recipe)]


def test_a_trial_the_loop_asked_before_it_failed_is_not_left_behind(manager: Any) -> None:
    """The loop's own trial stayed provisional: after resume every snapshot showed a RUNNING
    trial that nothing would finish, numbered like the next real one."""
    LOOPS.register("test-asker", Asker)
    Asker.bad, Asker.seen = True, []
    try:
        manager.launch(SearchSpec.from_dict(table_spec("a", 2, loop="test-asker")))
        assert manager.acquire("w", ("table",)) is None
        assert manager.get("a").state == STOPPED
        Asker.bad = False
        manager.resume("a")
        for _ in range(2):
            grant = manager.acquire("w", ("table",))
            assert grant is not None
            manager.complete(grant.lease_id, {"accuracy": 0.5}, {})
        assert manager.get("a").state == COMPLETED
        assert Asker.seen[1:] == [[], [(0, "COMPLETE")]]
    finally:
        LOOPS.unregister("test-asker")


def test_a_loop_whose_warm_up_fails_on_resume_reads_as_a_loop_failure(
    broken: Any, manager: Any, caplog: pytest.LogCaptureFixture
) -> None:
    manager.launch(SearchSpec.from_dict(table_spec("bad", 2, loop="test-broken")))
    manager.stop("bad")
    Broken.mode = "warm_up"
    caplog.set_level(logging.ERROR, logger="archsearch")
    with pytest.raises(FailedPrecondition, match="cannot go on: loop test-broken: its warm_up"):
        manager.resume("bad")
    h = manager.get("bad")
    reason = manager.snapshot(h).completed_reason
    assert h.state == STOPPED
    # "loop ..." is what `studies` shows as "stopped (loop failed)"
    assert reason.startswith("loop test-broken: its warm_up failed: RuntimeError: warm_up boom")
    assert reason.endswith("then `archsearch resume bad`)")
    # "the server log has the traceback", as the reason says
    assert any(r.exc_info is not None and "warm_up boom" in r.getMessage() for r in caplog.records)


def test_a_loop_that_fails_to_build_refuses_the_launch_and_leaves_no_study(
    broken: Any, manager: Any
) -> None:
    for mode in ("ctor", "warm_up"):
        Broken.mode = mode
        with pytest.raises(SpecError, match=f"the test-broken loop failed in .*{mode} boom"):
            manager.launch(SearchSpec.from_dict(table_spec("x", 2, loop="test-broken")))
        Broken.mode = "ok"
        with pytest.raises(NotFound):
            manager.get("x")
        assert "x" not in {s.study_name for s in optuna.get_all_study_summaries(manager.storage)}


def test_a_server_starts_when_a_stored_studys_loop_fails_to_build(
    broken: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A plugin loop whose constructor (or warm_up) raised kept the server from starting."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    first.launch(SearchSpec.from_dict(table_spec("bad", 2, loop="test-broken")))
    first.launch(SearchSpec.from_dict(table_spec("good", 5)))
    first.close()
    for mode, said in [
        ("ctor", "ctor boom"),
        ("warm_up", "warm_up boom"),
        ("ctor_exit", "failed in its constructor: SystemExit: 2"),  # the server exited, rc 2
    ]:
        Broken.mode = mode
        caplog.clear()
        caplog.set_level(logging.ERROR, logger="archsearch")
        again = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
        try:
            assert said in again.registry.unserved["bad"]
            assert "the server log has the traceback" in again.registry.unserved["bad"]
            logged = [r for r in caplog.records if "not serving it" in r.getMessage()]
            assert logged and logged[0].exc_info is not None, mode  # as the reason says
            grant = again.acquire("w", ("table",))
            assert grant is not None and grant.study_name == "good"
        finally:
            again.close()


def test_the_cli_shows_a_study_its_loop_failed(
    broken: Any, sqlite_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from archsearch.server import cli
    from archsearch.server.client import SearchClient, WorkerClient
    from archsearch.v1 import archsearch_pb2 as pb

    srv = sqlite_server()
    caps = pb.WorkerCapabilities(trainers=["table"])
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        admin.launch(table_spec("bad", 2, loop="test-broken"))
        Broken.mode = "raise"
        worker.register("w", caps)
        assert not worker.acquire("w", caps, 0).HasField("lease")  # answered, no INTERNAL
        assert admin.get_study("bad").state == pb.STUDY_STOPPED
    assert cli.main(["studies", "--server", srv.address]) == 0
    out = capsys.readouterr().out
    assert "stopped (loop failed)" in out and "(loop failed: the server stopped" in out
    assert cli.main(["show", "bad", "--server", srv.address]) == 0
    assert "loop test-broken failed: RuntimeError: boom" in capsys.readouterr().out


def test_a_slow_loop_does_not_hold_the_other_studies_work(broken: Any, manager: Any) -> None:
    """Every worker's acquire waited on the study whose loop was busy (its ask lock): a loop
    taking 45 s held every other study's work as long."""
    manager.launch(SearchSpec.from_dict(table_spec("slow", 3, loop="test-broken")))
    Broken.mode = "slow"
    first = threading.Thread(target=lambda: manager.acquire("w1", ("table",)))
    first.start()
    time.sleep(0.5)  # w1 is inside the slow loop's suggest
    # launched after "slow" and sorted after it: the acquire meets the slow study first
    manager.launch(SearchSpec.from_dict(table_spec("z-quick", 2)))
    started = time.monotonic()
    grant = manager.acquire("w2", ("table",))
    took = time.monotonic() - started
    first.join(10)
    assert grant is not None and grant.study_name == "z-quick"
    assert took < 2, took
