"""Does the supernet help? ``autodistil_rank.py cut``: students cut straight from the teacher
(AutoDistil's extraction rule, no supernet training) and fine-tuned with the task's truth
recipe and seeds, against the truth of the same students taken from their K = 3 supernet.

AutoDistil's claim is that a student taken from a trained supernet starts better than one cut
from the teacher; if the supernet's students fine-tune no better than the plain cuts, the
supernet's ranking is of students that extraction alone would give. Stored in the built file
under ``teacher_cut[task]``: the recipe it ran with, each student's scores in seed order and
its training seconds (an interrupted run continues with the same command; more students or
seeds may be added later).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import _autodistil_report as report
import _autodistil_truth as truth
import numpy as np


def fill(
    data: dict[str, Any],
    task: str,
    keys: list[str],
    save: Callable[[], None],
    workers: int = 1,
    run: Callable[[dict[str, Any]], dict[str, float]] | None = None,
) -> None:
    """Fine-tune each of ``keys`` cut from the teacher on ``task``, for each of the task's
    truth seeds not yet stored, saving after each. A recipe other than the one the stored cuts
    ran with is refused (``SystemExit``) unless only its seeds grew."""
    truth.check_task(data["settings"], task)
    unknown = [key for key in keys if key not in data["students"]]
    if unknown:
        raise SystemExit(f"--students: {unknown} are not students of this file (see its report)")
    recipe = truth.recipe_for(data["settings"], task)
    store = data.setdefault("teacher_cut", {}).setdefault(task, {"recipe": recipe, "truth": {}})
    if not truth.only_seeds_grow(store["recipe"], recipe):
        raise SystemExit(
            f"the cuts of {task} ran with {store['recipe']}, its truth recipe is now {recipe}: "
            f"remove teacher_cut.{task} from the file to run them again"
        )
    store["recipe"] = recipe
    jobs = [
        (key, seed)
        for i, seed in enumerate(truth.seeds_of(data["settings"], task))
        for key in keys
        if len(store["truth"].get(key, [])) <= i
    ]
    specs = [
        {**truth.job_spec(data, key, task, seed, workers), "supernet": None} for key, seed in jobs
    ]
    results = truth.run_specs(specs, workers, run or truth.run_job)
    for (key, seed), metrics in zip(jobs, results, strict=True):
        score = metrics[recipe["metric"]]
        store["truth"].setdefault(key, []).append(score)
        seconds = store.setdefault("seconds", {})  # apart from the build's training time
        seconds[key] = seconds.get(key, 0.0) + metrics["train_seconds"]
        save()
        print(
            f"cut {key} {task} seed {seed}: {recipe['metric']} {score:.2f} "
            f"({metrics['train_seconds']:.0f} s)",
            flush=True,
        )


#: Build settings a cut's fine-tuning depends on besides its task's recipe.
_CUT_SETTINGS = ("train_subset", "batch", "seq")


def borrow(data: dict[str, Any], other: dict[str, Any], tasks: list[str]) -> list[str]:
    """Copies ``other``'s teacher cuts of ``tasks`` into ``data`` (a cut does not depend on the
    supernet, so another build of the same students and truth recipe has the same cuts); the
    tasks copied. Refused (``SystemExit``) when the students, the task's truth recipe or the
    fine-tuning settings differ; a task ``data`` already has cuts of, or ``other`` has none
    of, is skipped."""
    if other["students"] != data["students"]:
        raise SystemExit("--cuts-from: that build has other students")
    for name in _CUT_SETTINGS:
        if other["settings"].get(name) != data["settings"].get(name):
            raise SystemExit(
                f"--cuts-from: that build's {name} is {other['settings'].get(name)!r}, "
                f"this one's {data['settings'].get(name)!r}"
            )
    copied = []
    for task in tasks:
        store = other.get("teacher_cut", {}).get(task)
        if store is None or task in data.get("teacher_cut", {}):
            continue
        recipe = truth.recipe_for(data["settings"], task)
        if store["recipe"] != recipe:
            raise SystemExit(
                f"--cuts-from: its {task} cuts ran with {store['recipe']}, this build's truth "
                f"with {recipe}"
            )
        data.setdefault("teacher_cut", {})[task] = store
        copied.append(task)
    return copied


def lines(data: dict[str, Any]) -> list[str]:
    """Markdown lines, one table per task with cuts: each student's truth from its supernet
    beside its teacher cut's (means over the seeds both have), then the mean difference with a
    90% bootstrap interval over students, how many the supernet wins, and the τ-b between the
    two. Empty when the file has no cuts."""
    out: list[str] = []
    for task, store in sorted(data.get("teacher_cut", {}).items()):
        pairs = {}
        for key in data["students"]:
            supernet = data["truth"].get(key, {}).get(task, [])
            n = min(len(store["truth"].get(key, [])), len(supernet))
            if n:  # a student without both has nothing to compare
                pairs[key] = (
                    statistics.fmean(supernet[:n]),
                    statistics.fmean(store["truth"][key][:n]),
                    n,
                )
        keys = list(pairs)
        if not keys:
            continue
        metric = store["recipe"]["metric"]
        out += [
            f"Supernet or plain cut? {task} {metric} of each student taken from its K = 3 "
            "supernet (the truth) and cut straight from the teacher, the same fine-tuning "
            f"({store['recipe']['steps']} steps, lr {store['recipe']['lr']:g})",
            "",
            "| student | params (M) | from supernet | cut from teacher | difference | seeds |",
            "|---|---|---|---|---|---|",
        ]
        for key, (sup, cut, n) in pairs.items():
            params = data["students"][key]["params"] / 1e6
            out.append(f"| {key} | {params:.1f} | {sup:.1f} | {cut:.1f} | {sup - cut:+.1f} | {n} |")
        sup_v = [p[0] for p in pairs.values()]
        cut_v = [p[1] for p in pairs.values()]
        diff, lo, hi = report.interval(sup_v, cut_v, _mean_difference)
        wins = sum(s > c for s, c in zip(sup_v, cut_v, strict=True))
        tau = report.interval(sup_v, cut_v, report.tau_b) if len(keys) > 2 else None
        out += [
            "",
            f"Supernet minus cut, mean over {len(keys)} students: {diff:+.2f} points "
            f"[{lo:+.2f}, {hi:+.2f}] (90% bootstrap over students); the supernet's student "
            f"is better for {wins} of {len(keys)}"
            + (
                f"; τ-b between the two rankings {tau[0]:+.2f} [{tau[1]:+.2f}, {tau[2]:+.2f}]"
                if tau
                else ""
            )
            + ".",
            "",
        ]
    return out


def _mean_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.asarray((x - y).mean(1))
