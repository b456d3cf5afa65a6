"""Service overhead: trial lifecycles per second and per-trial overhead, archsearch vs Optuna.

Measures, in one run on this machine, the cost of one full trial lifecycle with a
zero-duration "training" (a FlexiBERT-small table lookup) for three systems side by side:

* ``ours``: a real ``archsearch serve`` subprocess on SQLite, N worker *processes* each looping
  ``AcquireTrial`` -> table lookup -> ``CompleteTrial`` (the server asks/tells; random loop).
* ``a``: Optuna in-process ask/tell, N *processes* sharing one SQLite ``RDBStorage`` file, each
  ``study.ask()`` -> ``FlexiBertSmallSpace.suggest(trial)`` -> table lookup -> ``study.tell()``.
* ``b``: Optuna's ``run_grpc_proxy_server`` in a subprocess over ``get_storage(RDBStorage(...))``
  (as its docstring recommends; default 10-thread pool), N client processes using
  ``GrpcStorageProxy`` with the same ask/suggest/tell loop.

The space is the whole flexibert-small space by default (``--space full``: 2 or 4 layers, 9 or
17 categorical parameters per trial), each candidate "trained" by a table lookup (a
deterministic stand-in score where the table has none). ``--space table`` restricts it to the
table's 620 SST-2 rows (per-layer parameters, a suggestion mapped to its nearest row): a fast
system then exhausts the rows within a cell, after which archsearch completes repeated
candidates itself with the earlier result (no worker lifecycle) while (a) and (b) train them
again, so the systems no longer do the same work; its numbers are recorded for continuity
with earlier runs, not for the goals.

All three use the same SQLite settings (WAL journal, ``synchronous=NORMAL``, 60 s busy
timeout: what ``archsearch serve`` uses), the random sampler and the same space and table.
Every (system, clients) cell gets a fresh database and fresh processes; clients warm up, then
every lifecycle that ends inside the measurement window is counted (throughput) and its
``time.perf_counter`` duration recorded (overhead p50/p99); for ``ours`` the ``AcquireTrial``
latency is recorded separately.

Usage::

    python benchmarks/service_overhead.py                 # full run (~5 minutes)
    python benchmarks/service_overhead.py --quick         # ~1 minute smoke run, not recorded
    python benchmarks/service_overhead.py --clients 1,8,32 --seconds 20 --warmup 3

The table, the ratios and the goal checks are printed and appended to
``benchmarks/RESULTS.md`` (``--no-record`` to skip). Everything listens on 127.0.0.1 only;
every process started is stopped and every temporary file removed, also on Ctrl-C or errors.
Exit status: 0 when every measured goal passes, 1 when one fails, 130 when interrupted.

Numbers are only comparable within one run: the machine's load average (printed per cell and
recorded) says whether other jobs shared the CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing as mp
import os
import select
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_section

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
DEFAULT_TABLE = str(REPO.parent / "shared" / "data" / "flexibert-small" / "dataset_small_sst2.json")
TASK = "sst2"
STUDY = "bench"
SYSTEMS = {
    "ours": "archsearch serve (gRPC, server-side ask/tell)",
    "a": "Optuna ask/tell in-process (RDBStorage)",
    "b": "Optuna GrpcStorageProxy + run_grpc_proxy_server",
}
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
# it once (it imports this file as ``__mp_main__`` with the variable below set) and every client
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


if __name__ == "__mp_main__" and os.environ.get(PRELOAD_ENV):
    from archsearch.spaces import load_table as _load_table

    _load_table(os.environ[PRELOAD_ENV])
    _space(os.environ[PRELOAD_ENV], "full")
    _space(os.environ[PRELOAD_ENV], "table")


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


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"server did not listen on 127.0.0.1:{port} in {timeout:.0f}s:\n{_tail(log)}"
    )


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Processes:
    """Every process this script starts, stopped (TERM, then KILL) by :meth:`stop_all`."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[Any]] = []
        self.mps: list[Any] = []

    def popen(
        self, cmd: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[Any]:
        with open(log, "ab") as fh:
            p = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=fh,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to us; we stop it in order
                cwd=str(REPO),
                env=env,
            )
        self.popens.append(p)
        return p

    def stop_popen(self, p: subprocess.Popen[Any], grace: float = 5.0) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(5)
        if p.stdout is not None:
            p.stdout.close()
        if p in self.popens:
            self.popens.remove(p)

    def stop_clients(self, grace: float = 5.0) -> None:
        deadline = time.monotonic() + grace
        for proc in self.mps:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.mps:
            if proc.is_alive():
                proc.terminate()
        for proc in self.mps:
            proc.join(3)
            if proc.is_alive():
                proc.kill()
                proc.join(3)
        self.mps.clear()

    def stop_all(self) -> None:
        self.stop_clients(grace=0.5)
        for p in list(self.popens):
            self.stop_popen(p, grace=3.0)


def start_server_process(
    procs: Processes,
    tmp: Path,
    tag: str,
    url: str,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[str, subprocess.Popen[Any]]:
    """Starts ``archsearch serve`` on ``url`` (log: ``tmp/ours-TAG.log``); (HOST:PORT, process).

    Also used by ``soak.py``.
    """
    log = tmp / f"ours-{tag}.log"
    exe = Path(sys.executable).with_name("archsearch")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "archsearch.server.cli"]
    cmd += [
        "serve",
        "--storage",
        url,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--lease-seconds",
        "3600",  # nothing may expire during a run
        *extra,
    ]
    p = procs.popen(cmd, log, env)
    assert p.stdout is not None
    deadline = time.monotonic() + 60
    buf = b""
    target = ""
    while time.monotonic() < deadline and not target:
        if p.poll() is not None:
            raise RuntimeError(f"archsearch serve exited with {p.returncode}:\n{_tail(log)}")
        r, _, _ = select.select([p.stdout], [], [], 0.5)
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("archsearch serving on "):
                    target = line.split()[3]
    if not target:
        raise RuntimeError(f"archsearch serve did not start in 60s:\n{_tail(log)}")
    return target, p


def start_ours(
    procs: Processes, tmp: Path, tag: str, table: str, space: str, extra: Sequence[str] = ()
) -> tuple[str, subprocess.Popen[Any]]:
    url = f"sqlite:///{tmp / f'ours-{tag}.db'}"
    target, p = start_server_process(procs, tmp, tag, url, extra)
    from archsearch.server.client import SearchClient

    with SearchClient(target) as sc:
        sc.wait_ready(30)
        sc.launch(
            {
                "name": STUDY,
                "space": "flexibert-small",
                # "bert": a table trainer is refused on the full space (most rows unscored);
                # the clients here score candidates themselves, from the table or a stand-in
                "trainer": "bert",
                "loop": "random",
                "task": TASK,
                "n_trials": MAX_TRIALS,
                "space_options": space_options(table, space),
            }
        )
    return target, p


def create_optuna_study(url: str) -> None:
    import optuna

    prepare_sqlite(url)
    rdb = make_rdb(url)
    optuna.create_study(study_name=STUDY, storage=rdb, direction="maximize")
    rdb.remove_session()
    rdb.engine.dispose()


def start_proxy(procs: Processes, tmp: Path, tag: str) -> tuple[str, subprocess.Popen[Any]]:
    url = f"sqlite:///{tmp / f'b-{tag}.db'}"
    create_optuna_study(url)
    log = tmp / f"b-{tag}.log"
    for _attempt in range(3):
        port = free_port()
        p = procs.popen(
            [sys.executable, str(Path(__file__).resolve()), "--_proxy-server", url, str(port)], log
        )
        try:
            wait_port(port, p, 60, log)
            return f"127.0.0.1:{port}", p
        except RuntimeError:
            procs.stop_popen(p)
            if "in use" not in _tail(log).lower():
                raise
    raise RuntimeError("could not find a free port for the Optuna proxy server")


def proxy_server_main(url: str, port: int) -> None:
    """``run_grpc_proxy_server`` over ``get_storage(RDBStorage)``, as its docstring says."""
    import optuna
    from optuna.storages import get_storage, run_grpc_proxy_server

    _quiet_optuna()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    storage = get_storage(make_rdb(url))
    run_grpc_proxy_server(storage, host="127.0.0.1", port=port)
    del optuna


# ----------------------------------------------------------------------------- one cell


@dataclass
class Cell:
    system: str
    clients: int
    throughput: float = 0.0
    n: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    acq_p50_ms: float = float("nan")
    acq_p99_ms: float = float("nan")
    errors: int = 0
    no_work: int = 0
    setup_s: float = 0.0
    drain_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) * 1000.0 if values else float("nan")


def run_cell(
    ctx: Any, procs: Processes, tmp: Path, system: str, clients: int, args: argparse.Namespace
) -> Cell:
    tag = f"{clients}"
    server: subprocess.Popen[Any] | None = None
    if system == "ours":
        target, server = start_ours(
            procs, tmp, tag, args.table, args.space, shlex.split(args.serve_args)
        )
    elif system == "b":
        target, server = start_proxy(procs, tmp, tag)
    else:
        target = f"sqlite:///{tmp / f'a-{tag}.db'}"
        create_optuna_study(target)
    t_cell = time.monotonic()
    ready = ctx.Barrier(clients + 1)
    go = ctx.Event()
    t0 = ctx.Value("d", 0.0)
    results = ctx.Queue()
    try:
        for i in range(clients):
            job = ClientJob(system, i, target, args.table, args.warmup, args.seconds, args.space)
            proc = ctx.Process(target=client_main, args=(job, ready, go, t0, results), daemon=True)
            proc.start()
            procs.mps.append(proc)
        try:
            ready.wait(timeout=180)  # every client connected and set up
        except threading.BrokenBarrierError:
            fatal = []
            with contextlib.suppress(Exception):
                while True:
                    o = results.get(timeout=2.0)
                    fatal.append(o.get("fatal", ""))
            raise RuntimeError(
                f"{system} x {clients}: a client failed during setup:\n" + "\n".join(fatal)
            ) from None
        setup_s = time.monotonic() - t_cell
        t0.value = time.perf_counter() + 0.2
        go.set()
        warm_end = t0.value + args.warmup
        end = warm_end + args.seconds
        outs: list[dict[str, Any]] = []
        deadline = time.monotonic() + args.warmup + args.seconds + 90
        while len(outs) < clients and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                outs.append(results.get(timeout=1.0))
        drain_s = time.monotonic() - (t_cell + setup_s + 0.2 + args.warmup + args.seconds)
        procs.stop_clients(grace=5.0)
    finally:
        if server is not None:
            procs.stop_popen(server)
    cell = Cell(system, clients, setup_s=setup_s, drain_s=drain_s)
    if len(outs) < clients:
        cell.notes.append(f"{clients - len(outs)} client(s) sent no result")
    lat: list[float] = []
    acq: list[float] = []
    for out in outs:
        if "fatal" in out:
            cell.notes.append(f"client {out['index']} crashed: {out['fatal'].splitlines()[-1]}")
        cell.errors += out["errors"]
        cell.no_work += out["no_work"]
        if out["errors"] and out.get("last_error"):
            cell.notes.append(f"client {out['index']}: {out['last_error']}")
        for t_end, dur, a in out["samples"]:
            if warm_end <= t_end < end:
                lat.append(dur)
                if a >= 0:
                    acq.append(a)
    cell.n = len(lat)
    if cell.n < 2 * clients:
        cell.notes.append(
            f"only {cell.n} lifecycles in the window: too few for percentiles, raise --seconds"
        )
    cell.throughput = len(lat) / args.seconds
    cell.p50_ms, cell.p99_ms = _pct(lat, 50), _pct(lat, 99)
    cell.acq_p50_ms, cell.acq_p99_ms = _pct(acq, 50), _pct(acq, 99)
    return cell


# ----------------------------------------------------------------------------- report


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _f(x: float, digits: int = 1) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


def render(cells: list[Cell], args: argparse.Namespace) -> tuple[str, list[str], bool]:
    """The markdown table, the ratio/goal lines and whether every checkable goal passed."""
    lines = [
        "| system | clients | lifecycles/s | overhead p50 ms | overhead p99 ms "
        "| acquire p50 ms | acquire p99 ms | lifecycles | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.system} | {c.clients} | {_f(c.throughput)} | {_f(c.p50_ms, 2)} "
            f"| {_f(c.p99_ms, 2)} | {_f(c.acq_p50_ms, 2)} | {_f(c.acq_p99_ms, 2)} | {c.n} "
            f"| {c.errors} |"
        )
    table = "\n".join(lines)
    by = {(c.system, c.clients): c for c in cells}
    out: list[str] = []
    all_ok = True
    clients = sorted({c.clients for c in cells})
    for n in clients:
        o, a, b = by.get(("ours", n)), by.get(("a", n)), by.get(("b", n))
        parts = []
        if o and b and b.p50_ms == b.p50_ms and b.p50_ms > 0:
            parts.append(f"ours/b p50 overhead {o.p50_ms / b.p50_ms:.2f}")
        if o and a and a.p50_ms == a.p50_ms and a.p50_ms > 0:
            parts.append(f"ours/a p50 overhead {o.p50_ms / a.p50_ms:.2f}")
        if o and b and b.throughput > 0:
            parts.append(f"ours/b throughput {o.throughput / b.throughput:.2f}")
        if o and a and a.throughput > 0:
            parts.append(f"ours/a throughput {o.throughput / a.throughput:.2f}")
        if parts:
            out.append(f"- {n} client(s): " + ", ".join(parts))

    def goal(name: str, ok: bool | None, detail: str) -> None:
        nonlocal all_ok
        verdict = "n/a (not measured in this run)" if ok is None else ("PASS" if ok else "FAIL")
        if ok is False:
            all_ok = False
        out.append(f"- **{verdict}** {name}: {detail}")

    pairs = [
        (by[("ours", n)], by[("b", n)]) for n in clients if ("ours", n) in by and ("b", n) in by
    ]
    if pairs:
        bad = [
            f"{o.clients}: {o.p50_ms:.2f} vs {b.p50_ms:.2f} ms"
            for o, b in pairs
            if not o.p50_ms <= 0.5 * b.p50_ms
        ]
        detail = "; ".join(
            f"{o.clients} clients {o.p50_ms:.2f} ms vs (b) {b.p50_ms:.2f} ms" for o, b in pairs
        )
        goal("ours p50 overhead <= 1/2 of (b)'s, every client count", not bad, detail)
    else:
        goal("ours p50 overhead <= 1/2 of (b)'s", None, "")
    o8, a8 = by.get(("ours", 8)), by.get(("a", 8))
    if o8 and a8:
        goal(
            "ours p50 overhead <= (a)'s at 8 clients",
            o8.p50_ms <= a8.p50_ms,
            f"{o8.p50_ms:.2f} ms vs (a) {a8.p50_ms:.2f} ms",
        )
    else:
        goal("ours p50 overhead <= (a)'s at 8 clients", None, "")
    o32 = by.get(("ours", 32))
    if o32:
        goal(
            "ours p99 acquire latency < 50 ms at 32 clients (SQLite)",
            o32.acq_p99_ms < 50.0,
            f"{o32.acq_p99_ms:.2f} ms",
        )
    else:
        goal("ours p99 acquire latency < 50 ms at 32 clients", None, "")
    for c in cells:
        for note in c.notes[:5]:
            out.append(f"- note ({c.system}, {c.clients} clients): {note}")
    return table, out, all_ok


def record(
    table: str,
    lines: list[str],
    args: argparse.Namespace,
    started: str,
    loads: list[str],
    ok: bool,
) -> None:
    legend = "; ".join(f"`{k}` = {v}" for k, v in SYSTEMS.items())
    append_section(
        "service_overhead",
        f"- started {started}; load average (1/5/15 min) before the first and after the last "
        f"cell: {loads[0]} / {loads[-1]} (includes this run's own client processes; other "
        "jobs on the machine inflate every column alike)\n"
        f"- {args.warmup:g} s warm-up + {args.seconds:g} s measured per cell; fresh SQLite "
        "(WAL, synchronous=NORMAL) per cell; random sampler; flexibert-small space "
        f"`--space {args.space}`\n"
        f"- systems: {legend}\n\n"
        f"{table}\n\n" + "\n".join(lines) + "\n",
        summary=(
            "; ".join(ln.removeprefix("- ") for ln in lines if ln.startswith("- **")),
            "pass" if ok else "FAIL",
        ),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--clients", help="comma-separated client counts (default 1,8,32; 1,8 with --quick)"
    )
    p.add_argument("--systems", default="ours,a,b", help="comma-separated: ours, a, b")
    p.add_argument("--seconds", type=float, help="measured seconds per cell (default 20)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 3)")
    p.add_argument("--quick", action="store_true", help="~1 minute smoke run (not recorded)")
    p.add_argument("--table", default=DEFAULT_TABLE, help="FlexiBERT-small table JSON")
    p.add_argument(
        "--space",
        choices=("full", "table"),
        default="full",
        help="full: the whole flexibert-small space (~330k architectures; 9 or 17 parameters "
        "per trial), scored from the table or a deterministic stand-in; table: only the "
        "table's 620 SST-2 rows (suggestions mapped to the nearest row). With `table` a fast "
        "system exhausts the rows within a cell, after which archsearch completes repeated "
        "candidates itself (no worker lifecycle) and (a)/(b) re-run them, so the systems no "
        "longer do the same work (default: full)",
    )
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.add_argument(
        "--serve-args",
        default="",
        help="extra arguments of ours' `archsearch serve` (e.g. '--max-long-polls 64')",
    )
    p.add_argument("--record", action="store_true", help="append to RESULTS.md even with --quick")
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 20.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 3.0
    if args.clients is None:
        args.clients = "1,8" if args.quick else "1,8,32"
    try:
        args.client_counts = [int(x) for x in args.clients.split(",") if x.strip()]
    except ValueError:
        p.error(f"--clients: expected comma-separated integers, got {args.clients!r}")
    if not args.client_counts or min(args.client_counts) < 1:
        p.error("--clients: counts must be >= 1")
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.system_list if s not in SYSTEMS]
    if unknown:
        p.error(f"--systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    if args.seconds <= 0 or args.warmup < 0:
        p.error("--seconds must be > 0 and --warmup >= 0")
    if not Path(args.table).is_file():
        p.error(f"--table: {args.table} not found")
    args.table = str(Path(args.table).resolve())
    return args


def main(argv: list[str] | None = None) -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--_proxy-server":  # internal: the (b) server
        proxy_server_main(sys.argv[2], int(sys.argv[3]))
        return 0
    args = parse_args(argv)
    _quiet_optuna()
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    ctx = mp.get_context("forkserver")
    os.environ[PRELOAD_ENV] = args.table  # read by the forkserver when it imports this file
    ctx.set_forkserver_preload(
        [
            "__main__",
            "optuna",
            "grpc",
            "numpy",
            "alembic.command",  # RDBStorage imports these lazily: ~0.4 s per process
            "alembic.config",
            "alembic.migration",
            "alembic.script",
            "archsearch.spaces",
            "archsearch.server.client",
        ]
    )
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="archsearch-bench-"))

    def _on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _on_term)
    cells: list[Cell] = []
    loads = [_load()]
    t_start = time.monotonic()
    print(
        f"service_overhead: systems {','.join(args.system_list)}, clients "
        f"{args.clients}, {args.warmup:g}s warm-up + {args.seconds:g}s per cell, "
        f"{os.cpu_count()} CPUs, load average {loads[0]}",
        flush=True,
    )
    try:
        for n in args.client_counts:
            for system in args.system_list:
                t = time.monotonic()
                cell = run_cell(ctx, procs, tmp, system, n, args)
                cells.append(cell)
                print(
                    f"  {system:>4} x {n:>2}: {cell.throughput:7.1f}/s"
                    f"  p50 {_f(cell.p50_ms, 2):>7} ms"
                    f"  p99 {_f(cell.p99_ms, 2):>7} ms  acquire p99 {_f(cell.acq_p99_ms, 2):>7} ms"
                    f"  errors {cell.errors}  ({time.monotonic() - t:.0f}s: clients' set-up "
                    f"{cell.setup_s:.0f}s, drain {cell.drain_s:.0f}s; load {_load()})",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process and removing temporary files", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    loads.append(_load())
    table, lines, ok = render(cells, args)
    print()
    print(table)
    print()
    print("\n".join(lines))
    print(f"\n(total {time.monotonic() - t_start:.0f}s)")
    if args.record or not (args.quick or args.no_record):
        record(table, lines, args, started, loads, ok)
        print(f"appended to {RESULTS_MD.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
