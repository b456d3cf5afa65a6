"""A study's loop that fails stops that study, not the workers (``server/_loop_guard.py``).

Before, anything a loop raised (or an answer that could not become a trial) went back to the
worker asking for work as INTERNAL: the worker exited, any other worker hit the same study
again, other studies starved, and the study read "running" with no reason outside the log.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _procs import table_spec

from archsearch.search import LOOPS, LoopSnapshot, NoSuggestion, SearchLoop, Suggestion
from archsearch.server._acquire import refuse_unservable
from archsearch.server._errors import FailedPrecondition
from archsearch.server._index import COMPLETED, RUNNING, STOPPED
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager


class Broken(SearchLoop):
    """Answers what ``mode`` says; ``"ok"`` suggests a random architecture."""

    name = "test-broken"
    mode: ClassVar[str] = "ok"

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        self.rng = random.Random(seed)

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        arch = snapshot.space.sample(self.rng)
        mode = Broken.mode
        if mode == "raise":
            raise RuntimeError("boom")
        if mode == "wait":
            raise NoSuggestion("waiting for nothing")
        answers: dict[str, Any] = {
            "dict": [{"architecture": arch}],
            "empty": [],
            "two": [Suggestion(architecture=arch)] * 2,
            "outside": [Suggestion(architecture={**arch, "nope": 1})],
            "attrs": [Suggestion(architecture=arch, attrs={"test:x": {1, 2}})],
            "recipe": [Suggestion(architecture=arch, recipe={"max_steps": -5})],
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


def test_a_loop_that_waits_is_not_a_failure(broken: Any, manager: Any) -> None:
    manager.launch(SearchSpec.from_dict(table_spec("w", 2, loop="test-broken")))
    Broken.mode = "wait"
    assert manager.acquire("w", ("table",)) is None
    assert manager.get("w").state == RUNNING
