"""``autodistil_rank.py build``'s jobs, scheduled as one pool of processes.

Supernets start first, the longest (K = 1) first; a sub-space's rank job starts as soon as its
supernet is trained; the truth jobs (students extracted from the K = 3 supernets) start as soon
as those three are trained, without waiting for K = 1. Each result is saved as it arrives, the
truth in each student's seed order, so a stopped build keeps everything that finished (and the
supernet trainer continues a stopped supernet from its saved progress).
"""

from __future__ import annotations

import multiprocessing
import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from typing import Any

import _autodistil_truth as truth
import torch

from archsearch.spaces import Candidate
from archsearch.worker import TrainContext, TrainResult
from archsearch.worker._autodistil_trainer import AutodistilTrainer
from archsearch.worker._metrics import primary_metric

#: The build's arguments a supernet or rank job reads.
SPEC_ARGS = (
    "batch", "seq", "proxy_steps", "proxy_students", "heldout", "tasks", "train_subset",
    "eval_subset",
)  # fmt: skip
Job = tuple[str, dict[str, Any], int]  # label, sub-space, supernet steps
Run = Callable[[dict[str, Any]], dict[str, Any]]


def executor(workers: int) -> Executor:
    """``workers`` spawned processes, one job each (torch's memory goes with the process)."""
    return ProcessPoolExecutor(
        max(1, workers), mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
    )


def run(
    data: dict[str, Any],
    jobs: Iterable[Job],
    settings: dict[str, Any],
    tasks: list[str],
    students: set[str],
    save: Callable[[], None],
    pool: Executor,
    workers: int,
    runners: dict[str, Run] | None = None,
) -> None:
    """Run every job ``data`` still lacks on ``pool`` and store each result as it arrives.

    Args:
        jobs: The supernets (label ``K3:<name>`` or ``K1``, sub-space, steps).
        settings: :data:`SPEC_ARGS` of the build.
        workers: The pool's size (one torch thread per job when more than one).
        runners: ``supernet``, ``rank`` and ``truth`` job functions (tests pass fakes).
    """
    runners = {
        "supernet": supernet_job,
        "rank": rank_job,
        "truth": truth.run_job,
        **(runners or {}),
    }
    jobs = sorted(jobs, key=lambda job: -job[2])  # the longest first
    threads = 1 if workers > 1 else 0
    pending: dict[Future[dict[str, Any]], tuple[str, Any]] = {}
    started: set[Any] = set()
    ready: dict[tuple[str, str, int], dict[str, float]] = {}

    def submit(kind: str, key: Any, spec: dict[str, Any]) -> None:
        started.add((kind, key))
        pending[pool.submit(runners[kind], spec)] = (kind, key)

    data_fields = {
        "tasks": str(settings["tasks"]).split(","),
        "train_subset": settings["train_subset"],
        "eval_subset": settings["eval_subset"],
    }

    def spec(label: str, space: dict[str, Any], steps: int) -> dict[str, Any]:
        return {
            "label": label, "space": space, "steps": steps, "threads": threads,
            "data": data_fields, **settings,
        }  # fmt: skip

    def enable() -> None:
        for label, space, steps in jobs:
            if label not in data["supernets"] and ("supernet", label) not in started:
                submit("supernet", label, spec(label, space, steps))
            elif (
                label in data["supernets"]
                and f"rank {label}" not in data["seconds"]
                and ("rank", label) not in started
            ):
                submit(
                    "rank", label, {**spec(label, space, 0), "supernet": data["supernets"][label]}
                )
        if all(label in data["supernets"] for label, _, _ in jobs if label.startswith("K3:")):
            for key, task, seed in truth.missing_jobs(data, tasks):
                if ("truth", (key, task, seed)) not in started and (key, task, seed) not in ready:
                    submit(
                        "truth", (key, task, seed), truth.job_spec(data, key, task, seed, workers)
                    )

    enable()
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                kind, key = pending.pop(future)
                result = future.result()
                if kind == "supernet":
                    data["supernets"][key] = result["checkpoint"]
                    data["seconds"][f"supernet {key}"] = result["seconds"]  # every attempt's
                elif kind == "rank":
                    proxies = {k: v for k, v in result["proxies"].items() if k in students}
                    data["proxies"][key.split(":")[0]].update(proxies)
                    data["seconds"][f"rank {key}"] = result["seconds"]
                else:
                    ready[key] = result
                    _store_in_order(data, ready)
                save()
            enable()
    finally:
        for future in pending:
            future.cancel()


def _store_in_order(
    data: dict[str, Any], ready: dict[tuple[str, str, int], dict[str, float]]
) -> None:
    """Store the finished truth results that are next in their student's seed order."""
    moved = True
    while moved:
        moved = False
        for key, task, seed in list(ready):
            have = len(data["truth"].get(key, {}).get(task, []))
            seeds = truth.seeds_of(data["settings"], task)
            if have < len(seeds) and seeds[have] == seed:
                truth.store(data, key, task, seed, ready.pop((key, task, seed)))
                moved = True


def supernet_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one supernet (continuing its saved progress, if an earlier build was stopped)."""
    recipe = {"steps": spec["steps"], "batch_size": spec["batch"], "max_seq_length": spec["seq"]}
    result = _train("supernet", spec, recipe)
    seconds = result.metrics["train_seconds"]
    resumed = result.info.get("resumed_from_step")
    print(
        f"supernet {spec['space']['name']}: relation_loss {result.metrics['relation_loss']:.4f} "
        f"in {seconds:.0f} s" + (f" (continued from step {resumed})" if resumed else ""),
        flush=True,
    )
    return {
        "label": spec["label"],
        "checkpoint": str(result.info["checkpoint"]),
        "seconds": seconds,
    }


def rank_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Score every student of one supernet: its ``label``, ``proxies`` (``{key: {proxy:
    value}}``) and ``seconds``."""
    recipe = {
        "supernet": spec["supernet"],
        "proxy_steps": spec["proxy_steps"],
        "proxy_students": spec["proxy_students"],
        "heldout": spec["heldout"],
        "batch_size": spec["batch"],
        "max_seq_length": spec["seq"],
    }
    m = _train("rank", spec, recipe).metrics
    keys = {name.split("@", 1)[1] for name in m if name.startswith("params@")}
    tasks = spec["data"]["tasks"]
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        per_task = {t: m[f"{t}.{primary_metric(t)}@{key}"] for t in tasks}
        # minus the dev loss of the same evaluation (absent from a worker before it existed)
        losses = {t: -m[f"{t}.dev_loss@{key}"] for t in tasks if f"{t}.dev_loss@{key}" in m}
        if len(losses) == len(tasks):
            losses["mean"] = statistics.fmean(losses.values())
        out[key] = {
            "P1_relation": -m[f"relation_loss@{key}"],
            "P2_task": statistics.fmean(per_task.values()),
            **{f"P2_task:{t}": v for t, v in per_task.items()},
            **{("P2_loss" if t == "mean" else f"P2_loss:{t}"): v for t, v in losses.items()},
            "P3_params": m[f"params@{key}"],
            "P4_flops": m[f"flops@{key}"],
            "P5_teacher_relation": -m[f"teacher_relation_loss@{key}"],
        }
    name = spec["space"]["name"]
    print(f"ranked {name}: {len(keys)} students in {m['train_seconds']:.0f} s", flush=True)
    return {"label": spec["label"], "proxies": out, "seconds": float(m["train_seconds"])}


def _train(kind: str, spec: dict[str, Any], recipe: dict[str, Any]) -> TrainResult:
    """The autodistil trainer's ``kind`` job on the spec's sub-space, with ``recipe[kind]``."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    candidate = Candidate(
        space="autodistil",
        kind=kind,
        architecture={"subspace": spec["space"]},
        recipe={kind: recipe},
        data=spec["data"],
    )
    return AutodistilTrainer().train(candidate, TrainContext())
