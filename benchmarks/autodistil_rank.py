"""Is the AutoDistil supernet's ranking right, and do several sub-spaces beat one? (a benchmark)

Issue 14's benchmark, through the ``autodistil`` trainer (the service's code path).

``build`` trains and measures, writing a JSON file as it goes (rerun with the same ``--out``
to continue a cut run, to add K = 1 after ``--no-k1``, or with more ``--seeds`` after the
ones it has to add truth seeds; any other setting must stay): with the MiniLM teacher, the
``minilm-k3`` sub-spaces (3 x 8 students) and a K = 1 supernet over their union
(``minilm-k1``) trained with the same total supernet steps (K = 3: ``--steps`` each; K = 1:
3 x ``--steps``). Each supernet's rank job scores its students (P1 relation loss on held-out
text, P2 task-proxy dev score per task, P5 relation loss of the student cut straight from the
teacher); P3/P4 are params and FLOPs. K = 1's rank job trains ``--proxy-students`` students
per P2 step (a step-seeded sandwich) of its 125, and K = 3's the same number of its 8. Truth:
each of the 24 students extracted from its K = 3 supernet and fine-tuned stand-alone (one
recipe per task) on each task and seed. ``report`` also gives the pooled τ-b against each
task's truth alone. ``retruth`` replaces one task's truth with another recipe (longer, another
metric, the whole dev set; ``_autodistil_truth.py``), keeping the old values in the file.
``cut`` fine-tunes students cut straight from the teacher with a task's truth recipe, to show
whether the supernet helps them at all (``_autodistil_cut.py``); ``report`` then prints both.

``build --workers N`` runs the supernet, rank and truth jobs in N processes (one torch thread
each; ``_autodistil_build.py``): K = 1's supernet first, each rank job once its supernet is
trained, the truth once the K = 3 supernets are, each result saved as it ends. A stopped build
loses at most the last 10 minutes of a supernet: the trainer saves its progress and continues.

``report`` reads that file and prints (``--record``: appends to ``benchmarks/RESULTS.md``):
Kendall τ-b and Spearman ρ of each proxy against the truth per sub-space and pooled, for K = 3
and K = 1; the regret of each proxy's pick under three FLOPs budgets beside "the largest that
fits"; the compute of AutoDistil's final student against TPE's and BOSHNAS's to find one as
good on one task (``benchmarks/_autodistil_report.py`` says how compute is counted); the goals.

    python benchmarks/autodistil_rank.py build --out F [--tasks sst2,mrpc] [--seeds 0,1]
        [--steps 2000] [--proxy-steps 300] [--proxy-students 8] [--truth-steps 300]
        [--truth-lr 1e-4] [--train-subset 20000] [--eval-subset 872] [--heldout 2000]
        [--batch 32] [--seq 64] [--no-k1] [--task-truth mrpc=1000,1e-4,0,accuracy]
        [--workers 2]
    python benchmarks/autodistil_rank.py retruth F --task mrpc --steps 1000 --lr 1e-4
        --metric accuracy [--eval-subset 0] [--seeds 0,1] [--workers 2]
    python benchmarks/autodistil_rank.py cut F --task mrpc [--students all] [--workers 2]
    python benchmarks/autodistil_rank.py report F [--task sst2] [--loops tpe=20,boshnas=10]
        [--record] [--tasks sst2 (finished tasks alone; not recorded)]
        [--cuts-from G (the teacher cuts of another build of the same students and recipe)]

A shared machine slows every run alike; ratios within one run still hold.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _autodistil_build
import _autodistil_cut as cut
import _autodistil_report as report
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
from _results import append_section

from archsearch.spaces._students import MINILM_L6
from archsearch.spaces._subspaces import preset
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


def build(args: argparse.Namespace) -> None:
    out = Path(args.out)
    lock = _lock(out)  # held until this process ends
    data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    settings = {
        k: getattr(args, k)
        for k in (
            "tasks", "seeds", "steps", "proxy_steps", "proxy_students", "truth_steps",
            "truth_lr", "train_subset", "eval_subset", "heldout", "batch", "seq",
        )
    }  # fmt: skip
    settings["sandwich"] = 4
    tasks = args.tasks.split(",")
    if args.task_truth:
        settings["truth_by_task"] = task_truths(args.task_truth, tasks, args.seeds)
    if data:
        data["settings"] = grown(out, data["settings"], settings)
    spaces = preset("minilm-k3", MINILM_L6)
    students = {s.key() for space in spaces for s in space.students(MINILM_L6)}
    data.setdefault("settings", settings)
    data["teacher_flops"] = report.TEACHER_FLOPS
    data["students"] = report.minilm_students()
    for k in ("supernets", "seconds", "truth"):
        data.setdefault(k, {})
    data.setdefault("proxies", {"K3": {}, "K1": {}})

    save = _saver(out, data)
    jobs = [(f"K3:{space.name}", space.to_dict(), args.steps) for space in spaces]
    if not args.no_k1:
        union = preset("minilm-k1", MINILM_L6)[0].to_dict()
        jobs.append(("K1", union, args.steps * len(spaces)))
    settings_spec = {k: getattr(args, k) for k in _autodistil_build.SPEC_ARGS}
    with _autodistil_build.executor(args.workers) as pool:
        _autodistil_build.run(data, jobs, settings_spec, tasks, students, save, pool, args.workers)
    print(f"built {out}: {sum(data['seconds'].values()):.0f} s of training in all", flush=True)
    lock.close()


def _lock(out: Path) -> IO[str]:
    """An exclusive lock on ``out`` (a ``.lock`` file beside it): two builds writing one file
    would lose each other's results."""
    handle = open(out.with_name(out.name + ".lock"), "a")  # noqa: SIM115 - held while building
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another build is writing {out}; wait for it or stop it") from None
    return handle


def task_truths(items: list[str], tasks: list[str], seeds: str) -> dict[str, dict[str, Any]]:
    """``--task-truth TASK=STEPS,LR,EVAL_SUBSET,METRIC`` items as ``truth_by_task``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        task, _, rest = item.partition("=")
        fields = rest.split(",")
        if task not in tasks or len(fields) != 4 or task in out:
            raise SystemExit(
                f"--task-truth {item!r}: write TASK=STEPS,LR,EVAL_SUBSET,METRIC "
                f"once per task of --tasks {','.join(tasks)}"
            )
        try:
            steps, lr, subset = int(fields[0]), float(fields[1]), int(fields[2])
        except ValueError:
            raise SystemExit(
                f"--task-truth {item!r}: STEPS and EVAL_SUBSET are integers, LR a number"
            ) from None
        if fields[3] not in metric_names(task):
            raise SystemExit(f"--task-truth {item!r}: {task} has {', '.join(metric_names(task))}")
        out[task] = {"steps": steps, "lr": lr, "eval_subset": subset, "metric": fields[3],
                     "seeds": seeds}  # fmt: skip
    return out


def grown(out: Path, built: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` if a file built with ``built`` can be continued with them: equal but for
    more truth seeds after the ones it has (``--seeds 0`` then ``--seeds 0,1``). A task whose
    truth ``retruth`` replaced keeps its own recipe (``--task-truth`` may repeat it)."""
    built = {"truth_lr": truth.TRUTH_LR, **built}
    replaced = built.pop("truth_by_task", None)
    given = settings.pop("truth_by_task", None)
    if given is not None:
        if set(given) != set(replaced or {}) or not all(
            truth.only_seeds_grow(replaced[t], given[t]) for t in given
        ):
            raise SystemExit(f"{out} has the task truths {replaced}, not --task-truth's {given}")
        replaced = given
    if not truth.only_seeds_grow(built, settings):
        raise SystemExit(
            f"{out} was built with other settings: {built} (only seeds may grow, keeping "
            "the seeds it has first)"
        )
    return {**settings, "truth_by_task": replaced} if replaced else settings


def retruth(args: argparse.Namespace) -> None:
    """Replace (or continue) one task's truth with another recipe; see ``_autodistil_truth``."""
    out = Path(args.file)
    data = json.loads(out.read_text())
    recipe = {
        "steps": args.steps,
        "lr": args.lr,
        "eval_subset": args.eval_subset,
        "metric": args.metric,
        "seeds": args.seeds,
    }
    truth.replace_recipe(data, args.task, recipe)

    save = _saver(out, data)
    save()
    truth.fill(data, [args.task], save, args.workers)
    print(f"{out}: {args.task}'s truth is {truth.describe(data['settings'])}", flush=True)


def cut_from_teacher(args: argparse.Namespace) -> None:
    """Fine-tune students cut straight from the teacher with a task's truth recipe; see
    ``_autodistil_cut``."""
    out = Path(args.file)
    data = json.loads(out.read_text())
    keys = list(data["students"]) if args.students == "all" else args.students.split(",")

    save = _saver(out, data)
    cut.fill(data, args.task, keys, save, args.workers)
    print("\n".join(cut.lines(data)), flush=True)


def _saver(out: Path, data: dict[str, Any]) -> Callable[[], None]:
    """A function writing ``data`` to ``out``, called after each finished job so that an
    interrupted run loses none."""

    def save() -> None:
        out.write_text(json.dumps(data, indent=1))

    return save


def only_tasks(data: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """``data`` with the truth of ``tasks`` only (a report of a build whose other tasks have
    not finished, or of one task alone)."""
    known = str(data["settings"]["tasks"]).split(",")
    if unknown := sorted(set(tasks) - set(known)):
        raise SystemExit(f"--tasks {','.join(unknown)}: this build has {','.join(known)}")

    def keep(per_key: dict[str, Any]) -> dict[str, Any]:
        return {
            key: {t: v for t, v in by_task.items() if t in tasks}
            for key, by_task in per_key.items()
        }

    return {
        **data,
        "settings": {**data["settings"], "tasks": ",".join(tasks)},
        "truth": keep(data["truth"]),
        "truth_metrics": keep(data.get("truth_metrics", {})),
        "teacher_cut": {t: v for t, v in data.get("teacher_cut", {}).items() if t in tasks},
    }


def show(args: argparse.Namespace) -> None:
    data = report.with_derived(json.loads(Path(args.file).read_text()))
    if args.tasks:  # not with --record (parse_args)
        data = only_tasks(data, args.tasks.split(","))
    tasks = str(data["settings"]["tasks"]).split(",")
    if args.cuts_from:
        copied = cut.borrow(data, json.loads(Path(args.cuts_from).read_text()), tasks)
        print(f"teacher cuts of {', '.join(copied) or 'no task'} from {args.cuts_from}")
    args.task = args.task or tasks[0]
    if args.task not in tasks:
        raise SystemExit(f"--task {args.task}: the report holds {','.join(tasks)}")
    missing = sorted({key for key, _, _ in truth.missing_jobs(data, tasks)})
    if missing:
        raise SystemExit(f"{args.file} has no truth yet for {missing}: rerun build to finish it")
    s = data["settings"]
    head = [
        f"MiniLM teacher, minilm-k3 sub-spaces ({len(data['students'])} students); supernets "
        f"{s['steps']} steps each (K = 1: {3 * s['steps']}), batch {s['batch']}, seq {s['seq']}; "
        f"rank: {s['proxy_steps']} P2 steps of {s['proxy_students']} students, "
        f"{s['heldout']} held-out sentences; truth ({s['train_subset']} training examples): "
        f"{truth.describe(s)}; training time in all {sum(data['seconds'].values()) / 60:.0f} "
        "min.",
        "",
    ]
    corr, pooled = report.correlations(data)
    regret_lines, regret = report.regrets(data)
    loops = {loop: int(n) for loop, n in (item.split("=") for item in args.loops.split(","))}
    compute_lines, worst = report.compute_comparison(data, args.task, loops)
    proxy = report.loop_proxy(data)
    goal_lines, passed = report.goals(pooled, regret, worst, proxy)
    text = "\n".join(
        [*head, *corr, *report.per_task(data), *cut.lines(data), *regret_lines,
         *compute_lines, "Goals:", "", *goal_lines]
    )  # fmt: skip
    print(text)
    if args.record:
        tau = pooled[("K3", proxy)]
        figure = (
            f"{args.note + ': ' if args.note else ''}{proxy} pooled τ {tau:.2f} "
            f"(params {pooled[('K3', 'P3_params')]:.2f}, K = 1 "
            f"{pooled.get(('K1', proxy), float('nan')):.2f}); budgeted regret "
            f"{', '.join(f'{v:.1f}' for v in regret[proxy])} points; compute vs "
            + ", ".join(f"{loop} {r:.2f}" for loop, r in worst.items())
        )
        append_section(
            "autodistil_rank: AutoDistil proxies against stand-alone truth",
            text,
            summary=(figure, "pass" if passed else "FAIL"),
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, every value checked before any work starts (argparse's one-line
    error, exit status 2)."""
    p = parser_for(__doc__, QUICK, GOAL)
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    commands = {"build": build, "retruth": retruth, "cut": cut_from_teacher, "report": show}
    commands[args.command](args)


if __name__ == "__main__":
    main()
