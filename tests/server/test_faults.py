"""Faults inside the study manager (issue 11): restart grace, callers that gave up, stop,
candidates in flight twice, repeats and the trial budget, loops that build in the background.

Every test checks that each FAIL trial carries a ``fail_reason``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import optuna
import pytest
import sqlalchemy
from _procs import TABLE, table_spec
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._spec import SearchSpec
from archsearch.server._studies import (
    COMPLETED_REASON_ATTR,
    LEASE_ATTR,
    STOPPED_REASON,
    Grant,
    StudyManager,
)
from archsearch.spaces import load_table
from archsearch.v1 import archsearch_pb2 as pb

TRAINERS = ("table",)


@pytest.fixture
def url(storage_url: str) -> str:
    """Every backend (SQLite; PostgreSQL unless ARCHSEARCH_SKIP_POSTGRES is set)."""
    return storage_url


@pytest.fixture
def managers() -> Iterator[list[StudyManager]]:
    opened: list[StudyManager] = []
    yield opened
    for m in opened:
        m.close()


def open_manager(managers: list[StudyManager], url: str, **kw: Any) -> StudyManager:
    m = StudyManager(url, **{"lease_duration_s": 30, "heartbeat_interval_s": 5, **kw})
    managers.append(m)
    return m


def stored(url: str, name: str) -> list[FrozenTrial]:
    """The trials as another process (the dashboard) reads them: no server cache."""
    rdb = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=rdb).get_trials(deepcopy=False)
    finally:
        rdb.engine.dispose()


def assert_fails_have_reasons(trials: list[FrozenTrial]) -> None:
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("fail_reason"), f"trial {t.number} FAIL without a reason"


def score(g: Grant) -> dict[str, float]:
    return {"accuracy": float(load_table(TABLE).score(g.candidate.architecture, "sst2"))}


def heartbeat_rows(url: str) -> set[int]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            table = models.TrialHeartbeatModel.__table__
            return {r[0] for r in conn.execute(sqlalchemy.select(table.c.trial_id))}
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- restart grace


def leased_then_down(managers: list[StudyManager], url: str, name: str) -> Grant:
    """A lease (2 s) of a new study's trial, then its server gone: the lease outlives it."""
    m = open_manager(managers, url, lease_duration_s=2, heartbeat_interval_s=1)
    m.launch(SearchSpec.from_dict(table_spec(name, 2)))
    g = m.acquire("w", TRAINERS)
    assert g is not None
    m.close()
    managers.remove(m)
    return g


def test_restarted_server_gives_old_leases_one_lease_duration(managers, url) -> None:
    """A lease whose last heartbeat predates the server's start is not expired before start +
    lease duration, so a worker that finished while the server was down reports its result."""
    g = leased_then_down(managers, url, "g")
    time.sleep(3.2)  # the server is down longer than the lease: the heartbeat is stale

    m2 = open_manager(managers, url, lease_duration_s=2, heartbeat_interval_s=1)
    m2.reap_once()  # the old code failed the trial here
    assert m2.complete(g.lease_id, score(g), {})[1] == TrialState.COMPLETE
    trials = stored(url, "g")
    assert [t.state for t in trials if t.number == g.trial_number] == [TrialState.COMPLETE]
    assert not any("failed_trial" in t.system_attrs for t in trials)  # nothing retrained


def test_the_grace_counts_from_when_the_server_answers(managers, url) -> None:
    """A start-up longer than a lease (many studies to rebuild) used up the grace before the
    port opened: the leases of live workers expired as it did, and their finished results
    were refused and trained again."""
    from archsearch.server.app import ArchsearchServer, ServerConfig

    g = leased_then_down(managers, url, "s")
    config = ServerConfig(storage=url, port=0, lease_duration_s=2, heartbeat_interval_s=1)
    server = ArchsearchServer(config)
    try:
        time.sleep(2.5)  # a slow start-up: the lease table was made a lease ago
        server.start()
        server.manager.reap_once()  # the old code failed the trial here
        assert server.manager.complete(g.lease_id, score(g), {})[1] == TrialState.COMPLETE
    finally:
        server.stop()


def test_a_paused_server_gives_live_leases_a_grace(managers, url, monkeypatch) -> None:
    """A server that did not run for longer than a lease (SIGSTOP, a stalled VM) expired
    every live lease the moment it ran again, before the heartbeats that waited were read."""
    m = open_manager(managers, url, lease_duration_s=2, heartbeat_interval_s=1)
    m.launch(SearchSpec.from_dict(table_spec("p", 2)))
    time.sleep(2.2)  # past the start-up grace
    g = m.acquire("w", TRAINERS)
    assert g is not None
    reaper = m.retries
    waits = iter([3.0])  # the reaper's first wait lasts 3 s: the server was paused

    def paused_wait(timeout: float) -> bool:
        time.sleep(next(waits, timeout))
        return reaper._stop.is_set()

    monkeypatch.setattr(reaper._stop, "wait", paused_wait)
    reaper.start()
    time.sleep(3.6)  # the pause, then a reap or two: the lease has no heartbeat for 3.6 s
    assert m.leases.expiring() is False
    assert m.complete(g.lease_id, score(g), {})[1] == TrialState.COMPLETE


def test_expired_lease_fail_carries_its_reason(managers, url) -> None:
    m = open_manager(managers, url, lease_duration_s=2, heartbeat_interval_s=1)
    m.launch(SearchSpec.from_dict(table_spec("e", 1)))
    g = m.acquire("w", TRAINERS)
    assert g is not None
    deadline = time.monotonic() + 15
    while m.trials(m.get("e"))[0].state == TrialState.RUNNING:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.3)
        m.reap_once()
    trials = stored(url, "e")
    failed = next(t for t in trials if t.number == g.trial_number)
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"] == "lease expired: no heartbeat for 2 s"
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == g.trial_number)
    assert retry.state == TrialState.WAITING
    # The server's own (cached) view says the same.
    assert m.trials(m.get("e"))[0].user_attrs["fail_reason"] == failed.user_attrs["fail_reason"]


# ----------------------------------------------------------------------------- callers gone


def test_no_lease_for_a_caller_that_gave_up(managers, url) -> None:
    m = open_manager(managers, url)
    m.launch(SearchSpec.from_dict(table_spec("a", 3)))
    first = m.acquire("w0", TRAINERS)
    assert first is not None
    m.complete(first.lease_id, score(first), {})  # prepares the next candidate
    h = m.get("a")
    assert len(h.index.pool) == 1
    prepared = h.index.pool[0]
    assert m.acquire("gone", TRAINERS, alive=lambda: False) is None
    assert list(h.index.pool) == [prepared]  # still there, unleased
    g = m.acquire("w1", TRAINERS)
    assert g is not None and g.trial_number == h.index.live[prepared].number
    assert not [t for t in stored(url, "a") if t.user_attrs.get("worker") == "gone"]


def test_lease_taken_back_when_the_caller_gives_up_during_the_grant(managers, url) -> None:
    """The call ends while its lease is written: the trial is prepared again at once (no
    lease, no heartbeat: the reaper leaves it alone), and the next worker gets it."""
    m = open_manager(managers, url, lease_duration_s=2, heartbeat_interval_s=1)
    m.launch(SearchSpec.from_dict(table_spec("b", 2)))
    answers = iter([True, True, False])  # alive before the lease, gone once it is stored
    assert m.acquire("gone", TRAINERS, alive=lambda: next(answers, False)) is None
    h = m.get("b")
    assert len(h.index.pool) == 1
    tid = h.index.pool[0]
    row = next(t for t in stored(url, "b") if t._trial_id == tid)
    assert row.state == TrialState.RUNNING and row.system_attrs[LEASE_ATTR] == ""
    assert tid not in heartbeat_rows(url)
    time.sleep(2.5)  # past the lease: nothing expires, nothing is re-queued
    m.reap_once()
    assert [t.state for t in stored(url, "b")] == [TrialState.RUNNING]
    g = m.acquire("w1", TRAINERS)
    assert g is not None and g.trial_number == row.number
    m.complete(g.lease_id, score(g), {})
    assert_fails_have_reasons(stored(url, "b"))


def test_acquire_whose_deadline_passes_before_the_grant(tmp_path: Path) -> None:
    """A real AcquireTrial call whose deadline passes while the loop proposes: the trial is
    not leased to it, and the next worker's call gets that very trial."""
    from archsearch.server.app import ArchsearchServer, ServerConfig

    url = f"sqlite:///{tmp_path / 's.db'}"
    srv = ArchsearchServer(
        ServerConfig(storage=url, port=0, lease_duration_s=30, heartbeat_interval_s=5)
    )
    srv.start()
    try:
        h = srv.manager.launch(SearchSpec.from_dict(table_spec("d", 2)))
        slow = threading.Event()
        real_ask = h.loop.suggest

        def slow_ask(*args: Any, **kw: Any) -> Any:
            if not slow.is_set():
                slow.set()
                time.sleep(2.0)  # longer than the caller's deadline
            return real_ask(*args, **kw)

        h.loop.suggest = slow_ask  # type: ignore[method-assign]
        caps = pb.WorkerCapabilities(trainers=["table"], device="cpu")
        with grpc.insecure_channel(srv.address) as ch:
            stub = pb.DESCRIPTOR.services_by_name["WorkerService"]
            assert stub is not None
            from archsearch.v1 import archsearch_pb2_grpc as pb_grpc

            worker = pb_grpc.WorkerServiceStub(ch)
            req = pb.AcquireTrialRequest(worker_id="impatient", capabilities=caps, timeout_s=5)
            with pytest.raises(grpc.RpcError) as e:
                worker.AcquireTrial(req, timeout=1.0)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.monotonic() + 10
            while not h.index.live or h.index.preparing:  # the slow ask finishes
                assert time.monotonic() < deadline
                time.sleep(0.1)
            time.sleep(0.3)
            leased = [t for t in stored(url, "d") if t.system_attrs.get(LEASE_ATTR)]
            assert leased == []  # nothing leased to the call that gave up
            req = pb.AcquireTrialRequest(worker_id="next", capabilities=caps, timeout_s=5)
            resp = worker.AcquireTrial(req, timeout=10)
        assert resp.has_trial and resp.lease.trial_number == 0
        trials = stored(url, "d")
        assert {t.user_attrs.get("worker") for t in trials if t.number == 0} == {"next"}
        assert not any(t.user_attrs.get("worker") == "impatient" for t in trials)
    finally:
        srv.stop(0)


# ----------------------------------------------------------------------------- stop


def test_stop_leaves_nothing_waiting(managers, url) -> None:
    m = open_manager(managers, url)
    m.launch(SearchSpec.from_dict(table_spec("s", 20, max_retries=3)))
    for i in range(6):  # six active workers: up to six candidates are prepared ahead
        m._active[f"w{i}"] = (time.monotonic(), TRAINERS, "")
    for g in [m.acquire("w0", TRAINERS), m.acquire("w1", TRAINERS)]:
        assert g is not None
        m.complete(g.lease_id, score(g), {})  # each prepares two candidates ahead
    running = m.acquire("w2", TRAINERS)
    failing = m.acquire("w3", TRAINERS)
    assert running is not None and failing is not None
    assert m.fail(failing.lease_id, "out of memory", retryable=True)  # a queued retry
    h = m.get("s")
    assert h.index.pool and h.index.waiting  # something prepared and something queued

    m.stop("s")
    states = Counter(t.state for t in stored(url, "s"))
    assert states[TrialState.WAITING] == 0
    assert states[TrialState.RUNNING] == 1  # the leased one runs on
    assert m.acquire("w0", TRAINERS) is None
    assert m.complete(running.lease_id, score(running), {})[1] == TrialState.COMPLETE
    trials = stored(url, "s")
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    unrun = [t for t in trials if t.user_attrs.get("fail_reason") == STOPPED_REASON]
    assert len(unrun) >= 2  # the prepared candidates and the queued retry
    assert_fails_have_reasons(trials)

    m.close()  # a restarted server finds nothing to run either
    managers.remove(m)
    m2 = open_manager(managers, url)
    assert m2.get("s").state == "stopped" and not m2.get("s").index.pool
    assert m2.acquire("w0", TRAINERS) is None


def test_trial_failing_after_stop_is_not_requeued(managers, url) -> None:
    m = open_manager(managers, url)
    m.launch(SearchSpec.from_dict(table_spec("f", 5)))
    g = m.acquire("w", TRAINERS)
    assert g is not None
    m.stop("f")
    assert m.fail(g.lease_id, "worker stopped (SIGTERM)", retryable=True, released=True) is False
    trials = stored(url, "f")
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    assert_fails_have_reasons(trials)


# ----------------------------------------------------------------------------- repeats


def tiny_bert(name: str, n_trials: int, ratios: list[int], **kw: Any) -> SearchSpec:
    """A bert space with ``len(ratios)`` x (other choices) candidates: repeats are common."""
    return SearchSpec.from_dict(
        {
            "name": name,
            "space": "bert",
            "n_trials": n_trials,
            "loop": "random",
            "space_options": {
                "num_hidden_layers": [1],
                "hidden_size": [64],
                "num_attention_heads": [2],
                "intermediate_ratio": ratios,
                **kw,
            },
        }
    )


def bert_metrics(g: Grant) -> dict[str, float]:
    arch = g.candidate.architecture
    return {"accuracy": arch["intermediate_size"] / 1000 + arch["num_hidden_layers"] / 100}


def test_a_candidate_in_flight_is_not_handed_out_again(managers, url) -> None:
    """Two candidates, three workers: the third gets no work while both are in flight; once
    they finished, the loop's repeats are recorded, and the study ends."""
    m = open_manager(managers, url)
    m.launch(tiny_bert("t", 5, [1, 2]))
    first = m.acquire("w0", ("bert",))
    second = m.acquire("w1", ("bert",))
    assert first is not None and second is not None
    assert first.candidate.fingerprint() != second.candidate.fingerprint()
    assert m.acquire("w2", ("bert",)) is None  # both candidates are in flight: no work yet
    assert m.get("t").state == "running"
    for g in (first, second):
        m.complete(g.lease_id, bert_metrics(g), {})
    while (g := m.acquire("w2", ("bert",))) is not None:  # nothing new is left
        raise AssertionError(f"trained again: {g.candidate.architecture}")
    h = m.get("t")
    assert h.state == "completed"
    trials = stored(url, "t")
    trained = [t for t in trials if t.user_attrs.get("worker")]
    assert len(trained) == 2
    assert all(t.state == TrialState.COMPLETE for t in trials)
    reason = m.storage.get_study_user_attrs(h.study_id)[COMPLETED_REASON_ATTR]
    assert "repeated candidates in a row" in reason


def test_a_candidate_completing_while_it_is_asked_again_is_not_trained_again(managers, url) -> None:
    """Preparing a candidate reads the finished ones, then checks the ones in flight; a
    completion between the two moves it from one to the other. Simulated (``done.get`` misses,
    as a read just before the completion would): it must still not be handed out again."""
    m = open_manager(managers, url)
    m.launch(tiny_bert("g", 3, [1, 2]))
    first = m.acquire("w0", ("bert",))
    assert first is not None
    m.complete(first.lease_id, bert_metrics(first), {})

    class ReadTooEarly(dict):
        def get(self, key, default=None):
            return default

    h = m.get("g")
    h.index.done = ReadTooEarly(h.index.done)
    fp = first.candidate.fingerprint()
    while (g := m.acquire("w1", ("bert",))) is not None:
        assert g.candidate.fingerprint() != fp, "the completed candidate was trained again"
        m.complete(g.lease_id, bert_metrics(g), {})


def test_many_workers_never_train_one_candidate_twice_at_once(managers, url) -> None:
    """Six threads against a four-candidate space: at no moment do two leases hold the same
    candidate, and each candidate is trained exactly once."""
    m = open_manager(managers, url)
    m.launch(tiny_bert("m", 4, [1, 2], num_hidden_layers=[1, 2]))
    holding: Counter[str] = Counter()
    lock = threading.Lock()
    clashes: list[str] = []
    trained: list[str] = []

    def worker(i: int) -> None:
        idle_since = time.monotonic()
        while m.get("m").state == "running" and time.monotonic() - idle_since < 20:
            g = m.acquire(f"w{i}", ("bert",), timeout_s=0.2)
            if g is None:
                continue
            idle_since = time.monotonic()
            fp = g.candidate.fingerprint()
            with lock:
                holding[fp] += 1
                if holding[fp] > 1:
                    clashes.append(fp)
                trained.append(fp)
            time.sleep(0.05)
            with lock:
                holding[fp] -= 1
            m.complete(g.lease_id, bert_metrics(g), {})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not clashes
    assert m.get("m").state == "completed"
    assert sorted(Counter(trained).values()) == [1, 1, 1, 1]


def test_n_trials_counts_distinct_candidates(managers, url) -> None:
    """A 12-candidate space and 10 trials: random sampling repeats itself, yet the study ends
    with 10 distinct completed candidates; repeats are recorded besides."""
    m = open_manager(managers, url)
    m.launch(tiny_bert("n", 10, [1, 2, 4], num_hidden_layers=[1, 2], hidden_size=[64, 128]))
    while (g := m.acquire("w", ("bert",))) is not None:
        m.complete(g.lease_id, bert_metrics(g), {})
    h = m.get("n")
    assert h.state == "completed"
    trials = stored(url, "n")
    assert all(t.state == TrialState.COMPLETE for t in trials)
    distinct = {t.user_attrs["arch"] for t in trials}
    originals = [t for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(originals) == 10 and len(distinct) == 10
    assert m.storage.get_study_user_attrs(h.study_id)[COMPLETED_REASON_ATTR].startswith(
        "n_trials reached"
    )
    m.close()  # the budget is counted the same way after a restart
    managers.remove(m)
    m2 = open_manager(managers, url)
    assert m2.get("n").index.originals == 10


def test_study_on_an_exhausted_space_ends(managers, url) -> None:
    """3 distinct candidates and n_trials 10: the study completes with its reason instead of
    asking for ever."""
    m = open_manager(managers, url)
    m.launch(tiny_bert("x", 10, [1, 2, 4]))
    t0 = time.monotonic()
    while (g := m.acquire("w", ("bert",))) is not None:
        m.complete(g.lease_id, bert_metrics(g), {})
        assert time.monotonic() - t0 < 60
    h = m.get("x")
    assert h.state == "completed"
    trials = stored(url, "x")
    assert len({t.user_attrs["arch"] for t in trials}) == 3
    assert len([t for t in trials if "duplicate_of" not in t.user_attrs]) == 3
    reason = m.storage.get_study_user_attrs(h.study_id)[COMPLETED_REASON_ATTR]
    assert "50 repeated candidates in a row after 3 distinct ones" in reason


# ----------------------------------------------------------------------------- background build


def test_library_build_does_not_block_acquire(managers, url, tmp_path, monkeypatch) -> None:
    """While a library loop embeds its library, acquire answers "no work" at once; work is
    handed out once the library is built."""
    from archsearch.search._library_loops import CACHE_DIR_ENV
    from archsearch.surrogates import Transformer2vec

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))  # nothing cached: it builds
    release = threading.Event()
    real_fit = Transformer2vec.fit

    def slow_fit(self: Any, *args: Any, **kw: Any) -> Any:
        release.wait(60)
        return real_fit(self, *args, **kw)

    monkeypatch.setattr(Transformer2vec, "fit", slow_fit)
    m = open_manager(managers, url)
    try:
        m.launch(
            SearchSpec.from_dict(
                {
                    "name": "lib",
                    "space": "flexibert",
                    "loop": "boshnas",
                    "n_trials": 2,
                    "loop_options": {"library_size": 24, "n_init": 2, "batch_size": 2},
                }
            )
        )
        answered: list[Any] = []
        caller = threading.Thread(target=lambda: answered.append(m.acquire("w", ("bert",))))
        t0 = time.monotonic()
        caller.start()
        caller.join(5)
        assert answered == [None], "acquire waited for the library to be built"
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
    g = m.acquire("w", ("bert",), timeout_s=120)
    assert g is not None
    assert g.candidate.space == "flexibert"
