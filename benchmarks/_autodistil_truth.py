"""The stand-alone truth of ``benchmarks/autodistil_rank.py``: each student extracted from its
K = 3 supernet and fine-tuned alone, one recipe per task, for each seed.

A task's recipe is the build's (``truth_steps``, ``truth_lr``, ``eval_subset``, the task's
primary metric) unless ``settings["truth_by_task"][task]`` overrides it: ``retruth`` replaces
one task's truth with another recipe (the old values are kept under ``replaced_truth``), e.g.
MRPC scored by accuracy on the whole dev set after a longer run. ``workers`` runs the
fine-tunings in that many processes (one torch thread each); results are stored in seed order
as they come, so a cut run continues where it stopped.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from archsearch.spaces import Candidate
from archsearch.worker._metrics import primary_metric

TRUTH_LR = 1e-4  # the truth runs' learning rate before --truth-lr; files without it used this
RECIPE_KEYS = ("steps", "lr", "eval_subset", "metric", "seeds")


T = TypeVar("T")


def recipe_for(settings: dict[str, Any], task: str) -> dict[str, Any]:
    """``task``'s truth recipe: the build's settings, then the task's override."""
    base = {
        "steps": settings["truth_steps"],
        "lr": settings.get("truth_lr", TRUTH_LR),
        "eval_subset": settings["eval_subset"],
        "metric": primary_metric(task),
        "seeds": str(settings["seeds"]),
    }
    return {**base, **settings.get("truth_by_task", {}).get(task, {})}


def seeds_of(settings: dict[str, Any], task: str) -> list[int]:
    return [int(s) for s in str(recipe_for(settings, task)["seeds"]).split(",")]


def describe(settings: dict[str, Any]) -> str:
    """One clause per task: "sst2: 300 steps, lr 3e-4, 256 dev examples, accuracy, seeds 0,1"."""
    parts = []
    for task in str(settings["tasks"]).split(","):
        r = recipe_for(settings, task)
        dev = f"{r['eval_subset']} dev examples" if r["eval_subset"] else "the whole dev set"
        parts.append(
            f"{task}: {r['steps']} steps, lr {r['lr']:g}, {dev}, {r['metric']}, seeds {r['seeds']}"
        )
    return "; ".join(parts)


def replace_recipe(data: dict[str, Any], task: str, recipe: dict[str, Any]) -> None:
    """Make ``recipe`` (``RECIPE_KEYS``) ``task``'s truth recipe in ``data``. A new recipe moves
    the task's old truth to ``data["replaced_truth"][task]``; the same recipe with more seeds
    after the ones it has continues it; anything else is refused (``SystemExit``)."""
    settings = data["settings"]
    check_task(settings, task)
    current = settings.get("truth_by_task", {}).get(task)
    if current is not None:
        if not only_seeds_grow(current, recipe):
            raise SystemExit(
                f"{task}'s truth was already replaced with {current}; only seeds may grow, "
                "keeping the seeds it has first"
            )
    else:
        data.setdefault("replaced_truth", {})[task] = {
            "recipe": recipe_for(settings, task),
            "values": {key: v.pop(task) for key, v in data["truth"].items() if task in v},
        }
        for per_key in data.get("truth_metrics", {}).values():
            per_key.pop(task, None)
    settings.setdefault("truth_by_task", {})[task] = recipe


def check_task(settings: dict[str, Any], task: str) -> None:
    """Refuse (``SystemExit``) a task the file was not built for."""
    if str(task) not in str(settings["tasks"]).split(","):
        raise SystemExit(f"--task {task}: the file was built for {settings['tasks']}")


def only_seeds_grow(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """``new`` equals ``old`` but for more ``seeds`` after the ones ``old`` has."""
    before, after = (str(r["seeds"]).split(",") for r in (old, new))
    return {**old, "seeds": new["seeds"]} == new and after[: len(before)] == before


def missing_jobs(data: dict[str, Any], tasks: list[str]) -> list[tuple[str, str, int]]:
    """(student key, task, seed) still to run, seed-major so that results arrive in each
    student's seed order."""
    jobs = []
    for task in tasks:
        for i, seed in enumerate(seeds_of(data["settings"], task)):
            for key in data["students"]:
                if len(data["truth"].get(key, {}).get(task, [])) <= i:
                    jobs.append((key, task, seed))
    return jobs


def fill(
    data: dict[str, Any],
    tasks: list[str],
    save: Callable[[], None],
    workers: int = 1,
    run: Callable[[dict[str, Any]], dict[str, float]] | None = None,
) -> None:
    """Run every missing truth job of ``tasks`` and store each score (x100, the recipe's
    metric) and all the task's metrics, saving after each. ``run`` is the job runner (tests
    pass a fake one)."""
    jobs = missing_jobs(data, tasks)
    specs = [job_spec(data, key, task, seed, workers) for key, task, seed in jobs]
    results = run_specs(specs, workers, run or run_job)
    for (key, task, seed), metrics in zip(jobs, results, strict=True):
        store(data, key, task, seed, metrics)
        save()


def store(data: dict[str, Any], key: str, task: str, seed: int, metrics: dict[str, float]) -> None:
    """Append one truth run's score (the recipe's metric) and metrics to ``key``'s ``task``
    lists; the caller keeps each student's seed order."""
    metric = recipe_for(data["settings"], task)["metric"]
    data["truth"].setdefault(key, {}).setdefault(task, []).append(metrics[metric])
    data.setdefault("truth_metrics", {}).setdefault(key, {}).setdefault(task, []).append(metrics)
    seconds = data.setdefault("seconds", {})
    seconds[f"truth {key}"] = seconds.get(f"truth {key}", 0.0) + metrics["train_seconds"]
    print(
        f"truth {key} {task} seed {seed}: {metric} {metrics[metric]:.2f} "
        f"({metrics['train_seconds']:.0f} s)",
        flush=True,
    )


def run_specs(
    specs: list[dict[str, Any]], workers: int, run: Callable[[dict[str, Any]], T]
) -> Iterator[T]:
    """``run`` over ``specs``, in ``workers`` processes (spawned, one job each) when more
    than one, yielding the results in the order of ``specs``."""
    if workers <= 1 or len(specs) <= 1:
        yield from map(run, specs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        yield from pool.imap(run, specs)  # in submission order, run ahead on every worker


def job_spec(data: dict[str, Any], key: str, task: str, seed: int, workers: int) -> dict[str, Any]:
    s = data["settings"]
    r = recipe_for(s, task)
    name = data["students"][key]["subspace"]
    return {
        "student": data["students"][key]["student"],
        "supernet": data["supernets"][f"K3:{name}"],
        "task": task,
        "seed": seed,
        "steps": r["steps"],
        "lr": r["lr"],
        "eval_subset": r["eval_subset"],
        "train_subset": s["train_subset"],
        "batch": s["batch"],
        "seq": s["seq"],
        "threads": 1 if workers > 1 else 0,
    }


def run_job(spec: dict[str, Any]) -> dict[str, float]:
    """Fine-tune one student stand-alone, taken from ``spec["supernet"]`` (``None``: cut
    straight from the teacher); its dev metrics x100 and ``train_seconds``."""
    import torch

    from archsearch.worker import TrainContext
    from archsearch.worker._autodistil_trainer import AutodistilTrainer

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    candidate = Candidate(
        space="autodistil",
        kind="train",
        architecture={"student": spec["student"]},
        recipe={
            **({"init": {"supernet": spec["supernet"]}} if spec["supernet"] else {}),
            "max_steps": spec["steps"],
            "eval_every": spec["steps"],
            "batch_size": spec["batch"],
            "max_seq_length": spec["seq"],
            "learning_rate": spec["lr"],
            "seed": spec["seed"],
            "measure_latency": False,
        },
        data={
            "task": spec["task"],
            "train_subset": spec["train_subset"],
            "eval_subset": spec["eval_subset"],
        },
    )
    metrics = AutodistilTrainer().train(candidate, TrainContext()).metrics
    task = spec["task"]
    out = {
        name: 100 * float(v)
        for name, v in metrics.items()
        if name in {primary_metric(task), "accuracy", "f1", "mcc", "pearson", "spearman"}
    }
    return {**out, "train_seconds": float(metrics.get("train_seconds", 0.0))}
