"""DyLoRA once vs LoRA at every rank vs LoRA-r_max truncated (not a test: a benchmark).

For each task and seed, in one run and through the ``lora`` trainer (same code path, same steps,
same data for every run): one DyLoRA fine-tuning scored at ranks 1..r_max; plain LoRA trained
at each rank r = 1..r_max and scored at r; plain LoRA trained at r_max and scored at every rank
(the truncated baseline; not timed). Prints each rank's dev score (mean and 95% t-interval over
seeds) and the total wall time (loading, training, evaluating) of the two ways to get every
rank, with their ratio.

Defaults follow the issue: the frozen all-MiniLM-L6-v2 teacher as base, LoRA on query and value,
r_max 8, α 16, frozen DyLoRA, SST-2 subset and MRPC, 3 seeds. Goals (issue 13): the r_max ranks
cost at least 7x less wall time through DyLoRA than through r_max LoRA runs; every rank within
1 point of LoRA trained at that rank; clearly above truncated LoRA at ranks 1-4.

    python benchmarks/dylora_ranks.py [--tasks sst2,mrpc] [--seeds 0,1,2] [--steps 300]
        [--train-subset 20000] [--eval-subset 872] [--r-max 8] [--alpha 16] [--lr 5e-4]
        [--batch 32] [--seq 64] [--model PATH] [--device cpu] [--record]

``--record`` appends the run to ``benchmarks/RESULTS.md`` (only for a run worth keeping).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_section
from _stats import t_interval as interval

from archsearch.spaces import Candidate, get_task
from archsearch.worker import TrainContext
from archsearch.worker._registry import create_trainer


def run(
    trainer: Any, args: argparse.Namespace, task: str, seed: int, lora: dict[str, Any]
) -> tuple[dict[str, float], float]:
    """One fine-tuning; its metrics and wall seconds (loading, training and every evaluation)."""
    candidate = Candidate(
        space="lora",
        architecture={},
        recipe={
            "lora": {
                "r_max": args.r_max,
                "alpha": args.alpha,
                "targets": ["query", "value"],
                "model": args.model,
                **lora,
            },
            "max_steps": args.steps,
            "eval_every": args.steps,
            "batch_size": args.batch,
            "max_seq_length": args.seq,
            "learning_rate": args.lr,
            "weight_decay": 0.1,
            "warmup_ratio": 0.06,
            "seed": seed,
            "measure_latency": False,
            "progress": False,
        },
        data={"task": task, "train_subset": args.train_subset, "eval_subset": args.eval_subset},
    )
    start = time.perf_counter()
    result = trainer.train(candidate, TrainContext(device=args.device))
    return result.metrics, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sst2,mrpc")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--train-subset", type=int, default=20000)
    parser.add_argument("--eval-subset", type=int, default=0)
    parser.add_argument("--r-max", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--model", default=None, help="base model (default: all-MiniLM-L6-v2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    ranks = list(range(1, args.r_max + 1))
    trainer = create_trainer("lora", {})

    lines = [
        f"DyLoRA vs LoRA per rank: base {args.model or 'all-MiniLM-L6-v2'}, r_max {args.r_max}, "
        f"α {args.alpha:g}, {args.steps} steps of {args.batch} x {args.seq}, lr {args.lr:g}, "
        f"seeds {seeds}, train subset {args.train_subset}, device {args.device}",
        "",
    ]
    for task in tasks:
        metric = get_task(task).primary_metric
        dylora: dict[int, list[float]] = {b: [] for b in ranks}
        lora: dict[int, list[float]] = {b: [] for b in ranks}
        truncated: dict[int, list[float]] = {b: [] for b in ranks}
        dylora_seconds = lora_seconds = 0.0
        # the trainer's own train_seconds (the optimiser steps alone, without loading and
        # scoring): how much of the wall time evaluation takes at this setting
        dylora_train = lora_train = 0.0
        for seed in seeds:
            # the truncated baseline: plain LoRA at r_max scored at every rank; not timed (it is
            # no way of getting the ranks), and first, so the timed runs find the data tokenised
            metrics, _ = run(trainer, args, task, seed, {"mode": "lora", "eval_ranks": ranks})
            for b in ranks:
                truncated[b].append(metrics[f"{metric}@r{b}"])
            metrics, seconds = run(trainer, args, task, seed, {"mode": "dylora"})
            dylora_seconds += seconds
            dylora_train += metrics["train_seconds"]
            for b in ranks:
                dylora[b].append(metrics[f"{metric}@r{b}"])
            for r in ranks:
                metrics, seconds = run(trainer, args, task, seed, {"mode": "lora", "r_max": r})
                lora_seconds += seconds
                lora_train += metrics["train_seconds"]
                lora[r].append(metrics[f"{metric}@r{r}"])
            print(f"{task} seed {seed} done", file=sys.stderr, flush=True)

        def cell(values: list[float]) -> str:
            mean, half = interval(values)
            return f"{100 * mean:.1f} ± {100 * half:.1f}"

        lines += [
            f"### {task} ({metric}, x100, mean ± 95% interval over {len(seeds)} seeds)",
            "",
            f"| rank | DyLoRA (one run) | LoRA trained at the rank | LoRA-{args.r_max} truncated "
            "| DyLoRA - LoRA |",
            "|---:|---:|---:|---:|---:|",
        ]
        for b in ranks:
            gap = 100 * (statistics.fmean(dylora[b]) - statistics.fmean(lora[b]))
            lines.append(
                f"| {b} | {cell(dylora[b])} | {cell(lora[b])} | {cell(truncated[b])} | {gap:+.1f} |"
            )
        ratio = lora_seconds / dylora_seconds if dylora_seconds else float("nan")
        lines += [
            "",
            f"Wall time for every rank: DyLoRA {dylora_seconds:.0f} s, {args.r_max} LoRA runs "
            f"{lora_seconds:.0f} s: **{ratio:.1f}x** less through DyLoRA (goal >= 7x). "
            f"Training alone (the trainer's train_seconds): DyLoRA {dylora_train:.0f} s, "
            f"{args.r_max} LoRA runs {lora_train:.0f} s ({lora_train / dylora_train:.1f}x).",
            "",
        ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        append_section("dylora_ranks: DyLoRA once vs LoRA at every rank", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
