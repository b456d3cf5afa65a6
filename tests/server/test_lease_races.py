"""Races at the edges of a lease: a heartbeat against the reaper, an acquire that gives up
during a stop and a resume, repeated finishing calls.

Each test widens its race window by making one step of the server wait on an event (in an
in-process ``StudyManager``), so the interleaving the race needs happens every time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import table_spec
from optuna.trial import TrialState

from archsearch.server import _storage, _trial_writes
from archsearch.server._errors import FailedPrecondition
from archsearch.server._leases import parse_lease_id
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning"),
]

TRAINERS = ("table",)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[StudyManager]:
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=2, heartbeat_interval_s=1)
    yield m
    m.close()


def in_thread(
    call: Callable[[], Any], name: str | None = None
) -> tuple[threading.Thread, list[Any]]:
    """Runs ``call`` in a started thread; its answer (or exception) lands in the list."""
    answers: list[Any] = []

    def run() -> None:
        try:
            answers.append(call())
        except Exception as e:  # the test reads it
            answers.append(e)

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    return thread, answers


def state_of(m: StudyManager, name: str, number: int) -> TrialState:
    return next(t.state for t in m.trials(m.get(name)) if t.number == number)


def wait_stale(m: StudyManager, name: str, lease_id: str) -> None:
    """Waits until the reaper would expire the trial of ``lease_id`` (the database's clock
    counts whole seconds, so this takes 2 to 3 s of a 2 s lease)."""
    h = m.get(name)
    trial_id = parse_lease_id(lease_id)[1]
    deadline = time.monotonic() + 15
    while not m.leases.expiring() or trial_id not in (
        _storage.stale_trial_ids(m.rdb, h.study_id) or []
    ):
        assert time.monotonic() < deadline, "the lease never went stale"
        time.sleep(0.1)


def test_a_heartbeat_the_reaper_races_is_refused_or_keeps_its_trial(
    manager: StudyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat found the lease live, then the reaper failed the trial before the
    heartbeat's write: the RPC answered a fresh deadline for a failed (and re-queued) trial,
    and the worker trained on until its completion was refused. A heartbeat that is answered
    now keeps its trial live: its completion is accepted."""
    m = manager
    m.launch(SearchSpec.from_dict(table_spec("h", 2, max_retries=3)))
    g = m.acquire("w", TRAINERS)
    assert g is not None
    wait_stale(m, "h", g.lease_id)  # the reaper would fail it now
    checked, reaped = threading.Event(), threading.Event()
    real = _trial_writes.heartbeat_op

    def between_check_and_write(tid: int) -> Any:
        checked.set()
        reaped.wait(1.0)  # the reaper runs here when it can (it cannot while h.lock is held)
        return real(tid)

    monkeypatch.setattr(_trial_writes, "heartbeat_op", between_check_and_write)
    beat, answers = in_thread(lambda: m.heartbeat(g.lease_id))
    assert checked.wait(10)

    def reap() -> None:
        m.reap_once()
        reaped.set()

    reaper, _ = in_thread(reap)
    reaper.join(30)
    beat.join(30)
    assert answers and not isinstance(answers[0], Exception), answers
    # answered with a deadline: the trial is still the worker's
    assert state_of(m, "h", g.trial_number) == TrialState.RUNNING
    assert m.complete(g.lease_id, {"accuracy": 0.5}, {})[1] == TrialState.COMPLETE


def test_a_heartbeat_after_the_reaper_failed_the_trial_is_refused(
    manager: StudyManager,
) -> None:
    m = manager
    m.launch(SearchSpec.from_dict(table_spec("r", 2, max_retries=3)))
    g = m.acquire("w", TRAINERS)
    assert g is not None
    wait_stale(m, "r", g.lease_id)
    m.reap_once()
    assert state_of(m, "r", g.trial_number) == TrialState.FAIL
    with pytest.raises(FailedPrecondition, match="expired or was given up"):
        m.heartbeat(g.lease_id)


@pytest.mark.parametrize("resumed", [True, False], ids=["stop-and-resume", "stop"])
def test_a_lease_taken_back_during_a_stop_is_pooled_or_failed_never_orphaned(
    manager: StudyManager, monkeypatch: pytest.MonkeyPatch, resumed: bool
) -> None:
    """The worker's acquire gave up while its lease was written, and a stop came meanwhile:
    the take-back revoked the lease but kept the trial out of the pool (stopped). A resume
    before it looked at the state again left the trial neither pooled nor failed: live in the
    index without a lease, never handed out, and the study never completed. Now the trial is
    pooled when the study runs again, and failed as unrun (queued again by the next resume)
    while it stays stopped."""
    m = manager
    m.launch(SearchSpec.from_dict(table_spec("t", 1)))
    h = m.get("t")

    def alive() -> bool:
        if not any(live.lease_id for live in h.index.live.values()):
            return True  # before the grant
        m.stop("t")  # comes while the lease was written; then the caller is gone
        return False

    real_revoke = m.leases.revoke

    class Revoked:
        """The revoke's write; the resume comes before the take-back reads the state."""

        def __init__(self, undone: Any) -> None:
            self.undone = undone

        def result(self) -> Any:
            out = self.undone.result()
            if resumed:
                m.resume("t")
            return out

    monkeypatch.setattr(m.leases, "revoke", lambda live: Revoked(real_revoke(live)))
    assert m.acquire("gone", TRAINERS, alive=alive) is None
    monkeypatch.undo()
    if resumed:
        assert h.state == "running" and len(h.index.pool) == 1
    else:
        assert h.state == "stopped" and not h.index.live and not h.index.pool
        assert [t.state for t in m.trials(h)] == [TrialState.FAIL]
        m.resume("t")  # queues the never-run candidate again
    g = m.acquire("w", TRAINERS)
    assert g is not None, "the taken-back trial is never handed out"
    m.complete(g.lease_id, {"accuracy": 0.5}, {})
    assert h.state == "completed"


class PausingLock:
    """A study lock that, once, lets ``thread`` wait after it fully released the lock, until
    ``until()`` holds (at most 2 s): a gap between two lock sections of that thread, opened
    wide."""

    def __init__(self, inner: Any, thread: str, until: Callable[[], bool]) -> None:
        self.inner, self.thread, self.until = inner, thread, until
        self.depth: dict[int, int] = {}
        self.paused = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = bool(self.inner.acquire(blocking, timeout))
        if got:
            me = threading.get_ident()
            self.depth[me] = self.depth.get(me, 0) + 1
        return got

    def release(self) -> None:
        me = threading.get_ident()
        self.depth[me] -= 1
        self.inner.release()
        mine = threading.current_thread().name == self.thread
        if mine and not self.depth[me] and not self.paused.is_set():
            self.paused.set()
            deadline = time.monotonic() + 2
            while not self.until() and time.monotonic() < deadline:
                time.sleep(0.005)

    def __enter__(self) -> PausingLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_duplicate_completion_racing_the_first_gets_the_same_answer(
    manager: StudyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two CompleteTrial calls with the same report at once (a worker's retry after a
    timeout): the second looked for the first's queued write before it was queued, then found
    the trial no longer live but still RUNNING in storage, and was refused ("already
    RUNNING"). Both now get the stored result."""
    m = manager
    m.launch(SearchSpec.from_dict(table_spec("d", 2)))
    h = m.get("d")
    g = m.acquire("w", TRAINERS)
    assert g is not None
    tid = parse_lease_id(g.lease_id)[1]
    real_finish = _trial_writes.finish_op

    def slow_finish(*args: Any, **kw: Any) -> Any:
        op = real_finish(*args, **kw)

        def slow(conn: Any) -> Any:
            time.sleep(0.5)  # the twin reads the stored trial meanwhile
            return op(conn)

        return slow

    monkeypatch.setattr(_trial_writes, "finish_op", slow_finish)
    lock = PausingLock(h.lock, "twin", lambda: tid in h.index.finishing)
    monkeypatch.setattr(h, "lock", lock)
    report = {"accuracy": 0.5}
    twin, twin_answers = in_thread(lambda: m.complete(g.lease_id, report, {}), "twin")
    assert lock.paused.wait(10)
    first, first_answers = in_thread(lambda: m.complete(g.lease_id, report, {}))
    first.join(30)
    twin.join(30)
    assert first_answers == twin_answers == [([0.5], TrialState.COMPLETE)]
    assert state_of(m, "d", g.trial_number) == TrialState.COMPLETE
