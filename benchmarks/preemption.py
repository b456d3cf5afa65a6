"""Preemption: what a search loses when its workers are preempted, with and without resuming.

One ``archsearch serve`` on 127.0.0.1 (SQLite), ``--workers`` ``archsearch worker --trainer
bert`` processes sharing one checkpoint folder (a shared file system, or one machine), and a
study of ``--trials`` small BERT students on an SST-2 slice (random loop over the demo's
space, ``--steps`` optimiser steps each). A seeded schedule preempts a worker about every
``--every`` seconds the way SLURM preemption or a Kubernetes drain does: SIGTERM (the worker
hands its trial back, saving its progress first when it saves any) and, once it has exited, a
replacement (the engine's requeue). The worker taken is one that is training a trial (it has
reported at least once); the next preemption is scheduled from this one. The same study runs
twice under the same schedule:

    resume    the default (``--save-minutes 10``): a handed-back trial's retry continues from
              the step it was stopped at;
    restart   ``--save-minutes 0``: every retry starts from the first step.

Printed per arm: whether the study completed within ``--timeout`` seconds, its wall time, the
preemptions sent, the trials in the storage (attempts: retries included), the attempts handed
back, the completed trials that continued from saved progress, and the optimiser steps the
completed trials ran in their own attempt (the steps trained again by the restart arm show up
as a longer wall time and more attempts). The arms run one after the other on the same
machine, so other load on it affects both; compare them, not the absolute times.

    python benchmarks/preemption.py [--workers 2] [--trials 6] [--steps 400] [--every 8]
        [--seed 0] [--timeout 900] [--record]

Everything listens on 127.0.0.1; every process started is stopped and the temporary folder
removed at the end.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _argtypes import number, parser_for, whole
from _results import append_section
from _service_procs import Proc, cli, free_port, wait_serving

QUICK = """\
    python benchmarks/preemption.py --workers 1 --trials 2 --steps 20 --every 20 --timeout 120
(about 25 s; trials this short may end before any preemption)"""
SPACE = {
    "num_hidden_layers": [1, 2],
    "hidden_size": [64, 128],
    "num_attention_heads": [2],
    "intermediate_ratio": [2, 4],
}


def spec(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "preempted",
        "space": "bert",
        "space_options": SPACE,
        "loop": "random",
        "seed": args.seed,
        "n_trials": args.trials,
        "task": "sst2",
        "trainer": "bert",
        "recipe": {
            "max_steps": args.steps,
            "eval_every": max(1, args.steps // 8),
            "batch_size": 16,
            "max_seq_length": 64,
            "learning_rate": 1e-3,
            "seed": 0,
            "measure_latency": False,
        },
        "data": {"train_subset": 4000, "eval_subset": 256},
    }


def run_arm(args: argparse.Namespace, arm: str, tmp: Path) -> dict[str, Any]:
    """Runs the study under the seeded preemption schedule; returns the arm's row."""
    from archsearch.server.client import SearchClient
    from archsearch.v1 import archsearch_pb2 as pb

    rng = random.Random(args.seed)
    folder = tmp / arm
    folder.mkdir()
    storage = f"sqlite:///{folder / 's.db'}"
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = Proc(
        cli("serve", "--storage", storage, "--port", str(port), "--lease-seconds", "30"),
        folder / "server.log",
    )
    procs: list[Proc] = [server]
    env = {"ARCHSEARCH_CHECKPOINT_DIR": str(folder / "checkpoints")}
    minutes = "10" if arm == "resume" else "0"

    workers: dict[str, Proc] = {}

    def start_worker() -> None:
        name = f"w{len(procs)}"
        argv = cli(
            "worker", "--server", address, "--trainer", "bert", "--poll-seconds", "1",
            "--save-minutes", minutes, "--worker-id", name,
        )  # fmt: skip
        workers[name] = Proc(argv, folder / f"{name}.log", env)
        procs.append(workers[name])

    def training(client: SearchClient) -> list[str]:
        """The workers training a trial that has reported at least once."""
        return sorted(
            t.worker_id
            for t in client.list_trials("preempted")
            if t.state == pb.RUNNING and t.intermediate_values and t.worker_id in workers
        )

    preemptions, completed, wall = 0, False, 0.0
    try:
        wait_serving(address, server)
        for _ in range(args.workers):
            start_worker()
        with SearchClient(address) as client:
            client.launch(spec(args))
            began = time.monotonic()
            next_at = rng.uniform(0.5, 1.5) * args.every
            while time.monotonic() - began < args.timeout:
                if client.get_study("preempted").state == pb.STUDY_COMPLETED:
                    completed = True
                    break
                busy = training(client) if time.monotonic() - began >= next_at else []
                if busy:  # a preemption takes a machine that is training (else it waits)
                    victim = workers.pop(rng.choice(busy))
                    victim.kill(signal.SIGTERM)
                    victim.p.wait(60)
                    start_worker()
                    preemptions += 1
                    next_at = time.monotonic() - began + rng.uniform(0.5, 1.5) * args.every
                time.sleep(0.2)
            wall = time.monotonic() - began
    finally:
        for p in reversed(procs):
            p.stop()
    return {"arm": arm, "completed": completed, "wall": wall, "preemptions": preemptions}


def count(storage: str) -> dict[str, int]:
    import optuna

    from archsearch.server._rank_trials import is_rank_trial

    trials = [
        t
        for t in optuna.load_study(study_name="preempted", storage=storage).get_trials(
            deepcopy=False
        )
        if not is_rank_trial(t)
    ]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    trained = [t for t in done if "duplicate_of" not in t.user_attrs]
    resumed = [t for t in trained if "resumed_from_step" in t.user_attrs.get("info", {})]
    own_steps = sum(
        int(t.user_attrs["candidate"]["recipe"]["max_steps"])
        - int(t.user_attrs.get("info", {}).get("resumed_from_step", 0))
        for t in trained
    )
    return {
        "attempts": len(trials),
        "handed back": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "completed trials": len(done),
        "continued": len(resumed),
        "own steps": own_steps,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| arm | completed | wall s | preemptions | attempts | handed back "
        "| completed (repeats too) | continued from saved progress "
        "| steps in the completing attempts |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [
        f"| {r['arm']} | {'yes' if r['completed'] else 'NO (timeout)'} | {r['wall']:.0f} | "
        f"{r['preemptions']} | {r['attempts']} | {r['handed back']} | {r['completed trials']} | "
        f"{r['continued']} | {r['own steps']} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def main() -> int:
    p = parser_for(
        __doc__, QUICK, 'Goal: none (recorded with the verdict "no goal"); compare the arms.'
    )
    p.add_argument("--workers", type=whole(), default=2)
    p.add_argument("--trials", type=whole(), default=6)
    p.add_argument("--steps", type=whole(), default=400)
    p.add_argument("--every", type=number(), default=8.0, help="mean seconds between preemptions")
    p.add_argument("--seed", type=whole(0), default=0)
    p.add_argument("--timeout", type=number(), default=900.0, help="seconds per arm")
    p.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="archsearch-preemption-"))
    rows = []
    try:
        for arm in ("resume", "restart"):
            row = run_arm(args, arm, tmp)
            row.update(count(f"sqlite:///{tmp / arm / 's.db'}"))
            rows.append(row)
            print(f"{arm}: {row}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(rows)
    print(text)
    resume, restart = rows
    summary = (
        f"{args.workers} bert workers preempted (SIGTERM + requeue) about every {args.every:g} s, "
        f"{args.trials} trials of {args.steps} steps: resume "
        + (f"{resume['wall']:.0f} s" if resume["completed"] else "did NOT complete")
        + f" ({resume['attempts']} attempts), restart "
        + (f"{restart['wall']:.0f} s" if restart["completed"] else "did NOT complete")
        + f" ({restart['attempts']} attempts)"
    )
    if resume["completed"] and restart["completed"]:
        summary += f"; wall restart/resume {restart['wall'] / resume['wall']:.2f}x"
    print(summary)
    if args.record:
        append_section("preemption", f"{text}\n\n{summary}\n", summary=(summary, "no goal"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
