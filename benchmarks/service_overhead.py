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
import multiprocessing as mp
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _overhead_clients import (
    MAX_TRIALS,
    PRELOAD_ENV,
    STUDY,
    TASK,
    ClientJob,
    _quiet_optuna,
    client_main,
    make_rdb,
    preload,
    prepare_sqlite,
    space_options,
    table_rows,
)
from _overhead_report import SYSTEMS, Cell, _f, record, render
from _processes import (
    Processes,
    free_port,
    load_average,
    pct,
    start_server_process,
    tail,
    wait_port,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
DEFAULT_TABLE = str(REPO.parent / "shared" / "data" / "flexibert-small" / "dataset_small_sst2.json")

if __name__ == "__mp_main__" and os.environ.get(PRELOAD_ENV):  # the forkserver: see PRELOAD_ENV
    preload(os.environ[PRELOAD_ENV])

# ----------------------------------------------------------------------------- servers


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
                # the table's rows are all its distinct candidates (launch refuses more)
                "n_trials": MAX_TRIALS if space == "full" else table_rows(table),
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
            if "in use" not in tail(log).lower():
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
    cell.p50_ms, cell.p99_ms = pct(lat, 50), pct(lat, 99)
    cell.acq_p50_ms, cell.acq_p99_ms = pct(acq, 50), pct(acq, 99)
    return cell


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
    loads = [load_average()]
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
                    f"{cell.setup_s:.0f}s, drain {cell.drain_s:.0f}s; load {load_average()})",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process and removing temporary files", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    loads.append(load_average())
    table, lines, ok = render(cells, args)
    print()
    print(table)
    print()
    print("\n".join(lines))
    print(f"\n(total {time.monotonic() - t_start:.0f}s)")
    if args.record or not (args.quick or args.no_record):
        record(table, lines, args, started, loads, ok)
        print(f"appended to {RESULTS_MD.relative_to(REPO)}")
    return 1 if ok is False else 0


if __name__ == "__main__":
    sys.exit(main())
