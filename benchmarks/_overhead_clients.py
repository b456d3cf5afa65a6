"""The client side of ``service_overhead.py``: storage helpers and the client processes that
run trial lifecycles against each system (ours, Optuna in-process, Optuna's gRPC proxy)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
import traceback
from dataclasses import dataclass
from typing import Any

TASK = "sst2"
STUDY = "bench"
MAX_TRIALS = 100_000  # archsearch's n_trials cap; far more than any cell completes


# ----------------------------------------------------------------------------- storage helpers


def _sqlite_file(url: str) -> str:
    return url[len("sqlite:///") :]


def prepare_sqlite(url: str) -> None:
    """Creates the file in WAL mode (persistent), as ``archsearch serve`` does for its files."""
    with contextlib.closing(sqlite3.connect(_sqlite_file(url))) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def make_rdb(url: str) -> Any:
    """An ``RDBStorage`` with archsearch's SQLite settings (busy timeout, synchronous=NORMAL)."""
    import optuna
    import sqlalchemy

    rdb = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})

    @sqlalchemy.event.listens_for(rdb.engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    rdb.engine.dispose()  # connections opened before the listener lack the pragma
    return rdb


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# ----------------------------------------------------------------------------- client processes


@dataclass
class ClientJob:
    system: str
    index: int
    target: str  # host:port for ours/b, storage URL for a
    table: str
    warmup_s: float
    measure_s: float
    space: str = "full"


def client_main(job: ClientJob, ready: Any, go: Any, t0: Any, results: Any) -> None:
    """One client process: set up, wait for the common start, loop lifecycles, send samples.

    Samples are ``(t_end, lifecycle_s, acquire_s)`` for every lifecycle that ends after the
    warm-up; the parent keeps those ending inside the measurement window.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    out: dict[str, Any] = {"index": job.index, "samples": [], "errors": 0, "no_work": 0}
    try:
        _quiet_optuna()
        lifecycle = _setup(job)
        ready.wait(timeout=120)
        if not go.wait(timeout=120):
            raise RuntimeError("no start signal from the parent")
        warm_end = t0.value + job.warmup_s
        end = warm_end + job.measure_s
        samples = out["samples"]
        last_error = ""
        while True:
            start = time.perf_counter()
            if start >= end:
                break
            try:
                acq = lifecycle()
            except _NoWork:
                out["no_work"] += 1
                continue
            except Exception as e:  # count and go on: a benchmark reports errors, not hides them
                out["errors"] += 1
                last_error = f"{type(e).__name__}: {e}"[:300]
                continue
            stop = time.perf_counter()
            if stop >= warm_end:
                samples.append((stop, stop - start, acq))
        out["last_error"] = last_error
    except Exception:
        out["fatal"] = traceback.format_exc()[-2000:]
        with contextlib.suppress(Exception):
            ready.abort()  # the parent stops waiting for the others
    results.put(out)


class _NoWork(Exception):
    pass


# Parsing the table and building the space takes ~0.5 s of CPU per process; the forkserver does
# it once (it imports ``service_overhead.py`` as ``__mp_main__`` with the variable below set,
# which calls :func:`preload`) and every client
# process forked from it inherits the result.
PRELOAD_ENV = "ARCHSEARCH_BENCH_PRELOAD_TABLE"
_SPACES: dict[tuple[str, str], Any] = {}


def space_options(table: str, space: str) -> dict[str, Any]:
    """``full``: the whole flexibert-small space; ``table``: only the table's SST-2 rows."""
    return {"table": table, "task": TASK} if space == "table" else {"task": TASK}


def _space(table: str, space: str = "full") -> Any:
    from archsearch.spaces import make_space

    if (table, space) not in _SPACES:
        _SPACES[table, space] = make_space("flexibert-small", space_options(table, space))
    return _SPACES[table, space]


def table_rows(table: str) -> int:
    """How many rows (distinct candidates) the table's SST-2 space has."""
    return len(_space(table, "table").members or {})


def score(table: Any, arch: dict[str, Any]) -> float:
    """The "training" result: the table's SST-2 score, or for an architecture the table lacks a
    deterministic stand-in in the table's range (the same for all three systems; only the
    cost of a lookup matters here)."""
    recorded = table.score(arch, TASK)
    if recorded is not None:
        return float(recorded)
    import hashlib

    digest = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).digest()
    return 0.5 + int.from_bytes(digest[:4], "big") / 2**32 * 0.4


def preload(table: str) -> None:
    """Reads the table and builds both spaces (in the forkserver, before any client forks)."""
    from archsearch.spaces import load_table

    load_table(table)
    _space(table, "full")
    _space(table, "table")


def _setup(job: ClientJob) -> Any:
    """Connects and returns a function running one lifecycle (returns acquire seconds or -1)."""
    from archsearch.spaces import load_table

    table = load_table(job.table)
    if job.system == "ours":
        from archsearch.server.client import WorkerClient
        from archsearch.v1 import archsearch_pb2 as pb

        client = WorkerClient(job.target)
        client.wait_ready(30)
        worker_id = f"bench-{job.index}"
        caps = pb.WorkerCapabilities(trainers=["bert"], device="cpu", hostname="bench")
        client.register(worker_id, caps)

        def lifecycle() -> float:
            a0 = time.perf_counter()
            r = client.acquire(worker_id, caps, timeout_s=5.0, study_name=STUDY)
            acq = time.perf_counter() - a0
            if not r.has_trial:
                raise _NoWork
            cand = json.loads(r.candidate_json)
            client.complete(r.lease.lease_id, {"accuracy": score(table, cand["architecture"])})
            return acq

        return lifecycle

    import optuna

    if job.system == "a":
        storage: Any = optuna.storages.get_storage(make_rdb(job.target))
    else:
        host, port = job.target.rsplit(":", 1)
        storage = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
        storage.wait_server_ready(timeout=30)
    study = optuna.load_study(
        study_name=STUDY,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=1000 + job.index),
    )
    space = _space(job.table, job.space)

    def ask_tell() -> float:
        trial = study.ask()
        arch = space.suggest(trial)
        study.tell(trial, score(table, arch))
        return -1.0

    return ask_tell
