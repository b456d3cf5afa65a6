"""A study whose first candidates all fail with one reason stops with it (and the fix)
instead of spending its whole budget in seconds; once a candidate has trained, failures are
the candidates' own and the study goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import table_spec

from archsearch.server._failure_streak import SAME_FAILURES
from archsearch.server._index import RUNNING, STOPPED
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager

BROKEN = "candidate error: custom task 'spam': train.csv:7: 3 fields, the header has 2"


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[StudyManager]:
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    yield m
    m.close()


def _fail_next(m: StudyManager, reason: str) -> None:
    grant = m.acquire("w", ("table",))
    assert grant is not None
    assert not m.fail(grant.lease_id, reason, retryable=False)


def test_the_same_failure_on_every_first_candidate_stops_the_study(manager) -> None:
    h = manager.launch(SearchSpec.from_dict(table_spec("s", 20)))
    for _ in range(SAME_FAILURES - 1):
        _fail_next(manager, BROKEN)
    assert h.state == RUNNING
    _fail_next(manager, BROKEN)
    assert h.state == STOPPED
    assert f"its first {SAME_FAILURES} candidates failed with the same error" in h.completed_reason
    assert BROKEN in h.completed_reason and "archsearch resume s" in h.completed_reason
    assert h.index.originals < 20  # the budget was not spent
    # fixed: resume goes on and the candidates train
    manager.resume("s")
    grant = manager.acquire("w", ("table",))
    assert grant is not None and h.state == RUNNING
    manager.complete(grant.lease_id, {"accuracy": 0.5}, {})


def test_other_reasons_or_a_trained_candidate_keep_it_running(manager) -> None:
    h = manager.launch(SearchSpec.from_dict(table_spec("s", 20)))
    for i in range(2 * SAME_FAILURES):  # each failure its own: the candidates'
        _fail_next(manager, f"candidate error: {i} heads do not divide the width")
    assert h.state == RUNNING
    grant = manager.acquire("w", ("table",))
    assert grant is not None
    manager.complete(grant.lease_id, {"accuracy": 0.5}, {})
    for _ in range(2 * SAME_FAILURES):  # one candidate trained: a region that fails
        _fail_next(manager, "candidate error: out of memory")
    assert h.state == RUNNING
