"""Soak: many simulated workers against one server for minutes; errors, rate, latency, memory.

Each phase (``--clients`` and ``--minutes``, paired in order; default 200 workers for 10 minutes,
then 1,000 for 2) starts a fresh ``archsearch serve`` on 127.0.0.1 over a fresh database
(PostgreSQL by default: a throw-away cluster this script starts on 127.0.0.1 and removes at
the end; ``--storage sqlite`` for a SQLite file), launches studies of the flexibert-small space
(random loop), and runs the workers as light asynchronous clients (``_soak_clients``, spread
over ``--procs`` processes): each registers, then repeats acquire, heartbeat, intermediate
report and complete (or, for ``--fail-fraction`` of them, a retryable fail) with
``--train-seconds`` of simulated training, until the phase ends. The first ``--warmup``
seconds are not measured. One row per phase:

    errors          failed calls of any kind (goal 0); their first messages are printed
    lifecycles/s    lifecycles that ended inside the measured window, per second
    acquire p50/p99 AcquireTrial latency of those lifecycles (ms)
    RSS start/end   the server process's resident memory (MiB) when the measured window
                    starts and when the phase ends (goal: flat)

``--baseline-rev REV`` runs every phase twice, first with the server code of git revision REV
(extracted with ``git archive`` into a temporary folder, put first on the server's
``PYTHONPATH``), then with this checkout's, so before/after figures come from the same run.
``--py-spy FILE`` records the (last) server's stacks during the measured window with py-spy.

Usage::

    python benchmarks/soak.py                                   # 200 x 10 min, then 1000 x 2 min
    nice -n 5 python benchmarks/soak.py --clients 200,1000 --minutes 3,1 --record
    python benchmarks/soak.py --storage sqlite --clients 32 --minutes 1 --train-seconds 0

Bounded: each phase ends by itself, clients get ``--minutes`` plus a minute to report, and every
process started (server, clients, PostgreSQL, py-spy) is stopped at the end, also on errors or
Ctrl-C. Exit status 0 when no call failed, 1 otherwise, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _argtypes import number, parser_for, whole
from _processes import Processes, load_average, pct, start_server_process, tail
from _results import append_section
from _soak_clients import ClientJob, Tally, client_main
from _soak_report import Row, _f, growth_per_1000, render

REPO = Path(__file__).resolve().parent.parent
QUICK = """\
    python benchmarks/soak.py --storage sqlite --clients 5 --minutes 0.25 --warmup 1 \\
        --train-seconds 0.05 --procs 1   # about 20 s"""
MAX_TRIALS = 100_000  # archsearch's n_trials cap per study
PACKAGES = {  # archsearch.<name> -> folder of a checkout (pyproject's package-dir)
    "v1": "proto/archsearch/v1",
    "server": "server",
    "search": "search",
    "spaces": "spaces",
    "surrogates": "surrogates",
    "worker": "worker",
    "fleet": "fleet",
}


def rss_mib(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return float("nan")


def baseline_tree(rev: str, tmp: Path) -> Path:
    """A ``PYTHONPATH`` folder whose ``archsearch.*`` packages are revision ``rev``'s code."""
    src = tmp / f"rev-{rev}"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    root = tmp / f"path-{rev}"
    (root / "archsearch").mkdir(parents=True)
    for name, folder in PACKAGES.items():
        if (src / folder).is_dir():
            (root / "archsearch" / name).symlink_to(src / folder)
    return root


def studies_needed(clients: int, seconds: float, train_s: float) -> int:
    """Studies to launch so the phase cannot exhaust them: an upper bound on its trials
    (every worker at its fastest, plus re-queued failures) over the per-study cap."""
    per_s = clients / max(train_s * 0.5, 0.004)
    return max(1, min(8, math.ceil(per_s * seconds * 1.1 / MAX_TRIALS)))


def launch_studies(target: str, tag: str, count: int) -> None:
    from archsearch.server.client import SearchClient

    with SearchClient(target) as sc:
        sc.wait_ready(60)
        for k in range(count):
            sc.launch(
                {
                    "name": f"soak-{tag}-{k}",
                    "space": "flexibert-small",
                    "trainer": "bert",  # the clients "train" by sleeping; nothing runs it
                    "loop": "random",
                    "task": "sst2",
                    "n_trials": MAX_TRIALS,
                }
            )


def start_clients(ctx: Any, procs: Processes, row: Row, args: argparse.Namespace) -> Any:
    """Starts the client processes (they import while the server starts); their queues."""
    q = argparse.Namespace(jobs=ctx.Queue(), ready=ctx.Queue(), out=ctx.Queue(), go=ctx.Event())
    q.t0 = ctx.Value("d", 0.0)
    q.n = max(1, min(args.procs, row.clients))
    for _ in range(q.n):
        p = ctx.Process(
            target=client_main,
            args=(q.jobs, q.ready, q.go, q.t0, row.seconds, q.out),
            daemon=True,
        )
        p.start()
        procs.mps.append(p)
    return q


def run_phase(
    q: Any, procs: Processes, target: str, server_pid: int, row: Row, args: argparse.Namespace
) -> None:
    """Runs ``row.clients`` workers for ``row.seconds`` and fills in the row."""
    n_procs, ready, out, go, t0 = q.n, q.ready, q.out, q.go, q.t0
    share = [row.clients // n_procs + (i < row.clients % n_procs) for i in range(n_procs)]
    first = 0
    for i, count in enumerate(share):
        q.jobs.put(ClientJob(target, first, count, args.train_seconds, args.fail_fraction, seed=i))
        first += count
    t = time.monotonic()
    for _ in share:
        ready.get(timeout=120)
    row.setup["clients"] = time.monotonic() - t
    # Registration (one call per worker) happens before the common start.
    t0.value = time.monotonic() + max(1.0, row.clients / 150)
    go.set()
    measure_from = t0.value + args.warmup
    end = t0.value + row.seconds
    while time.monotonic() < measure_from:
        time.sleep(0.2)
    row.rss_start_mib = rss_mib(server_pid)
    spy = None
    if args.py_spy:
        log = Path(args.py_spy).with_suffix(".log")
        with open(log, "ab") as fh:  # not a pipe: py-spy's progress output must not block it
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    *("record", "--pid", str(server_pid), "--format", "speedscope"),
                    *("--rate", "10", "--duration", str(int(end - measure_from))),
                    *("--nonblocking", "-o", args.py_spy),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        procs.popens.append(spy)
    tallies: list[Tally] = []
    deadline = end + 60 + args.train_seconds * 2
    mid = (measure_from + end) / 2
    while len(tallies) + len(row.notes) < n_procs and time.monotonic() < deadline:
        if row.rss_mid_mib != row.rss_mid_mib and time.monotonic() >= mid:
            row.rss_mid_mib = rss_mib(server_pid)
        with contextlib.suppress(Exception):
            kind, who, payload = out.get(timeout=1.0)
            if kind == "ok":
                tallies.append(payload)
            else:
                row.errors += 1
                row.notes.append(f"client process {who} crashed: {payload.splitlines()[-1]}")
    row.rss_end_mib = rss_mib(server_pid)
    if len(tallies) + len(row.notes) < n_procs:
        row.errors += 1
        row.notes.append(f"{n_procs - len(tallies)} client process(es) sent nothing in time")
    if spy is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
        procs.stop_popen(spy)
    procs.stop_clients(grace=5.0)
    acquire: list[float] = []
    for tally in tallies:
        row.completed += tally.completed
        row.failed += tally.failed
        row.no_work += tally.no_work
        row.errors += tally.errors
        row.notes.extend(tally.messages[:3])
        inside = [a for t_end, a in tally.samples if measure_from <= t_end <= end]
        row.lifecycles += len(inside)
        row.late_lifecycles += sum(1 for t_end, _ in tally.samples if mid <= t_end <= end)
        acquire.extend(inside)
    row.rate = row.lifecycles / max(1e-9, end - measure_from)
    row.acq_p50_ms, row.acq_p99_ms = pct(acquire, 50), pct(acquire, 99)


def run_cell(
    ctx: Any,
    procs: Processes,
    tmp: Path,
    pg: Any,
    row: Row,
    args: argparse.Namespace,
    pythonpath: Path | None,
    tag: str,
) -> None:
    """A fresh database and server for one phase."""
    if pg is not None:
        url = pg.create_database(f"soak_{tag}")
    else:
        url = f"sqlite:///{tmp / f'soak-{tag}.db'}"
    polls = str(max(256, row.clients + 64))  # every worker may long-poll at once
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    extra = ["--lease-seconds", "120", "--max-long-polls", polls]
    q = start_clients(ctx, procs, row, args)
    t = time.monotonic()
    target, server = start_server_process(procs, tmp, tag, url, extra, env=env)
    row.setup["server"] = time.monotonic() - t
    log = tmp / f"ours-{tag}.log"  # where start_server_process sends the server's log
    try:
        row.studies = studies_needed(row.clients, row.seconds, args.train_seconds)
        t = time.monotonic()
        launch_studies(target, tag, row.studies)
        row.setup["launch"] = time.monotonic() - t
        run_phase(q, procs, target, server.pid, row, args)
        if server.poll() is not None:
            row.errors += 1
            row.notes.append(f"the server exited ({server.returncode}): {tail(log)[-300:]}")
    finally:
        procs.stop_popen(server)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser_for(__doc__, QUICK)
    p.add_argument("--clients", default="200,1000", help="workers per phase, comma-separated")
    p.add_argument("--minutes", default="10,2", help="minutes per phase, comma-separated")
    p.add_argument("--storage", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument(
        "--train-seconds",
        type=number(allow_zero=True),
        default=1.0,
        help="mean simulated training",
    )
    p.add_argument(
        "--fail-fraction",
        type=number(allow_zero=True, maximum=1),
        default=0.05,
        help="trials failed (retryable)",
    )
    p.add_argument(
        "--warmup", type=number(allow_zero=True), default=5.0, help="unmeasured seconds per phase"
    )
    p.add_argument("--procs", type=whole(), default=2, help="client processes")
    p.add_argument(
        "--baseline-rev",
        type=git_revision,
        help="also run each phase with this git revision's server",
    )
    p.add_argument("--py-spy", help="record the server's stacks (speedscope JSON) to this file")
    p.add_argument("--note", default="", help="a line recorded with the table")
    p.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = p.parse_args(argv)
    try:
        args.phases = list(
            zip(
                [int(x) for x in args.clients.split(",")],
                [float(x) * 60 for x in args.minutes.split(",")],
                strict=True,
            )
        )
    except ValueError as e:
        p.error(f"--clients and --minutes: equally many comma-separated numbers ({e})")
    if any(c < 1 or not math.isfinite(s) or s <= args.warmup for c, s in args.phases):
        p.error("every phase needs >= 1 client and finite minutes, more seconds than --warmup")
    if args.py_spy:
        if not Path(sys.executable).with_name("py-spy").exists():
            p.error(
                "--py-spy needs py-spy beside this Python; install it with `pip install py-spy` "
                "(it is in the dev extra)"
            )
        if not Path(args.py_spy).resolve().parent.is_dir():
            p.error(f"argument --py-spy: {args.py_spy!r}: not a file in an existing folder")
    return args


def git_revision(text: str) -> str:
    """A revision of this checkout's git repository (``HEAD~3``, a commit, a tag)."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{text}^{{commit}}"],
        capture_output=True,
    )
    if found.returncode != 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a commit of {REPO}")
    return text


def run(args: argparse.Namespace) -> list[Row]:
    """Runs every phase (and its baseline) and returns their rows; stops everything it started.

    Raises:
        KeyboardInterrupt: on Ctrl-C or SIGTERM, after the clean-up.
    """
    ctx = mp.get_context("spawn")
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="archsearch-soak-"))
    pg = None
    rows: list[Row] = []

    def _on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        if args.storage == "postgres":
            sys.path.insert(0, str(REPO / "tests"))
            from _postgres import PostgresServer

            pg = PostgresServer()
            pg.start()
        servers: list[tuple[str, Path | None]] = [("this", None)]
        if args.baseline_rev:
            servers.insert(0, (args.baseline_rev, baseline_tree(args.baseline_rev, tmp)))
        for i, (clients, seconds) in enumerate(args.phases):
            for name, path in servers:
                row = Row(name, clients, seconds)
                t = time.monotonic()
                run_cell(ctx, procs, tmp, pg, row, args, path, f"{i}_{len(rows)}")
                rows.append(row)
                print(
                    f"  {name} x {clients}: {row.rate:.1f} lifecycles/s, acquire p50/p99 "
                    f"{_f(row.acq_p50_ms, 2)}/{_f(row.acq_p99_ms, 2)} ms, errors {row.errors}, "
                    f"RSS {_f(row.rss_start_mib)} -> {_f(row.rss_end_mib)} MiB "
                    f"({time.monotonic() - t:.0f} s, set-up "
                    + ", ".join(f"{k} {v:.1f} s" for k, v in row.setup.items())
                    + f"; load {load_average()})",
                    flush=True,
                )
    finally:
        signal.signal(signal.SIGTERM, previous)
        procs.stop_all()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    try:
        rows = run(args)
    except KeyboardInterrupt:
        print("interrupted: every process stopped", file=sys.stderr)
        return 130
    table = render(rows)
    notes = [f"- {r.server} x {r.clients}: {n}" for r in rows for n in r.notes[:5]]
    print("\n" + table + ("\n\n" + "\n".join(notes) if notes else ""))
    errors = sum(r.errors for r in rows)
    if args.record:
        body = (
            f"- started {started}; storage {args.storage}; simulated training "
            f"{args.train_seconds:g} s (uniform 0.5-1.5x), {args.fail_fraction:.0%} of trials "
            f"failed (retryable); {args.warmup:g} s unmeasured per phase; {args.procs} client "
            f"process(es); load average before/after {load_before} / {load_average()}\n"
            + (f"- {args.note}\n" if args.note else "")
            + f"\n{table}\n"
            + ("\n" + "\n".join(notes) + "\n" if notes else "")
        )
        figure = "; ".join(
            f"{r.server} x {r.clients} for {r.seconds / 60:g} min: {r.errors} errors, "
            f"{r.rate:.1f} lifecycles/s, acquire p99 {_f(r.acq_p99_ms, 1)} ms, RSS "
            f"{_f(r.rss_start_mib, 0)} -> {_f(r.rss_mid_mib, 0)} -> {_f(r.rss_end_mib, 0)} MiB "
            f"(2nd half {_f(growth_per_1000(r), 0)} KiB per 1,000 lifecycles)"
            for r in rows
        )
        append_section("soak", body, summary=(figure, "pass" if errors == 0 else "FAIL"))
        print("appended to benchmarks/RESULTS.md")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
