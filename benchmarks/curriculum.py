"""Curricula against standard fine-tuning at one step budget (not a test: a benchmark).

For each task and seed, in one run and through the ``bert`` trainer (same code path, same tiny
student, same steps and data for every method): standard fine-tuning (every example each
epoch); competency with sentence-length difficulty and the root schedule; PUDF (IRT
difficulties from a crowd cross-fitted on the training split, DDS-MAE); and IRT difficulty with
the root schedule (PUDF's ablation). Prints per task and method: the dev score at the budget
(mean and 95% t-interval over seeds), the paired difference to standard, the steps to reach
the standard run's final score (same seed; evaluations every ``--eval-every`` steps; per
seed, "never" when not reached), the training wall time, the crowd's seconds (fitted
once per task, then read from its cache by every run, as by a study's trials) and the total
including the crowd.

Issue 15's goal: PUDF reaches the standard score in fewer steps on both tasks, crowd time
included; or the note says plainly that it does not at this scale.

    python benchmarks/curriculum.py [--tasks sst2,mrpc] [--seeds 0,1] [--steps 200]
        [--eval-every 20] [--sst2-subset 4000] [--batch 32] [--seq 64] [--lr 1e-3] [--record]

``--record`` appends the run to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _argtypes import names, no_train_split, number, parser_for, seq_length, whole, whole_list
from _results import append_section
from _stats import t_interval as interval

from archsearch.spaces import Candidate
from archsearch.worker import TrainContext
from archsearch.worker._bert_trainer import BertTrainer

#: The methods compared: name -> data.curriculum.
METHODS: dict[str, dict[str, Any]] = {
    "standard": {"method": "none"},
    "length+root": {"method": "competency", "difficulty": "length", "scheduler": "root"},
    "pudf": {"method": "pudf"},
    "irt+root": {"method": "competency", "difficulty": "irt", "scheduler": "root"},
}
#: Tasks scored by dev accuracy (every run reports it at each evaluation).
TASKS = ("sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli")
QUICK = """\
    python benchmarks/curriculum.py --tasks mrpc --seeds 0,1 --steps 20 --eval-every 10 \\
        --methods standard,pudf   # about 50 s on 2 CPU cores"""
# The 4 x 128 student of the other benchmarks' smallest size.
STUDENT = {
    "num_hidden_layers": 4,
    "hidden_size": 128,
    "num_attention_heads": 2,
    "intermediate_size": 512,
}


def run(
    trainer: BertTrainer, args: argparse.Namespace, task: str, seed: int, curriculum: dict[str, Any]
) -> tuple[list[tuple[int, float]], dict[str, float], float]:
    """One fine-tuning: its (step, dev accuracy) evaluations, metrics and wall seconds."""
    candidate = Candidate(
        space="bert",
        architecture=STUDENT,
        recipe={
            "max_steps": args.steps,
            "batch_size": args.batch,
            "max_seq_length": args.seq,
            "learning_rate": args.lr,
            "eval_every": args.eval_every,
            "seed": seed,
            "measure_latency": False,
            "progress": False,
        },
        data={
            "task": task,
            "train_subset": args.sst2_subset if task == "sst2" else 0,
            "curriculum": curriculum,
        },
    )
    evaluations: list[tuple[int, float]] = []

    def report(step: int, value: float) -> bool:
        evaluations.append((step, value))
        return False

    context = TrainContext(report=report, intermediate_metric="accuracy")
    start = time.perf_counter()
    result = trainer.train(candidate, context)
    return evaluations, result.metrics, time.perf_counter() - start


def steps_to(evaluations: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated step whose score reaches ``target`` (None: never)."""
    return next((step for step, value in evaluations if value >= target - 1e-12), None)


def main() -> int:
    parser = _parser()
    args = parser.parse_args()
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    if error := no_train_split(tasks):
        parser.error(f"argument --tasks: {error}")
    methods = args.methods.split(",")
    # a fresh crowd cache: the first IRT run of a task fits the crowd, the others read it
    crowd_dir = tempfile.mkdtemp(prefix="curriculum-bench-")
    os.environ["ARCHSEARCH_CURRICULUM_DIR"] = crowd_dir
    try:
        text = compare(args, tasks, seeds, methods)
    finally:
        shutil.rmtree(crowd_dir, ignore_errors=True)
    print(text)
    if args.record:
        append_section("curriculum: standard vs competency vs PUDF vs IRT+root", text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = parser_for(__doc__, QUICK)
    parser.add_argument(
        "--tasks", default="sst2,mrpc", type=names(TASKS, "tasks scored by accuracy")
    )
    parser.add_argument("--seeds", default="0,1", type=whole_list())
    parser.add_argument("--steps", type=whole(), default=200)
    parser.add_argument("--eval-every", type=whole(), default=20)
    parser.add_argument("--sst2-subset", type=whole(0), default=4000, help="0: every example")
    parser.add_argument("--batch", type=whole(), default=32)
    parser.add_argument("--seq", type=seq_length, default=64)
    parser.add_argument("--lr", type=number(), default=1e-3)
    parser.add_argument("--methods", default=",".join(METHODS), type=names(METHODS, "methods"))
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    return parser


def compare(
    args: argparse.Namespace, tasks: list[str], seeds: list[int], methods: list[str]
) -> str:
    """Runs every task, method and seed; the report (Markdown)."""
    trainer = BertTrainer()
    lines = [
        f"Tiny student {STUDENT['num_hidden_layers']}x{STUDENT['hidden_size']}, {args.steps} "
        f"steps of {args.batch} (seq {args.seq}, lr {args.lr}), dev accuracy every "
        f"{args.eval_every} steps; SST-2 train subset {args.sst2_subset}, MRPC whole; seeds "
        f"{seeds}. Curriculum defaults (crowd of 8 TF-IDF logistic regressions, 5 folds; "
        "min_examples 1000). Shared machine (2 cores, other jobs running): times are noisy, "
        "compare within the run.",
        "",
        "| task | method | dev acc (95% CI) | paired diff vs standard | steps to standard's final "
        "(per seed) | train s | crowd s | total s incl. crowd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        results: dict[str, dict[int, tuple[list[tuple[int, float]], dict[str, float], float]]] = {}
        crowd_seconds = 0.0
        for method in methods:
            results[method] = {}
            for seed in seeds:
                outcome = run(trainer, args, task, seed, METHODS[method])
                results[method][seed] = outcome
                crowd_seconds += outcome[1].get("crowd_seconds", 0.0)
                print(
                    f"{task} {method} seed {seed}: {outcome[0][-1][1]:.4f} ({outcome[2]:.0f} s)",
                    flush=True,
                )
        for method in methods:
            finals = [results[method][s][0][-1][1] for s in seeds]
            mean, half = interval(finals)
            base = (
                {s: results["standard"][s][0][-1][1] for s in seeds}
                if ("standard" in results)
                else {}
            )
            diff = "-"
            if base:
                d_mean, d_half = interval([finals[i] - base[s] for i, s in enumerate(seeds)])
                diff = f"{d_mean:+.4f} ± {d_half:.4f}"
            reached = [steps_to(results[method][s][0], base[s]) for s in seeds] if base else []
            steps_text = ", ".join("never" if r is None else str(r) for r in reached) or "-"
            # a run's wall time less the crowd fit it did (counted once, in crowd s)
            train = statistics.fmean(
                results[method][s][2] - results[method][s][1].get("crowd_seconds", 0.0)
                for s in seeds
            )
            crowd = crowd_seconds if "irt" in method or method == "pudf" else 0.0
            lines.append(
                f"| {task} | {method} | {mean:.4f} ± {half:.4f} | {diff} | {steps_text} | "
                f"{train:.0f} | {crowd:.0f} | {train + crowd:.0f} |"
            )
            print(lines[-1], flush=True)  # each task's rows as soon as it is done
    lines += [
        "",
        "Train s: mean wall seconds of one run (loading, training, evaluations; the crowd fit "
        "excluded). Crowd s: the crowd fitted once per task and 1PL fit (cached for every later "
        "run, as for a study's trials); total = train + crowd for the IRT methods.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
