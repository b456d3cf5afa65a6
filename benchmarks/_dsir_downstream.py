"""The downstream half of ``benchmarks/dsir_select.py``: a tiny FlexiBERT student masked-LM
pre-trained on DSIR-selected vs randomly selected text, then fine-tuned (see that script).

Every run is one candidate through the ``bert`` trainer (the worker's code path): the pool is
written once as a JSONL file and named by ``data.pretrain_selection.pool``; DSIR's target is
the task's own training text (``target: "train"``, the default), so DSIR picks a different
corpus for each task while the random corpus depends on the seed only (its pre-trained
encoder is cached and reused by the three tasks, as the trainer would for a study).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _stats import t_interval

from archsearch.spaces import Candidate, get_task
from archsearch.worker import TrainContext
from archsearch.worker._bert_trainer import BertTrainer
from archsearch.worker._glue_dir import resolve_glue_dir

#: A 2-layer BERT-like FlexiBERT student (self-attention, hidden 128, 2 heads, FFN 512).
STUDENT = {
    "l": 2,
    "o": ["sa", "sa"],
    "p": ["sdp", "sdp"],
    "h": [128, 128],
    "n": [2, 2],
    "f": [[512], [512]],
}
METHODS = ("dsir", "random")


def _run(
    trainer: BertTrainer,
    args: argparse.Namespace,
    pool_file: Path,
    task: str,
    method: str,
    seed: int,
) -> dict[str, Any]:
    candidate = Candidate.from_dict(
        {
            "space": "flexibert",
            "architecture": STUDENT,
            "recipe": {
                "max_steps": args.steps,
                "eval_every": args.steps,
                "batch_size": args.batch,
                "max_seq_length": args.seq,
                "learning_rate": args.lr,
                "seed": seed,
                "measure_latency": False,
                "progress": False,
                "pretrain_steps": args.pretrain_steps,
            },
            "data": {
                "task": task,
                "pretrain_selection": {
                    "method": method,
                    "pool": f"file:{pool_file}",
                    "k": args.k,
                    "min_length": 1,
                },
            },
        }
    )
    start = time.perf_counter()
    result = trainer.train(candidate, TrainContext())
    seconds = time.perf_counter() - start
    metric = get_task(task).primary_metric
    return {
        "score": float(result.metrics[metric]),
        "metric": metric,
        "pretrain_loss": float(result.metrics.get("pretrain_loss", float("nan"))),
        "pretrain_cached": bool(result.metrics.get("pretrain_cached", 0.0)),
        "kl_reduction": float(result.info.get("pretrain_selection_kl_reduction", "nan")),
        "seconds": seconds,
    }


def _runs(
    args: argparse.Namespace,
    build_pool: Callable[[int, Path | None, tuple[str, ...]], tuple[list[str], list[str]]],
    exclude: tuple[str, ...],
    glue_dir: Path | None,
    work: Path,
    tasks: list[str],
    seeds: list[int],
) -> tuple[int, dict[tuple[str, str, int], dict[str, Any]]]:
    """Every (seed, task, method) run, its files (pool, caches) in ``work``; the pool's size
    and each run's outcome."""
    # cold caches: each corpus is selected and pre-trained once in this run
    os.environ["ARCHSEARCH_PRETRAIN_DIR"] = str(work / "pretrained")
    os.environ["ARCHSEARCH_DSIR_DIR"] = str(work / "dsir")
    pool, _ = build_pool(args.pool, glue_dir, exclude)  # no text of the downstream tasks
    pool_file = work / "pool.jsonl"
    with pool_file.open("w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in pool)
    trainer = BertTrainer(glue_dir=str(glue_dir) if glue_dir else None)
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    for seed in seeds:
        for task in tasks:
            for method in METHODS:
                out = _run(trainer, args, pool_file, task, method, seed)
                runs[task, method, seed] = out
                print(
                    f"seed {seed} {task} {method}: {out['metric']} {out['score']:.4f}, "
                    f"pre-training loss {out['pretrain_loss']:.3f}, KL reduction "
                    f"{out['kl_reduction']:.3f} ({out['seconds']:.0f} s"
                    f"{', encoder cached' if out['pretrain_cached'] else ''})",
                    flush=True,
                )
    return len(pool), runs


def downstream_report(
    args: argparse.Namespace,
    build_pool: Callable[[int, Path | None, tuple[str, ...]], tuple[list[str], list[str]]],
    exclude: tuple[str, ...],
) -> tuple[str, str]:
    """Runs every (seed, task, method) and returns the report and ``"figure|verdict"``."""
    glue_dir = resolve_glue_dir(args.glue_dir)[0]
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="dsir-downstream-") as tmp:  # removed at the end
        pool_size, runs = _runs(args, build_pool, exclude, glue_dir, Path(tmp), tasks, seeds)
    lines = [
        f"Student: FlexiBERT 2 x 128 self-attention (2 heads, FFN 512). Masked-LM pre-training "
        f"{args.pretrain_steps} steps of {args.batch} (seq {args.seq}) on k = {args.k} texts "
        f"of a {pool_size}-text pool (the GLUE text on disk of tasks other than these, and "
        f"gensim's Wikipedia shard), "
        f"chosen by DSIR towards the task's training text or at random (the same seed); then "
        f"{args.steps} fine-tuning steps, lr {args.lr}; dev score by the task's primary "
        f"metric; seeds {seeds}.",
        "",
        "| task | metric | DSIR (95% CI) | random (95% CI) | paired DSIR - random | "
        "DSIR better in | DSIR KL reduction | pre-training loss DSIR / random |",
        "|---|---|---|---|---|---|---:|---|",
    ]
    diffs_all: list[float] = []
    for task in tasks:
        d = [runs[task, "dsir", s]["score"] for s in seeds]
        r = [runs[task, "random", s]["score"] for s in seeds]
        diff = [a - b for a, b in zip(d, r, strict=True)]
        diffs_all += diff
        dm, dh = t_interval(d)
        rm, rh = t_interval(r)
        fm, fh = t_interval(diff)
        kl = statistics.fmean(runs[task, "dsir", s]["kl_reduction"] for s in seeds)
        loss = (
            f"{statistics.fmean(runs[task, 'dsir', s]['pretrain_loss'] for s in seeds):.3f} / "
            f"{statistics.fmean(runs[task, 'random', s]['pretrain_loss'] for s in seeds):.3f}"
        )
        wins = sum(x > 0 for x in diff)
        lines.append(
            f"| {task} | {runs[task, 'dsir', seeds[0]]['metric']} | {dm:.4f} ± {dh:.4f} | "
            f"{rm:.4f} ± {rh:.4f} | {100 * fm:+.2f} ± {100 * fh:.2f} points | {wins} of "
            f"{len(seeds)} seeds | {kl:.3f} | {loss} |"
        )
    mean, half = t_interval(diffs_all)
    total = sum(r["seconds"] for r in runs.values())
    lines += [
        "",
        f"Over the {len(tasks)} tasks: DSIR - random {100 * mean:+.2f} ± {100 * half:.2f} points "
        f"(95% t-interval over the {len(diffs_all)} task x seed pairs). Total wall time "
        f"{total / 60:.0f} min (1 thread).",
        "The paper reports +2 GLUE points at BERT-base scale (a 2.5x larger pool, 50k steps).",
    ]
    figure = (
        f"tiny FlexiBERT, {args.pretrain_steps} MLM steps on {args.k} texts, {len(seeds)} seeds: "
        f"DSIR - random {100 * mean:+.2f} ± {100 * half:.2f} points over {', '.join(tasks)} "
        "(paper: +2 at BERT-base scale)"
    )
    return "\n".join(lines), f"{figure}|no goal"
