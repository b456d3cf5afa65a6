"""Group commit and the server's own SQL: batching, failure isolation, and rows that Optuna
reads exactly as it reads its own writes (on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._database import open_storage
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import LEASE_ATTR, StudyManager
from archsearch.server._trial_writes import (
    TrialNotRunning,
    finish_op,
    heartbeat_op,
    insert_trial_op,
    intermediate_op,
    lease_op,
)
from archsearch.server._writer import StorageWriter, WriterClosed
from archsearch.spaces import load_table

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning"),
]

TABLE = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "flexibert-small"
).resolve() / "dataset_small_sst2.json"


# ----------------------------------------------------------------------------- StorageWriter


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[tuple[sqlalchemy.Engine, sqlalchemy.Table]]:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    meta = sqlalchemy.MetaData()
    table = sqlalchemy.Table(
        "t", meta, sqlalchemy.Column("k", sqlalchemy.Integer, primary_key=True)
    )
    meta.create_all(engine)
    yield engine, table
    engine.dispose()


def _rows(engine: sqlalchemy.Engine, table: sqlalchemy.Table) -> list[int]:
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sqlalchemy.select(table.c.k)))


def test_concurrent_writes_share_one_commit(scratch: Any) -> None:
    engine, table = scratch
    writer = StorageWriter(engine)
    gate, started = threading.Event(), threading.Event()

    def blocker(conn: sqlalchemy.Connection) -> str:
        started.set()
        gate.wait(10)  # holds the writer so that the next ten operations queue up
        conn.execute(table.insert().values(k=0))
        return "first"

    first = writer.submit(blocker)
    assert started.wait(10)
    rest = [
        writer.submit(lambda c, k=k: c.execute(table.insert().values(k=k)).rowcount)
        for k in range(1, 11)
    ]
    gate.set()
    assert first.result(10) == "first"
    assert [f.result(10) for f in rest] == [1] * 10
    writer.barrier()
    # blocker alone, then the ten queued inserts in one transaction, then the barrier's no-op
    assert writer.commits == 3
    assert writer.applied == 12
    assert _rows(engine, table) == list(range(11))
    writer.close()


def test_failing_operation_fails_alone_and_changes_nothing(scratch: Any) -> None:
    engine, table = scratch
    writer = StorageWriter(engine)
    gate, started = threading.Event(), threading.Event()

    def holder(conn: sqlalchemy.Connection) -> bool:
        started.set()
        return gate.wait(10)  # the next three operations queue up behind it

    hold = writer.submit(holder)
    assert started.wait(10)
    ok1 = writer.submit(lambda c: c.execute(table.insert().values(k=1)))
    bad = writer.submit(lambda c: c.execute(table.insert().values(k=1)))  # duplicate key
    ok2 = writer.submit(lambda c: c.execute(table.insert().values(k=2)))
    gate.set()
    hold.result(10)
    ok1.result(10)
    ok2.result(10)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        bad.result(10)
    assert _rows(engine, table) == [1, 2]
    writer.close()
    with pytest.raises(WriterClosed, match="shutting down"):
        writer.submit(lambda c: None)


def test_max_batch_must_be_positive(scratch: Any) -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        StorageWriter(scratch[0], max_batch=0)


# ----------------------------------------------------------------------------- same rows as Optuna


def _comparable(t: FrozenTrial) -> tuple[Any, ...]:
    return (
        t.number,
        t.state,
        t.values,
        t.params,
        t.distributions,
        t.user_attrs,
        t.system_attrs,
        t.intermediate_values,
        t.datetime_start is not None,
        t.datetime_complete is not None,
    )


DISTS = {
    "layers": IntDistribution(2, 4),
    "op": CategoricalDistribution(["sa", "l", "c"]),
    "lr": FloatDistribution(1e-5, 1e-2, log=True),
}
PARAMS = {"layers": 3, "op": "l", "lr": 3e-4}


def test_server_sql_reads_back_exactly_like_optunas_writes(storage_url: str) -> None:
    """The same two trials written by Optuna's API and by the server's operations are read
    identically by ``optuna.load_study`` (what optuna-dashboard uses as well)."""
    rdb = open_storage(storage_url, 60, 10)
    storage = DeferredTrialStorage(rdb)
    writer = StorageWriter(rdb.engine)
    try:
        ref, ours = (
            optuna.create_study(
                study_name=name,
                storage=storage,
                directions=["maximize"] * 2,
                sampler=optuna.samplers.RandomSampler(seed=7),  # both suggest the same values
            )
            for name in ("ref", "ours")
        )
        # Optuna's own path: ask, suggest, attributes, heartbeat, tell; then a COMPLETE trial
        # created from a template (what a reused duplicate result looks like).
        t = ref.ask()
        for name, dist in DISTS.items():
            t._suggest(name, dist)
        t.set_user_attr("candidate", {"architecture": {"l": 3}})
        storage.set_trial_system_attr(t._trial_id, LEASE_ATTR, "1.2.abc")
        storage.record_heartbeat(t._trial_id)
        for step, v in ((1, 0.3), (1, 0.35), (2, float("-inf"))):  # a step again overwrites
            storage.set_trial_intermediate_value(t._trial_id, step, v)
        ref.tell(t, [0.5, float("inf")])
        ref.add_trial(
            optuna.trial.create_trial(
                params=PARAMS, distributions=DISTS, values=[0.25, -1.0], user_attrs={"d": 1}
            )
        )
        # The server's path: a provisional trial asked in memory, inserted whole, leased and
        # finished by queued operations.
        with storage.deferring():
            t2 = ours.ask()
            for name, dist in DISTS.items():
                t2._suggest(name, dist)
        assert t2._trial_id < 0 and storage.is_provisional(t2._trial_id)
        _, frozen = storage.take_provisional(t2._trial_id)
        frozen.user_attrs["candidate"] = {"architecture": {"l": 3}}
        stored = writer.run(insert_trial_op(ours._study_id, frozen))
        assert stored.number == 0
        writer.run(lease_op(stored.trial_id, user={}, system={LEASE_ATTR: "1.2.abc"}))
        writer.run(heartbeat_op(stored.trial_id))
        for step, v in ((1, 0.3), (1, 0.35), (2, float("-inf"))):
            writer.run(intermediate_op(stored.trial_id, step, v))
        writer.run(finish_op(stored.trial_id, TrialState.COMPLETE, [0.5, float("inf")]))
        done = optuna.trial.create_trial(
            params=PARAMS, distributions=DISTS, values=[0.25, -1.0], user_attrs={"d": 1}
        )
        assert writer.run(insert_trial_op(ours._study_id, done)).number == 1
        # Reading with a fresh, plain Optuna storage.
        fresh = optuna.storages.RDBStorage(storage_url)
        a = optuna.load_study(study_name="ref", storage=fresh).get_trials()
        b = optuna.load_study(study_name="ours", storage=fresh).get_trials()
        assert [_comparable(x) for x in b] == [_comparable(x) for x in a]
        assert b[0].params == {
            "layers": t2.params["layers"],
            "op": t2.params["op"],
            "lr": t2.params["lr"],
        }
        assert b[0].values == [0.5, float("inf")]
        assert b[0].intermediate_values == {1: 0.35, 2: float("-inf")}
        assert b[0].datetime_start <= b[0].datetime_complete  # type: ignore[operator]
        with pytest.raises(TrialNotRunning, match="COMPLETE, not RUNNING"):
            writer.run(finish_op(stored.trial_id, TrialState.FAIL, None))
        with pytest.raises(TrialNotRunning, match="COMPLETE, not RUNNING"):
            writer.run(intermediate_op(stored.trial_id, 3, 0.1))
        assert optuna.load_study(study_name="ours", storage=fresh).get_trials()[0].state == (
            TrialState.COMPLETE
        )
        # Numbering stays Optuna's when Optuna's own writes interleave with the server's.
        via_optuna = storage.create_new_trial(ours._study_id)
        assert storage.get_trial(via_optuna).number == 2
        assert writer.run(insert_trial_op(ours._study_id, done)).number == 3
        assert [t.number for t in optuna.load_study(study_name="ours", storage=fresh).trials] == [
            0,
            1,
            2,
            3,
        ]
        fresh.engine.dispose()
    finally:
        writer.close()
        rdb.engine.dispose()


def test_provisional_trials_follow_optunas_rules(tmp_path: Path) -> None:
    rdb = open_storage(f"sqlite:///{tmp_path / 'p.db'}", 60, 10)
    storage = DeferredTrialStorage(rdb)
    study = optuna.create_study(study_name="s", storage=storage)
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 1}, distributions={"x": IntDistribution(0, 3)}, value=1.0
        )
    )
    with storage.deferring():
        trial = study.ask()
        assert trial.number == 1  # numbered after the stored trial
        assert [t.number for t in storage.get_all_trials(study._study_id)] == [0, 1]
        # Another thread (a ListTrials RPC) does not see what is not stored.
        seen: list[int] = []
        th = threading.Thread(target=lambda: seen.extend(t.number for t in study.get_trials()))
        th.start()
        th.join()
        assert seen == [0]
        with pytest.raises(ValueError, match="Cannot set different distribution kind"):
            trial._suggest("x", FloatDistribution(0.0, 1.0))
        assert trial.suggest_int("x", 0, 3) in range(4)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        with pytest.raises(RuntimeError, match="finished"):
            storage.set_trial_user_attr(trial._trial_id, "k", 1)
    # Outside the block trials are Optuna's own again.
    assert storage.create_new_trial(study._study_id) > 0
    rdb.engine.dispose()


def test_cached_trials_share_what_they_repeat(tmp_path: Path) -> None:
    """The server caches every finished trial for its life (issue 16's soak: memory grew with
    trials). Equal distributions are one object per study and strings are interned; what is
    read is exactly what Optuna's own storage reads."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    rdb = open_storage(url, 60, 10)
    storage = DeferredTrialStorage(rdb)
    study = optuna.create_study(study_name="c", storage=storage)
    for i in range(4):
        study.add_trial(
            optuna.trial.create_trial(
                params={"op": ["sa", "l", "c"][i % 3], "h": 64 * (1 + i % 2)},
                distributions={
                    "op": CategoricalDistribution(["sa", "l", "c"]),
                    "h": IntDistribution(64, 128, step=64),
                },
                user_attrs={"candidate": {"recipe": {"task": "sst2"}, "layers": [i, "sa"]}},
                value=float(i),
            )
        )
    cached = storage.get_all_trials(study._study_id, deepcopy=False)
    assert len(cached) == 4
    for name in ("op", "h"):
        assert len({id(t.distributions[name]) for t in cached}) == 1
    tasks = [t.user_attrs["candidate"]["recipe"]["task"] for t in cached]
    assert all(task is tasks[0] for task in tasks)
    own = optuna.load_study(study_name="c", storage=open_storage(url, 60, 10)).trials
    assert [
        (t.params, t.distributions, t.user_attrs, t.system_attrs, t.values) for t in cached
    ] == [(t.params, t.distributions, t.user_attrs, t.system_attrs, t.values) for t in own]
    rdb.engine.dispose()


# ----------------------------------------------------------------------------- the manager


def test_concurrent_workers_finish_the_budget_exactly(tmp_path: Path) -> None:
    """Eight threads acquire and complete at once: every trial is completed once, with the
    table's value, and the writes of simultaneous RPCs share commits."""
    m = StudyManager(f"sqlite:///{tmp_path / 'c.db'}", lease_duration_s=60)
    n_trials = 24
    m.launch(
        SearchSpec.from_dict(
            {
                "name": "c",
                "space": "flexibert-small",
                "trainer": "table",
                "n_trials": n_trials,
                "loop": "random",
                "space_options": {"table": str(TABLE)},
            }
        )
    )
    table = load_table(str(TABLE))

    def worker(i: int) -> int:
        done = 0
        while (g := m.acquire(f"w{i}", ("table",), "c", 0)) is not None:
            score = table.score(g.candidate.architecture, "sst2")
            values, _ = m.complete(g.lease_id, {"accuracy": float(score)}, {})
            assert values == [score]
            assert m.complete(g.lease_id, {"accuracy": float(score)}, {})[0] == values
            done += 1
        return done

    with ThreadPoolExecutor(8) as pool:
        completed = sum(pool.map(worker, range(8)))
    h = m.get("c")
    trials = m.trials(h)
    assert h.state == "completed"
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    reused = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert completed == n_trials  # repeats do not consume the budget: n_trials distinct
    assert len(trials) == n_trials + len(reused)
    assert len({t.user_attrs["arch"] for t in trials}) == n_trials
    for t in trials:
        arch = t.user_attrs["candidate"]["architecture"]
        assert t.values == [table.score(arch, "sst2")]
    assert m.writer.commits < m.writer.applied
    m.close()


def test_urgent_operation_overtakes_a_batch_in_progress(scratch: Any) -> None:
    engine, table = scratch
    writer = StorageWriter(engine)
    order: list[str] = []
    gates = {name: threading.Event() for name in ("go1", "in2", "go2")}

    def first(conn: sqlalchemy.Connection) -> None:
        order.append("first")
        gates["go1"].wait(10)  # holds the writer while the next batch queues up

    def second(conn: sqlalchemy.Connection) -> None:
        order.append("second")
        gates["in2"].set()
        gates["go2"].wait(10)  # the urgent one arrives while this batch is in progress

    def insert(name: str, k: int) -> Any:
        def op(conn: sqlalchemy.Connection) -> None:
            order.append(name)
            conn.execute(table.insert().values(k=k))

        return op

    writer.submit(first)
    while not order:  # first is running alone
        threading.Event().wait(0.01)
    queued = [writer.submit(second)] + [writer.submit(insert(f"n{k}", k)) for k in range(1, 4)]
    gates["go1"].set()
    assert gates["in2"].wait(10)
    urgent = writer.submit(insert("urgent", 10), urgent=True)
    gates["go2"].set()
    urgent.result(10)
    for f in queued:
        f.result(10)
    # the batch [second, n1, n2, n3] committed early after `second`; n1..n3 came after
    assert order == ["first", "second", "urgent", "n1", "n2", "n3"]
    assert writer.commits == 4
    assert _rows(engine, table) == [1, 2, 3, 10]
    writer.close()


def _spec(name: str, n_trials: int) -> SearchSpec:
    return SearchSpec.from_dict(
        {
            "name": name,
            "space": "flexibert-small",
            "trainer": "table",
            "n_trials": n_trials,
            "loop": "random",
            "space_options": {"table": str(TABLE)},
        }
    )


def test_answers_come_after_commits_and_the_pool_follows_active_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    m = StudyManager(url, lease_duration_s=60)
    m.launch(_spec("d", 20))
    h = m.get("d")
    table = load_table(str(TABLE))
    fresh = optuna.storages.RDBStorage(url)  # a second reader: sees committed data only
    grants = [m.acquire(f"w{i}", ("table",), "d", 0) for i in range(4)]
    assert all(g is not None for g in grants)
    for g in grants:
        assert g is not None
        stored = optuna.load_study(study_name="d", storage=fresh).trials[g.trial_number]
        assert stored.state == TrialState.RUNNING
        assert stored.system_attrs[LEASE_ATTR] == g.lease_id
        assert stored.user_attrs["candidate"]["architecture"] == g.candidate.architecture
    assert len(h.index.pool) == 0  # acquire prepares inline; nothing ahead yet
    pools = []
    for g in grants:
        assert g is not None
        score = float(table.score(g.candidate.architecture, "sst2"))  # type: ignore[arg-type]
        m.complete(g.lease_id, {"accuracy": score}, {})
        stored = optuna.load_study(study_name="d", storage=fresh).trials[g.trial_number]
        assert (stored.state, stored.values) == (TrialState.COMPLETE, [score])
        pools.append(len(h.index.pool))
    # four active workers: each finish prepares up to two more, up to four ready candidates
    assert pools == [2, 4, 4, 4]
    prepared = [t for t in optuna.load_study(study_name="d", storage=fresh).trials if t.number > 3]
    assert len(prepared) == 4
    assert all(t.state == TrialState.RUNNING and LEASE_ATTR not in t.system_attrs for t in prepared)
    fresh.engine.dispose()
    m.close()
