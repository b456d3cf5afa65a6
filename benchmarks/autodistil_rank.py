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
import _autodistil_args
import _autodistil_build
import _autodistil_cut as cut
import _autodistil_report as report
import _autodistil_truth as truth
from _results import append_section

from archsearch.spaces._students import MINILM_L6
from archsearch.spaces._subspaces import preset
from archsearch.worker._metrics import metric_names


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``_autodistil_args.py``)."""
    return _autodistil_args.parse_args(__doc__, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    commands = {"build": build, "retruth": retruth, "cut": cut_from_teacher, "report": show}
    commands[args.command](args)


if __name__ == "__main__":
    main()
