"""The command line of ``autodistil_rank.py``: its subcommands and every value checked
before any work starts (argparse's one-line error, exit status 2)."""

from __future__ import annotations

import argparse

import _autodistil_truth as truth
from _argtypes import (
    glue_task,
    glue_tasks,
    json_file,
    json_out,
    no_train_split,
    number,
    parser_for,
    seq_length,
    whole,
    whole_list,
)

from archsearch.worker._metrics import metric_names

QUICK = """\
    python benchmarks/autodistil_rank.py build --out /tmp/ad.json --tasks mrpc --seeds 0 \\
        --steps 10 --proxy-steps 5 --proxy-students 2 --truth-steps 10 --train-subset 500 \\
        --eval-subset 100 --heldout 100 --no-k1
    python benchmarks/autodistil_rank.py report /tmp/ad.json --loops tpe=2,boshnas=1
(3 supernets, their rank jobs and 24 students' truth, each a few steps: minutes, not hours)"""
GOAL = (
    "Goals (issue 14; report prints each, PASS or FAIL): the supernet proxy (K = 3, pooled)\n"
    "τ >= 0.6 and above the parameter count's; K = 3 at least as good as K = 1; the proxy's\n"
    "budgeted pick within 1 point of the best true student under each budget; AutoDistil's\n"
    "student with less than half the compute TPE or BOSHNAS needs."
)


def loops(text: str) -> str:
    """``--loops``: ``LOOP=SEEDS,...``, each a registered search loop with a number of replay
    seeds >= 1; returned as given."""
    from archsearch.search import LOOPS

    for item in text.split(","):
        loop, _, seeds = item.partition("=")
        if loop not in LOOPS.names() or not seeds.isdigit() or int(seeds) < 1:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected LOOP=SEEDS (e.g. tpe=20), LOOP one of "
                f"{', '.join(LOOPS.names())} and SEEDS >= 1"
            )
    return text


def truth_item(text: str) -> str:
    """A ``--task-truth`` item, ``TASK=STEPS,LR,EVAL_SUBSET,METRIC``; returned as given."""
    task, _, rest = text.partition("=")
    fields = rest.split(",")
    try:
        glue_task(task)
        whole()(fields[0])
        number()(fields[1])
        whole(0)(fields[2])
        ok = len(fields) == 4 and fields[3] in metric_names(task)
    except (argparse.ArgumentTypeError, IndexError):
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected TASK=STEPS,LR,EVAL_SUBSET,METRIC (e.g. mrpc=1000,1e-4,0,"
            "accuracy): STEPS >= 1, LR > 0, EVAL_SUBSET >= 0, METRIC one of the task's"
        )
    return text


def parse_args(doc: str | None, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``doc``: the script's docstring, its help), every value checked
    before any work starts (argparse's one-line error, exit status 2)."""
    p = parser_for(doc, QUICK, GOAL)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train and measure; writes --out as it goes")
    b.add_argument("--out", required=True, type=json_out)
    b.add_argument("--tasks", default="sst2,mrpc", type=glue_tasks)
    b.add_argument("--seeds", default="0,1", type=whole_list())
    b.add_argument("--steps", type=whole(), default=2000)
    b.add_argument("--proxy-steps", type=whole(), default=300)
    b.add_argument(
        "--proxy-students",
        type=whole(2),
        default=8,
        help="students per P2 step: a sandwich, the largest and the smallest first (>= 2)",
    )
    b.add_argument("--truth-steps", type=whole(), default=300)
    b.add_argument(
        "--truth-lr",
        type=number(),
        default=truth.TRUTH_LR,
        help="learning rate of the stand-alone truth runs",
    )
    b.add_argument("--train-subset", type=whole(0), default=20000)
    b.add_argument("--eval-subset", type=whole(0), default=872)
    b.add_argument("--heldout", type=whole(), default=2000)
    b.add_argument("--batch", type=whole(), default=32)
    b.add_argument("--seq", type=seq_length, default=64)
    b.add_argument("--no-k1", action="store_true")
    b.add_argument(
        "--task-truth",
        action="append",
        default=[],
        type=truth_item,
        metavar="TASK=STEPS,LR,EVAL_SUBSET,METRIC",
        help="one task's own truth recipe (as retruth gives it), e.g. "
        "mrpc=1000,1e-4,0,accuracy; repeatable",
    )
    b.add_argument("--workers", type=whole(), default=1, help="processes, one torch thread each")
    t = sub.add_parser("retruth", help="replace one task's truth with another recipe")
    t.add_argument("file", type=json_file)
    t.add_argument("--task", required=True, type=glue_task)
    t.add_argument("--steps", type=whole(), required=True)
    t.add_argument("--lr", type=number(), required=True)
    t.add_argument("--eval-subset", type=whole(0), default=0, help="0: the whole dev set")
    t.add_argument("--metric", required=True, help="the metric the truth is ranked by")
    t.add_argument("--seeds", default="0,1", type=whole_list())
    t.add_argument("--workers", type=whole(), default=1, help="processes, one torch thread each")
    c = sub.add_parser("cut", help="fine-tune students cut straight from the teacher")
    c.add_argument("file", type=json_file)
    c.add_argument("--task", required=True, type=glue_task)
    c.add_argument("--students", default="all", help="student keys, comma-separated, or all")
    c.add_argument("--workers", type=whole(), default=1, help="processes, one torch thread each")
    r = sub.add_parser("report", help="analyse a built file")
    r.add_argument("file", type=json_file)
    r.add_argument(
        "--task",
        type=glue_task,
        help="the task of the compute comparison (default: the build's first task)",
    )
    r.add_argument("--loops", default="tpe=20,boshnas=10", type=loops, help="loop=replay seeds,...")
    r.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    r.add_argument("--note", default="", help="what the summary row should say first")
    r.add_argument("--tasks", type=glue_tasks, help="report these tasks' truth only (not recorded)")
    r.add_argument(
        "--cuts-from",
        metavar="FILE",
        type=json_file,
        help="take the teacher cuts from another build of the same students and truth recipe",
    )
    args = p.parse_args(argv)
    if args.command == "build":
        if error := no_train_split(args.tasks.split(",")):
            b.error(f"argument --tasks: {error}")
        given = [item.partition("=")[0] for item in args.task_truth]
        tasks = args.tasks.split(",")
        if stray := [t for t in given if t not in tasks or given.count(t) > 1]:
            b.error(
                f"argument --task-truth: {', '.join(sorted(set(stray)))}: once per task of "
                f"--tasks {args.tasks}"
            )
    if args.command == "retruth" and args.metric not in metric_names(args.task):
        t.error(
            f"argument --metric: {args.metric}: {args.task} has "
            f"{', '.join(metric_names(args.task))}"
        )
    if args.command == "report" and args.tasks and args.record:
        r.error("--tasks reports part of a build: it is not recorded (drop --record)")
    return args
