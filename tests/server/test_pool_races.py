"""Races between a loop's ask and the study's state changes: a resume that lowers the budget,
a stop while a queued retry is popped.

Each test holds the ask (or the pop of a retry) on an event in an in-process
``StudyManager``, and runs the other call in that window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import table_spec
from optuna.trial import FrozenTrial, TrialState

from archsearch.server import _pool
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning"),
]

TRAINERS = ("table",)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[StudyManager]:
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    yield m
    m.close()


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Runs ``call`` in a started thread; its answer (or exception) lands in the list."""
    answers: list[Any] = []

    def run() -> None:
        try:
            answers.append(call())
        except Exception as e:  # the test reads it
            answers.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


def hold_asks(
    monkeypatch: pytest.MonkeyPatch, waiting: bool, after: bool = False
) -> tuple[threading.Event, threading.Event]:
    """Holds the next ask of the kind ``waiting`` (a queued retry's pop, or the loop's) until
    the second event is set (at most 1 s: a fixed server may hold the other call back until
    then), before the ask or ``after`` it; the first event is set when the hold starts."""
    held_now, go = threading.Event(), threading.Event()
    real = _pool.ask_candidate

    def held(*args: Any) -> Any:
        if args[4] != waiting or held_now.is_set():
            return real(*args)
        if after:
            asked = real(*args)
        held_now.set()
        go.wait(1.0)
        return asked if after else real(*args)

    monkeypatch.setattr(_pool, "ask_candidate", held)
    return held_now, go


def distinct(trials: list[FrozenTrial]) -> int:
    """Distinct candidates asked, as a restarted server counts them (``rebuild_index``)."""
    return sum(
        1
        for t in trials
        if "failed_trial" not in t.system_attrs and "duplicate_of" not in t.user_attrs
    )


def test_a_budget_lowered_during_an_ask_is_never_exceeded(
    manager: StudyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``resume --n-trials K`` (K: the candidates asked so far) while the loop was being asked:
    the budget was checked before that ask's candidate was counted, so the study handed out
    K + 1. Now the candidate is counted in one step with a check of the budget as it is then:
    over it, it is dropped unstored, and the resume is not held up by the ask."""
    m = manager
    m.launch(SearchSpec.from_dict(table_spec("s", 10)))
    h = m.get("s")
    first = m.acquire("w0", TRAINERS)
    assert first is not None
    second = m.acquire("w1", TRAINERS)
    assert second is not None and not h.index.pool  # the next acquire asks the loop
    asking, go = hold_asks(monkeypatch, waiting=False)
    acquire, granted = in_thread(lambda: m.acquire("w2", TRAINERS))
    assert asking.wait(10)
    asked = h.index.originals  # the ask in flight is not counted yet
    m.resume("s", asked)  # accepted: nothing more than what was asked
    go.set()
    acquire.join(30)
    assert granted == [None]  # the candidate asked meanwhile is over the budget
    assert h.index.originals == asked == h.spec.n_trials
    for g in (first, second):
        m.complete(g.lease_id, {"accuracy": 0.5}, {})
    assert m.acquire("w0", TRAINERS) is None
    assert distinct(m.trials(h)) == asked
    assert h.state == "completed"


def queue_a_retry(m: StudyManager, name: str) -> None:
    """Launches ``name`` (3 trials) and fails its first trial retryably: a retry waits."""
    m.launch(SearchSpec.from_dict(table_spec(name, 3, max_retries=3)))
    g = m.acquire("w0", TRAINERS)
    assert g is not None
    m.fail(g.lease_id, "boom", retryable=True)
    assert m.get(name).index.waiting


def drain(m: StudyManager, name: str) -> None:
    """Resumes ``name`` and completes every trial it hands out."""
    m.resume(name)
    while (g := m.acquire("w9", TRAINERS)) is not None:
        m.complete(g.lease_id, {"accuracy": 0.5}, {})
    assert m.get(name).state == "completed"


@pytest.mark.parametrize("stop_first", [False, True], ids=["pop-then-stop", "stop-then-pop"])
def test_a_stop_racing_the_pop_of_a_retry_neither_counts_nor_invents_a_candidate(
    manager: StudyManager, monkeypatch: pytest.MonkeyPatch, stop_first: bool
) -> None:
    """An acquire pops a queued retry (``Study.ask``) outside the study lock while a stop
    fails the queued retries.

    pop-then-stop: the stop's write found the retry RUNNING and dropped it from the queue;
    the store then took it for a new candidate and counted it against the budget again.
    stop-then-pop: ``Study.ask`` found nothing WAITING and made a new trial from the study's
    sampler, a candidate the loop never proposed, counted and queued again on resume.
    """
    m = manager
    queue_a_retry(m, "s")
    h = m.get("s")
    counted, stored = h.index.originals, len(m.trials(h))
    holding, go = hold_asks(monkeypatch, waiting=True, after=not stop_first)
    acquire, granted = in_thread(lambda: m.acquire("w1", TRAINERS))
    assert holding.wait(10)
    m.stop("s")
    go.set()
    acquire.join(30)
    assert granted == [None]  # stopped: nothing handed out
    assert h.index.originals == counted  # a retry is no new candidate; nothing else was asked
    trials = m.trials(h)
    assert len(trials) == stored  # the retry, popped or not: no trial the loop never proposed
    assert all(t.state == TrialState.FAIL for t in trials)
    drain(m, "s")
    assert distinct(m.trials(h)) == 3 == h.index.originals
