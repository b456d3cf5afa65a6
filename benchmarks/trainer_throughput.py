"""Trainer throughput: training samples/s of ``BertTrainer``'s loop vs a bare PyTorch loop.

Measures, in one run on this machine, how much the trainer's loop costs over the plainest loop
that does the same work. For each model size, both systems train the same model (same
initial weights), on the same batches (same examples in the same order, padded to the same
shapes), with the same optimiser (AdamW with BERT's weight-decay groups, linear warmup and
decay, gradient clipping at 1.0), the same number of steps and the same torch thread count:

* ``ours``: ``BertTrainer.train`` on a candidate whose only evaluation is after the last step;
  throughput = samples / the result's ``train_seconds`` (optimisation time, evaluation
  excluded). Everything the trainer does per step counts: stop checks, batch collation from
  the tokenised split, the divergence check, the progress bar (hidden when stderr is not a
  terminal), the peak-memory sampler thread.
* ``bare``: a hand-written loop over batches collated *before* the clock starts:
  ``loss = model(**batch).loss; loss.backward(); clip; step; schedule; zero_grad``.

Systems alternate within each repeat (and which goes first alternates between repeats) so that
load changes on the machine hit both alike; the table gives each system's median, the ratio
of medians, and the median of the per-repeat ratios (less sensitive to load drifting during the
run); the goal, on the ratio of medians, is >= 0.95.

On a GPU (``--device cuda``) both systems run there in the same precision (``--precision``,
default bf16 where the GPU has it): ours with the trainer's autocast (batches collated on the
CPU and copied per step, as in a trial), bare under ``torch.autocast`` over batches already on
the GPU; each bare run ends with a ``torch.cuda.synchronize`` before the clock stops (the
trainer's ``train_seconds`` does the same).

Usage::

    python benchmarks/trainer_throughput.py                    # full run
    python benchmarks/trainer_throughput.py --device cuda --models tiny,small,medium --steps 100
    python benchmarks/trainer_throughput.py --quick            # smoke run, not recorded
    python benchmarks/trainer_throughput.py --models tiny --steps 40 --repeats 7

The table is printed and appended to ``benchmarks/RESULTS.md`` (``--no-record`` to skip).
Exit status: 0 when every ratio meets the goal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from archsearch.spaces import Candidate, get_task
from archsearch.worker import TrainContext
from archsearch.worker._batches import EncodedSplit, epoch_batches
from archsearch.worker._bert_trainer import BertTrainer
from archsearch.worker._optim import adamw, seed_everything
from archsearch.worker._provenance import code_version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _argtypes import glue_task, no_train_split, parser_for, seq_length, torch_device, whole
from _results import append_section

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
GOAL = 0.95
MODELS: dict[str, dict[str, int]] = {
    # The unit tests' student: steps take milliseconds, so per-step overhead shows most.
    "micro": {
        "num_hidden_layers": 1,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "tiny": {
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 2,
        "intermediate_size": 512,
    },
    "small": {
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
    },
    # MiniLM-sized (the teacher's shape): for GPUs, where the smaller ones are launch-bound.
    "medium": {
        "num_hidden_layers": 6,
        "hidden_size": 384,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
}
LEARNING_RATE, WEIGHT_DECAY, WARMUP_RATIO, SEED = 5e-4, 0.01, 0.1, 0
QUICK = "    python benchmarks/trainer_throughput.py --quick   # about 10 s; not recorded"


@dataclass
class Cell:
    model: str
    ours: list[float] = field(default_factory=list)  # samples/s per repeat
    bare: list[float] = field(default_factory=list)
    seq_len: float = 0.0  # mean padded batch width

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.bare)

    @property
    def paired_ratio(self) -> float:
        """Median over repeats of ours/bare within the repeat: cancels slow load drifts."""
        return statistics.median(o / b for o, b in zip(self.ours, self.bare, strict=True))


def candidate(arch: dict[str, int], args: argparse.Namespace) -> Candidate:
    return Candidate(
        space="bert",
        architecture=arch,
        recipe={
            "max_steps": args.steps,
            "batch_size": args.batch_size,
            "max_seq_length": args.seq_len,
            "learning_rate": LEARNING_RATE,
            "weight_decay": WEIGHT_DECAY,
            "warmup_ratio": WARMUP_RATIO,
            "eval_every": args.steps,
            "seed": SEED,
            "measure_latency": False,
            "precision": args.precision,
        },
        data={"task": args.task, "train_subset": 0, "eval_subset": args.batch_size},
    )


def run_ours(trainer: BertTrainer, arch: dict[str, int], args: argparse.Namespace) -> float:
    result = trainer.train(candidate(arch, args), TrainContext(device=args.device))
    return args.steps * args.batch_size / result.metrics["train_seconds"]


def collate_all(
    train: EncodedSplit, args: argparse.Namespace, pad_id: int
) -> list[dict[str, torch.Tensor]]:
    """The trainer's batches (same seeded order, each padded to its longest example)."""
    order = epoch_batches(len(train), args.batch_size, SEED)
    batches = []
    for _ in range(args.steps):
        indices = next(order)
        rows = [
            (train.input_ids[a:b], train.token_type_ids[a:b])
            for a, b in zip(train.offsets[indices], train.offsets[indices + 1], strict=True)
        ]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for r, (row_ids, row_types) in enumerate(rows):
            ids[r, : len(row_ids)] = torch.from_numpy(row_ids.astype(np.int64))
            types[r, : len(row_types)] = torch.from_numpy(row_types.astype(np.int64))
            mask[r, : len(row_ids)] = 1
        labels = torch.from_numpy(train.labels[indices])
        batches.append(
            {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}
        )
    return batches


def run_bare(
    trainer: BertTrainer,
    arch: dict[str, int],
    batches: list[dict[str, torch.Tensor]],
    args: argparse.Namespace,
) -> float:
    seed_everything(SEED)
    device = torch.device(args.device)
    model = trainer.build_model(arch, get_task(args.task)).to(device)
    optimizer = adamw(model, LEARNING_RATE, WEIGHT_DECAY)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(WARMUP_RATIO * args.steps), args.steps
    )
    dtype = {"bf16": torch.bfloat16, "fp32": None}[args.precision]
    model.train()
    _synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return args.steps * args.batch_size / seconds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, trainer: BertTrainer, args: argparse.Namespace) -> Cell:
    arch = MODELS[name]
    train = trainer.encode(args.task, "train", 0, {"max_seq_length": args.seq_len, "seed": SEED})
    batches = [
        {k: v.to(args.device) for k, v in b.items()}
        for b in collate_all(train, args, trainer.tokenizer.pad_token_id)
    ]
    cell = Cell(name, seq_len=statistics.mean(b["input_ids"].shape[1] for b in batches))
    # Warm-up: first calls load kernels and fill caches for both.
    run_ours(trainer, arch, args)
    run_bare(trainer, arch, batches, args)
    for repeat in range(args.repeats):
        order = ("ours", "bare") if repeat % 2 == 0 else ("bare", "ours")
        for system in order:
            if system == "ours":
                cell.ours.append(run_ours(trainer, arch, args))
            else:
                cell.bare.append(run_bare(trainer, arch, batches, args))
        print(
            f"  {name} repeat {repeat + 1}/{args.repeats}: ours {cell.ours[-1]:7.1f}/s  "
            f"bare {cell.bare[-1]:7.1f}/s  (load {_load()})",
            flush=True,
        )
    return cell


def render(cells: list[Cell], args: argparse.Namespace) -> tuple[str, bool]:
    lines = [
        "| model | layers × hidden / ffn | mean padded length | ours samples/s (median, "
        "min–max) | bare samples/s (median, min–max) | ratio of medians | median paired "
        "ratio | goal ≥ 0.95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ok = True
    for c in cells:
        a = MODELS[c.model]
        passed = c.ratio >= GOAL
        ok &= passed
        lines.append(
            f"| {c.model} | {a['num_hidden_layers']} × {a['hidden_size']} / "
            f"{a['intermediate_size']} | {c.seq_len:.0f} | {statistics.median(c.ours):.1f} "
            f"({min(c.ours):.1f}–{max(c.ours):.1f}) | {statistics.median(c.bare):.1f} "
            f"({min(c.bare):.1f}–{max(c.bare):.1f}) | {c.ratio:.3f} | {c.paired_ratio:.3f} | "
            f"{'pass' if passed else 'FAIL'} |"
        )
    return "\n".join(lines), ok


def record(table: str, args: argparse.Namespace, started: str, loads: list[str], ok: bool) -> None:
    append_section(
        "trainer_throughput",
        f"- started {started}; torch {torch.__version__} with {args.threads} thread(s) on "
        f"{_device_name(args.device)}, precision {args.precision}; code {code_version()}\n"
        f"- load average (1/5/15 min) before / after: {loads[0]} / {loads[-1]} (other jobs on "
        "the machine add noise to both columns; systems alternate to share it)\n"
        f"- task {args.task}, batch {args.batch_size}, max_seq_length {args.seq_len} (dynamic "
        f"padding, same batches for both), {args.steps} optimiser steps per run, "
        f"{args.repeats} alternating repeats after one warm-up run each\n"
        "- ours = `BertTrainer.train` (samples / `train_seconds`); bare = hand-written loop "
        "over pre-collated batches\n\n"
        f"{table}\n",
        summary=(
            f"ours/bare samples/s >= {GOAL} for every model ({args.device} {args.precision}, "
            f"batch {args.batch_size}); ratios in the section",
            "pass" if ok else "FAIL",
        ),
    )


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser_for(__doc__, QUICK)
    p.add_argument(
        "--models", default="micro,tiny,small", help=f"comma-separated: {', '.join(MODELS)}"
    )
    p.add_argument(
        "--task", default="rte", type=glue_task, help="GLUE task (rte: pairs, most near 128 tokens)"
    )
    p.add_argument("--steps", type=whole(), help="optimiser steps per run (default 20)")
    p.add_argument("--repeats", type=whole(), help="alternating repeats (default 7)")
    p.add_argument("--batch-size", type=whole(), default=32)
    p.add_argument("--seq-len", type=seq_length, default=128)
    p.add_argument("--threads", type=whole(), default=torch.get_num_threads())
    p.add_argument(
        "--device",
        default="cpu",
        type=torch_device,
        help="cpu, or cuda[:N] (both systems run there)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="both systems' precision; auto: bf16 on a GPU that has it, else fp32",
    )
    p.add_argument("--quick", action="store_true", help="tiny model, few steps, not recorded")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.models = "tiny" if args.models == "micro,tiny,small" else args.models
    args.steps = args.steps or (5 if args.quick else 20)
    args.repeats = args.repeats or (2 if args.quick else 7)
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.model_list if m not in MODELS]
    if unknown or not args.model_list:
        p.error(
            f"argument --models: {args.models!r}: expected comma-separated models out of "
            + ", ".join(MODELS)
        )
    if error := no_train_split([args.task]):
        p.error(f"argument --task: {error}")
    cuda = args.device.startswith("cuda")
    if args.precision == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
        args.precision = "bf16" if bf16 else "fp32"
    if args.precision == "bf16" and not cuda:
        p.error("--precision bf16 is for GPUs (the trainer runs fp32 on the CPU)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    loads = [_load()]
    print(
        f"trainer_throughput: models {','.join(args.model_list)}, {args.task}, batch "
        f"{args.batch_size}, seq {args.seq_len}, {args.steps} steps x {args.repeats} repeats, "
        f"{args.threads} thread(s), {_device_name(args.device)} {args.precision}, "
        f"load average {loads[0]}",
        flush=True,
    )
    trainer = BertTrainer()
    t0 = time.monotonic()
    cells = [measure(name, trainer, args) for name in args.model_list]
    loads.append(_load())
    table, ok = render(cells, args)
    print()
    print(table)
    print(f"\n(total {time.monotonic() - t0:.0f}s, load average {loads[-1]})")
    if not (args.quick or args.no_record):
        record(table, args, started, loads, ok)
        print(f"appended to {RESULTS_MD.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
