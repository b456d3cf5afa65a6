"""Is the AutoDistil supernet's ranking right, and do several sub-spaces beat one? (a benchmark)

Issue 14's benchmark, through the ``autodistil`` trainer (the service's code path): with the
MiniLM teacher, the ``minilm-k3`` sub-spaces (3 x 8 students) and a K = 1 supernet over their
union (``minilm-k1``) trained with the same total supernet steps (K = 3: ``--steps`` each; K = 1:
3 x ``--steps``). Each supernet's rank job scores its students (P1 relation loss on held-out text,
P2 task-proxy dev score, P5 relation loss of the student cut straight from the teacher); P3/P4 are
params and FLOPs. Truth: every one of the 24 students extracted from its K = 3 supernet and
fine-tuned stand-alone (one recipe) on each task and seed; a student's truth is the mean primary
dev metric over tasks and seeds.

Prints Kendall τ-b and Spearman ρ (90% bootstrap intervals over students) of each proxy against
the truth, per sub-space and pooled, for K = 3 and K = 1; and the regret (best true student in
budget minus the pick's truth, in points) of each proxy's pick under three FLOPs budgets per
sub-space (the 3rd, 5th and 8th cheapest student's FLOPs), beside "the largest that fits".
K = 1's rank job scores all 125 students of the union (P2 fine-tunes them all), of which the 24
are compared.

    python benchmarks/autodistil_rank.py [--tasks sst2,mrpc] [--seeds 0,1] [--steps 2000]
        [--proxy-steps 300] [--truth-steps 300] [--train-subset 20000] [--eval-subset 872]
        [--heldout 2000] [--batch 32] [--seq 64] [--subspaces tiny,small,base] [--no-k1]

A shared machine slows every run alike; ratios within one run still hold.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from scipy import stats

from archsearch.spaces import Candidate
from archsearch.spaces._students import MINILM_L6, Student, flops, preset
from archsearch.worker import TrainContext
from archsearch.worker._autodistil_trainer import AutodistilTrainer
from archsearch.worker._metrics import primary_metric

PROXIES = ("P1_relation", "P2_task", "P3_params", "P4_flops", "P5_teacher_relation")


def main() -> None:
    args = _parse()
    trainer = AutodistilTrainer()
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    spaces = [s for s in preset("minilm-k3", MINILM_L6) if s.name in args.subspaces.split(",")]
    data = {"tasks": tasks, "train_subset": args.train_subset, "eval_subset": args.eval_subset}
    rank_recipe = {
        "proxy_steps": args.proxy_steps,
        "heldout": args.heldout,
        "batch_size": args.batch,
        "max_seq_length": args.seq,
    }
    start = time.perf_counter()
    proxies: dict[str, dict[str, dict[str, float]]] = {"K3": {}, "K1": {}}
    supernets: dict[str, str] = {}
    for space in spaces:
        supernets[space.name] = _supernet(trainer, space.to_dict(), args.steps, data, args)
        proxies["K3"].update(
            _rank(trainer, space.to_dict(), supernets[space.name], data, rank_recipe, tasks)
        )
    students = {s.key(): (space.name, s) for space in spaces for s in space.students(MINILM_L6)}
    if not args.no_k1:
        union = preset("minilm-k1", MINILM_L6)[0].to_dict()
        folder = _supernet(trainer, union, args.steps * len(spaces), data, args)
        ranked = _rank(trainer, union, folder, data, rank_recipe, tasks)
        proxies["K1"] = {k: v for k, v in ranked.items() if k in students}
    truth = {
        key: _truth(trainer, student, supernets[space], tasks, seeds, data, args)
        for key, (space, student) in students.items()
    }
    print(
        f"\n{len(students)} students, tasks {tasks}, seeds {seeds}; "
        f"{time.perf_counter() - start:.0f} s in all (shared machine)"
    )
    for k, scores in proxies.items():
        if not scores:
            continue
        print(f"\n== {k}: rank correlation with the truth (90% bootstrap interval)")
        groups = {space.name: [s.key() for s in space.students(MINILM_L6)] for space in spaces}
        groups["pooled"] = list(students)
        for proxy in PROXIES:
            cells = []
            for name, keys in groups.items():
                x, y = [scores[k_][proxy] for k_ in keys], [truth[k_] for k_ in keys]
                cells.append(f"{name} τ {_interval(x, y, _tau)} ρ {_interval(x, y, _rho)}")
            print(f"{proxy:20s} " + " | ".join(cells))
        print(f"-- {k}: regret (points) of each pick under three FLOPs budgets per sub-space")
        for proxy in (*PROXIES, "largest_fits"):
            regrets = [
                _regret(keys, scores, truth, students, budget_index, proxy)
                for name, keys in groups.items()
                if name != "pooled"
                for budget_index in (2, 4, 7)
            ]
            print(
                f"{proxy:20s} "
                + " ".join(f"{r:5.1f}" for r in regrets)
                + f"   mean {statistics.fmean(regrets):.2f}"
            )


def _supernet(
    trainer: AutodistilTrainer,
    space: dict[str, Any],
    steps: int,
    data: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    recipe = {"steps": steps, "batch_size": args.batch, "max_seq_length": args.seq}
    candidate = Candidate(
        space="autodistil",
        kind="supernet",
        architecture={"subspace": space},
        recipe={"supernet": recipe},
        data=data,
    )
    result = trainer.train(candidate, TrainContext())
    print(
        f"supernet {space['name']}: relation_loss {result.metrics['relation_loss']:.4f} "
        f"in {result.metrics['train_seconds']:.0f} s",
        flush=True,
    )
    return str(result.info["checkpoint"])


def _rank(
    trainer: AutodistilTrainer,
    space: dict[str, Any],
    folder: str,
    data: dict[str, Any],
    recipe: dict[str, Any],
    tasks: Sequence[str],
) -> dict[str, dict[str, float]]:
    candidate = Candidate(
        space="autodistil",
        kind="rank",
        architecture={"subspace": space},
        recipe={"rank": {**recipe, "supernet": folder}},
        data=data,
    )
    m = trainer.train(candidate, TrainContext()).metrics
    keys = {name.split("@", 1)[1] for name in m if name.startswith("params@")}
    out = {}
    for key in keys:
        task_scores = [m[f"{t}.{primary_metric(t)}@{key}"] for t in tasks]
        out[key] = {
            "P1_relation": -m[f"relation_loss@{key}"],
            "P2_task": statistics.fmean(task_scores),
            "P3_params": m[f"params@{key}"],
            "P4_flops": m[f"flops@{key}"],
            "P5_teacher_relation": -m[f"teacher_relation_loss@{key}"],
        }
    print(f"ranked {space['name']}: {len(keys)} students in {m['train_seconds']:.0f} s", flush=True)
    return out


def _truth(
    trainer: AutodistilTrainer,
    student: Student,
    supernet: str,
    tasks: Sequence[str],
    seeds: Sequence[int],
    data: dict[str, Any],
    args: argparse.Namespace,
) -> float:
    values = []
    for task in tasks:
        for seed in seeds:
            candidate = Candidate(
                space="autodistil",
                kind="train",
                architecture={"student": student.to_dict()},
                recipe={
                    "init": {"supernet": supernet},
                    "max_steps": args.truth_steps,
                    "eval_every": args.truth_steps,
                    "batch_size": args.batch,
                    "max_seq_length": args.seq,
                    "learning_rate": 1e-4,
                    "seed": seed,
                    "measure_latency": False,
                },
                data={**{k: v for k, v in data.items() if k != "tasks"}, "task": task},
            )
            result = trainer.train(candidate, TrainContext())
            values.append(100 * result.metrics[primary_metric(task)])
    print(f"truth {student.key()}: {statistics.fmean(values):.2f}", flush=True)
    return statistics.fmean(values)


def _tau(x: Sequence[float], y: Sequence[float]) -> float:
    return float(stats.kendalltau(x, y, variant="b").statistic)


def _rho(x: Sequence[float], y: Sequence[float]) -> float:
    return float(stats.spearmanr(x, y).statistic)


def _interval(
    x: Sequence[float], y: Sequence[float], fn: Callable[[Sequence[float], Sequence[float]], float]
) -> str:
    rng = random.Random(0)
    draws = []
    for _ in range(1000):
        idx = [rng.randrange(len(x)) for _ in x]
        value = fn([x[i] for i in idx], [y[i] for i in idx])
        if value == value:  # NaN when a resample is constant
            draws.append(value)
    draws.sort()
    lo, hi = (
        (draws[int(0.05 * len(draws))], draws[int(0.95 * len(draws)) - 1])
        if draws
        else (float("nan"), float("nan"))
    )
    return f"{fn(x, y):+.2f} [{lo:+.2f},{hi:+.2f}]"


def _regret(
    keys: Sequence[str],
    scores: dict[str, dict[str, float]],
    truth: dict[str, float],
    students: dict[str, tuple[str, Student]],
    budget_index: int,
    proxy: str,
) -> float:
    cost = {k: flops(MINILM_L6, students[k][1]) for k in keys}
    budget = sorted(cost.values())[min(budget_index, len(keys) - 1)]
    fits = [k for k in keys if cost[k] <= budget]
    if proxy == "largest_fits":
        pick = max(fits, key=lambda k: cost[k])
    else:
        pick = max(fits, key=lambda k: scores[k][proxy])
    return max(truth[k] for k in fits) - truth[pick]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="sst2,mrpc")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--proxy-steps", type=int, default=300)
    p.add_argument("--truth-steps", type=int, default=300)
    p.add_argument("--train-subset", type=int, default=20000)
    p.add_argument("--eval-subset", type=int, default=872)
    p.add_argument("--heldout", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--subspaces", default="tiny,small,base")
    p.add_argument("--no-k1", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    main()
