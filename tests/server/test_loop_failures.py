"""A study's loop that fails stops that study, not the workers (``server/_loop_guard.py``).

Before, anything a loop raised (or an answer that could not become a trial) went back to the
worker asking for work as INTERNAL: the worker exited, any other worker hit the same study
again, other studies starved, and the study read "running" with no reason outside the log.
"""

from __future__ import annotations

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
        self.rng = random.Random(seed)

    def warm_up(self, space: Any, on_ready: Any = None) -> None:
        if Broken.mode == "warm_up":
            raise RuntimeError("warm_up boom")
        super().warm_up(space, on_ready)

    def ready(self, space: Any) -> bool:
        if Broken.mode == "ready":
            raise RuntimeError("ready boom")
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
    with pytest.raises(FailedPrecondition) as refused:  # a worker bound to it by --study
        refuse_unservable(h, ("table",))
    assert str(refused.value).startswith("study bad is stopped (loop test-broken")
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
    broken: Any, tmp_path: Path
) -> None:
    """A plugin loop whose constructor (or warm_up) raised kept the server from starting."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    first.launch(SearchSpec.from_dict(table_spec("bad", 2, loop="test-broken")))
    first.launch(SearchSpec.from_dict(table_spec("good", 2)))
    first.close()
    for mode in ("ctor", "warm_up"):
        Broken.mode = mode
        again = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
        try:
            assert f"{mode} boom" in again.registry.unserved["bad"]
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
    manager.launch(SearchSpec.from_dict(table_spec("quick", 2)))
    started = time.monotonic()
    grant = manager.acquire("w2", ("table",))
    took = time.monotonic() - started
    first.join(10)
    assert grant is not None and grant.study_name == "quick"
    assert took < 2, took
