"""Chaos run: what a search loses when workers and the server are killed while it runs.

One ``archsearch serve`` on 127.0.0.1 with SQLite (or ``--storage URL``), ``--workers``
``archsearch worker --trainer table`` processes (``--duration`` seconds of simulated training per
trial) on a flexibert-small/table study (random loop, ``--trials`` trials), and a seeded schedule
of faults:

* about ``--kill-fraction`` of the workers are SIGKILLed at random times in ``--kill-window``
  (a replacement starts at once, as a cluster scheduler would restart it);
* the server is SIGKILLed once (at ``--server-kill-at`` seconds) and restarted on the same port
  and storage after ``--outage`` seconds; its lease is ``--lease`` seconds.

The schedule's clock starts once half the workers have completed a trial. The table counts the
faults carried out: a study that ends before one of them is not a pass (it proved nothing).

The run ends when the study completes or after ``--timeout`` seconds. Then the storage is read
with Optuna and the worker logs are scanned, and one table is printed:

    trials              every trial in the storage (retries and repeats included)
    distinct completed  distinct candidates (``Candidate.fingerprint``) among COMPLETE trials
    results lost        trainings that finished but whose result the server refused: worker
                        log lines ``completion refused``
    retrained           attempts of a candidate after an earlier attempt had finished training
                        (the lost ones above, when their candidate was leased again)
    repeats             COMPLETE trials that reuse an earlier result (``duplicate_of``)
    in flight twice     trained trials (not retries, not repeats) whose candidate equals one
                        of an earlier trained trial that had not finished when this one was
                        prepared: the same candidate handed out twice at once
    trained after done  trained trials (not retries, not repeats) whose candidate had already
                        completed in an earlier trained trial: it should have been a repeat
    FAIL w/o reason     FAIL trials with an empty ``fail_reason``
    WAITING left        WAITING (or RUNNING) trials left when the run ended
    wall                seconds from launch to completion (or the timeout); the fault
                        schedule's clock starts when ``--workers``/2 trials have completed

Usage::

    python benchmarks/chaos.py                       # 20 workers, 150 trials, ~1-2 minutes
    python benchmarks/chaos.py --workers 8 --trials 60 --seed 3

Everything listens on 127.0.0.1; every process started is stopped and the temporary folder
removed at the end (``--keep`` keeps it, with the logs).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _service_procs import Proc, cli, free_port, wait_serving

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = str(
    (REPO / ".." / "shared" / "data" / "flexibert-small" / "dataset_small_sst2.json").resolve()
)


def analyse(storage: str, name: str, logs: list[Path]) -> dict[str, Any]:
    """The counts of the table (see the module docstring) from the storage and worker logs."""
    import optuna
    from optuna.trial import TrialState

    from archsearch.spaces import Candidate

    rdb = optuna.storages.RDBStorage(storage)
    try:
        study = optuna.load_study(study_name=name, storage=rdb)
        trials = study.get_trials(deepcopy=False)
        study_attrs = dict(study.user_attrs)
    finally:
        rdb.engine.dispose()
    by_number = {t.number: t for t in trials}

    def fp(t: Any) -> str | None:
        cand = t.user_attrs.get("candidate")
        return Candidate.from_dict(cand).fingerprint() if cand else None

    def root(t: Any) -> int:
        return int(t.system_attrs.get("failed_trial", t.number))

    refused: list[int] = []
    pattern = re.compile(r"trial \S+#(\d+): completion refused")
    for log in logs:
        refused += [int(m.group(1)) for m in pattern.finditer(log.read_text(errors="replace"))]
    # A refused trial's candidate trained again: a later attempt of the same root was leased.
    retrained = 0
    for n in refused:
        t = by_number.get(n)
        if t is None:
            continue
        later = [
            u for u in trials if u.number > n and root(u) == root(t) and u.user_attrs.get("worker")
        ]
        retrained += bool(later)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    trained = [
        t
        for t in trials
        if "failed_trial" not in t.system_attrs
        and "duplicate_of" not in t.user_attrs
        and t.user_attrs.get("worker")
    ]
    twice = again = 0
    seen: dict[str, list[Any]] = defaultdict(list)
    for t in sorted(trained, key=lambda t: t.number):
        f = fp(t)
        if f is None:
            continue
        for earlier in seen[f]:
            done = earlier.datetime_complete
            if done is None or (t.datetime_start is not None and done > t.datetime_start):
                twice += 1
                break
        else:  # every earlier one had finished: a completed one should have made this a repeat
            again += any(e.state == TrialState.COMPLETE for e in seen[f])
        seen[f].append(t)
    return {
        "trials": len(trials),
        "distinct completed": len({fp(t) for t in complete} - {None}),
        "results lost": len(refused),
        "retrained": retrained,
        "repeats": sum("duplicate_of" in t.user_attrs for t in complete),
        "in flight twice": twice,
        "trained after done": again,
        "FAIL w/o reason": sum(
            t.state == TrialState.FAIL and not t.user_attrs.get("fail_reason") for t in trials
        ),
        "WAITING left": sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials),
        "state": study_attrs.get("archsearch:state", "?"),
        "reason": study_attrs.get("archsearch:completed_reason", ""),
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from archsearch.server.client import SearchClient
    from archsearch.v1 import archsearch_pb2 as pb

    rng = random.Random(args.seed)
    storage = getattr(args, "storage", None) or f"sqlite:///{tmp / 'chaos.db'}"
    port = free_port()
    address = f"127.0.0.1:{port}"
    serve = cli(
        "serve",
        "--storage",
        storage,
        "--port",
        str(port),
        "--lease-seconds",
        str(args.lease),
        "--heartbeat-seconds",
        str(args.heartbeat),
    )
    server = Proc(serve, tmp / "server.log")
    procs: list[Proc] = [server]
    worker_logs: list[Path] = []

    def start_worker() -> Proc:
        log = tmp / f"worker{len(worker_logs)}.log"
        worker_logs.append(log)
        argv = cli(
            "worker",
            "--server",
            address,
            "--trainer",
            "table",
            "--table",
            args.table,
            "--duration",
            str(args.duration),
            "--poll-seconds",
            "2",
        )
        p = Proc(argv, log)
        procs.append(p)
        return p

    try:
        wait_serving(address, server)
        workers = [start_worker() for _ in range(args.workers)]
        spec = {
            "name": "chaos",
            "space": "flexibert-small",
            "trainer": "table",
            "loop": "random",
            "seed": args.seed,
            "n_trials": args.trials,
            "space_options": {"table": args.table},
        }
        launched = time.monotonic()
        with SearchClient(address) as client:
            client.launch(spec)
            # The fault schedule's clock starts once the workers are busy (starting twenty
            # Python processes takes a while on a small machine).
            while time.monotonic() - launched < args.timeout:
                if client.get_study("chaos").n_complete >= args.workers // 2:
                    break
                time.sleep(0.5)
        t0 = time.monotonic()
        print(f"[ 0.0s] {time.monotonic() - launched:.1f}s after launch: faults start")
        n_kills = round(args.workers * args.kill_fraction)
        kills = sorted(rng.uniform(2.0, args.kill_window) for _ in range(n_kills))
        killed = 0  # the faults carried out: a study that ends first did not see the rest
        server_killed = False
        server_down_at = args.server_kill_at
        server_back_at: float | None = None
        completed = False
        while time.monotonic() - launched < args.timeout:
            now = time.monotonic() - t0
            while kills and kills[0] <= now:
                kills.pop(0)
                alive = [w for w in workers if w.alive()]
                if alive:
                    victim = rng.choice(alive)
                    victim.kill()
                    killed += 1
                    workers.remove(victim)
                    workers.append(start_worker())
                    print(f"[{now:5.1f}s] SIGKILL worker {victim.p.pid}; replacement started")
            if server_down_at is not None and now >= server_down_at:
                server.kill()
                server.p.wait(10)
                server_killed = True
                server_down_at = None
                server_back_at = now + args.outage
                print(f"[{now:5.1f}s] SIGKILL server; back in {args.outage:.0f}s")
            if server_back_at is not None and now >= server_back_at:
                server = Proc(serve, tmp / "server.log")
                procs.append(server)
                wait_serving(address, server)
                server_back_at = None
                print(f"[{time.monotonic() - t0:5.1f}s] server restarted")
            if server_down_at is None and server_back_at is None:
                try:
                    with SearchClient(address) as client:
                        if client.get_study("chaos").state == pb.STUDY_COMPLETED:
                            completed = True
                            break
                except Exception:
                    pass
            time.sleep(0.5)
        wall = time.monotonic() - launched
    finally:
        for p in reversed(procs):  # workers first, then the server
            p.stop()
    counts = analyse(storage, "chaos", worker_logs)
    counts["wall (s)"] = round(wall, 1)
    counts["completed in time"] = completed
    counts["worker kills done"] = f"{killed}/{n_kills}"
    counts["server killed"] = server_killed
    return counts


#: Counts that must be zero: nothing finished is thrown away or trained twice, every FAIL says why.
GOAL_ZERO = (
    "results lost",
    "retrained",
    "in flight twice",
    "trained after done",
    "FAIL w/o reason",
    "WAITING left",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--duration", type=float, default=2.0, help="simulated seconds per trial")
    ap.add_argument("--kill-fraction", type=float, default=0.3, help="workers SIGKILLed")
    ap.add_argument(
        "--kill-window",
        type=float,
        default=25.0,
        help="worker kills in [2, this] s after the faults start (the default study runs "
        "about 35 s after that: every kill happens)",
    )
    ap.add_argument(
        "--server-kill-at", type=float, default=12.0, help="seconds after the faults start"
    )
    ap.add_argument("--outage", type=float, default=7.0, help="seconds the server stays down")
    ap.add_argument("--lease", type=int, default=10)
    ap.add_argument("--heartbeat", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=200.0, help="bound on the whole run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", default=DEFAULT_TABLE)
    ap.add_argument(
        "--storage", default=None, help="storage URL (an empty database); default a new SQLite file"
    )
    ap.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    ap.add_argument(
        "--record", action="store_true", help="append the table to benchmarks/RESULTS.md"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="archsearch-chaos-"))
    try:
        counts = run(args, tmp)
    finally:
        if args.keep:
            print(f"logs and storage kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| " + " | ".join(counts) + " |")
    print("|" + "---|" * len(counts))
    print("| " + " | ".join(str(v) for v in counts.values()) + " |")
    print(json.dumps(counts))
    bad = {k: counts[k] for k in GOAL_ZERO if counts[k]}
    done, scheduled = map(int, str(counts["worker kills done"]).split("/"))
    exercised = done == scheduled and bool(counts["server killed"])
    if not exercised:  # nothing lost by a study that never saw its faults proves nothing
        print(
            f"not every fault happened (worker kills {done} of {scheduled}, server killed: "
            f"{counts['server killed']}): the study ended first; give more --trials or a "
            "shorter --kill-window / --server-kill-at"
        )
    ok = not bad and counts["completed in time"] and exercised
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import append_section

        table = (
            "| "
            + " | ".join(counts)
            + " |\n|"
            + "---|" * len(counts)
            + "\n| "
            + " | ".join(str(v) for v in counts.values())
            + " |\n"
        )
        append_section(
            "chaos",
            f"{args.workers} `table` workers, {args.trials} trials, seed {args.seed}\n\n{table}",
            summary=(
                ", ".join(f"{k} {counts[k]}" for k in GOAL_ZERO)
                + f" (goal 0 each); {counts['distinct completed']} distinct completed of "
                f"{args.trials}, seed {args.seed}; worker kills {counts['worker kills done']}, "
                f"server killed {counts['server killed']}",
                "pass" if ok else "FAIL",
            ),
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
