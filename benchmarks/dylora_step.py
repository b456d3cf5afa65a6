"""DyLoRA's cost per training step against plain LoRA (not a test: a benchmark).

The rank truncation, frozen mode's detaching and strict mode's putting-back run at every
optimiser step. On a CPU the model's arithmetic hides them; on a GPU a MiniLM-sized step is
bound by kernel launches, so each extra small kernel shows. This times optimiser steps (forward,
loss, backward, AdamW, and the trainer's own DyLoRA hooks from ``lora_hooks``) of plain LoRA at
r_max and of each DyLoRA mode on the same model and batches, modes interleaved over repeats,
and prints ms per step with the ratio to plain LoRA measured in the same run.

The figure that matters for rank search: eight LoRA trainings against one DyLoRA training cost
about ``8 x LoRA / DyLoRA`` in training time (``benchmarks/dylora_ranks.py`` measures the whole
fine-tunings, loading and evaluation included).

    python benchmarks/dylora_step.py [--device cpu|cuda] [--model PATH] [--steps 100]
        [--warmup 10] [--repeats 3] [--batch 16] [--seq 64] [--r-max 8] [--threads 1]
        [--precision fp32|bf16] [--record] [--label TEXT]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _argtypes import base_model, parser_for, seq_length, torch_device, whole
from _results import append_section

from archsearch.spaces import get_task
from archsearch.worker._dylora import attach_dylora
from archsearch.worker._lora_model import load_base_classifier, lora_hooks
from archsearch.worker._lora_spec import parse_lora_spec
from archsearch.worker._provenance import code_version, device_name

QUICK = (
    "    python benchmarks/dylora_step.py --steps 5 --warmup 1 --repeats 1 --batch 4 --seq 16"
    "   # about 10 s"
)
MODES: dict[str, dict[str, Any]] = {
    "LoRA": {"mode": "lora"},
    "DyLoRA unfrozen": {"mode": "dylora", "frozen": False},
    "DyLoRA frozen": {"mode": "dylora", "frozen": True},
    "DyLoRA strict": {"mode": "dylora", "frozen": True, "strict": True},
}


class Stepper:
    """One mode's model, optimiser and hooks, stepping on fixed random batches."""

    def __init__(self, args: argparse.Namespace, lora: dict[str, Any], device: torch.device):
        task = get_task("sst2")
        spec = parse_lora_spec({"r_max": args.r_max, "alpha": 16.0, **lora})
        torch.manual_seed(0)
        self.model = attach_dylora(load_base_classifier(args.model, task), spec).to(device)
        self.model.train()
        self.hooks = lora_hooks(spec, seed=0, seq_len=args.seq)
        if self.hooks.init_fn is not None:
            self.hooks.init_fn(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)
        generator = torch.Generator().manual_seed(1)
        shape = (args.batch, args.seq)
        self.batches = [
            {
                "input_ids": torch.randint(1000, 20000, shape, generator=generator).to(device),
                "attention_mask": torch.ones(shape, dtype=torch.long, device=device),
                "labels": torch.randint(0, 2, (args.batch,), generator=generator).to(device),
            }
            for _ in range(4)
        ]
        self.device = device
        self.autocast = args.precision == "bf16"
        self.step_index = 0

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` optimiser steps (the device synchronised at both ends)."""
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            batch = self.batches[self.step_index % len(self.batches)]
            if self.hooks.before_step is not None:
                self.hooks.before_step(self.step_index)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
                loss = self.model(**batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.hooks.after_step is not None:
                self.hooks.after_step(self.step_index)
            self.step_index += 1
        _sync(self.device)
        return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    """ms per step of each mode, one value per repeat (modes interleaved)."""
    device = torch.device(args.device)
    steppers = {name: Stepper(args, lora, device) for name, lora in MODES.items()}
    for stepper in steppers.values():
        stepper.run(args.warmup)
    times: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(args.repeats):
        for name, stepper in steppers.items():
            times[name].append(1000 * stepper.run(args.steps) / args.steps)
    return times


def report(args: argparse.Namespace, times: dict[str, list[float]]) -> tuple[str, str]:
    lora = statistics.median(times["LoRA"])
    lines = [
        f"- torch {torch.__version__}, {args.threads} thread(s), {args.device} "
        f"({device_name(args.device)}), {args.precision}; "
        f"base {args.model or 'all-MiniLM-L6-v2'}, LoRA on query and value, r_max {args.r_max}, "
        f"batch {args.batch} x {args.seq}; {args.steps} steps x {args.repeats} repeats after "
        f"{args.warmup} warm-up steps; code {code_version()}",
        "",
        "| mode | ms per step (median) | repeats | / LoRA | 8 LoRA trainings / this one |",
        "|---|---:|---|---:|---:|",
    ]
    figures = []
    for name, values in times.items():
        median = statistics.median(values)
        ratio = median / lora
        spread = ", ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {name} | {median:.2f} | {spread} | {ratio:.2f} | {8 / ratio:.1f}x |")
        if name != "LoRA":
            figures.append(f"{name.split()[1]} {ratio:.2f}")
    summary = f"{args.device} step time / LoRA's: " + ", ".join(figures)
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(
        __doc__, QUICK, 'Goal: none (recorded with the verdict "no goal"); compare the ratios.'
    )
    parser.add_argument("--device", default="cpu", type=torch_device)
    parser.add_argument(
        "--model", default=None, type=base_model, help="base model (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument("--steps", type=whole(), default=100)
    parser.add_argument("--warmup", type=whole(0), default=10)
    parser.add_argument("--repeats", type=whole(), default=3)
    parser.add_argument("--batch", type=whole(), default=16)
    parser.add_argument("--seq", type=seq_length, default=64)
    parser.add_argument("--r-max", type=whole(), default=8)
    parser.add_argument("--threads", type=whole(), default=1)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    parser.add_argument("--label", default="", help="added to the RESULTS.md section title")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    text, summary = report(args, measure(args))
    print(text)
    print(summary)
    if args.record:
        title = f"dylora_step {args.label}".strip()
        append_section(title, text, summary=(summary, "no goal"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
