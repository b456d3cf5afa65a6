"""DyLoRA once vs LoRA at every rank vs LoRA-r_max truncated (not a test: a benchmark).

For each task and seed, through the ``lora`` trainer (same code path, same steps, same data for
every run): one DyLoRA fine-tuning per mode (``--dylora frozen,unfrozen,strict``; strict is frozen
training that puts back what AdamW moved without a gradient) scored at ranks
1..r_max; plain LoRA trained at each rank r = 1..r_max and scored at r; plain LoRA trained at
r_max and scored at every rank (the truncated baseline; not timed). Prints each rank's dev score
(mean and 95% t-interval over seeds) and the total wall time (loading, training, evaluating) of
the two ways to get every rank, with their ratio.

Defaults follow the issue: the frozen all-MiniLM-L6-v2 teacher as base, LoRA on query and value,
r_max 8, α 16, frozen DyLoRA, SST-2 subset and MRPC, 3 seeds. Goals (issue 13): the r_max ranks
cost at least 7x less wall time through DyLoRA than through r_max LoRA runs; every rank within
1 point of LoRA trained at that rank; clearly above truncated LoRA at ranks 1-4 (read here as
at least 1 point above on the mean).

    python benchmarks/dylora_ranks.py [--tasks sst2,mrpc] [--seeds 0,1,2] [--steps 300]
        [--dylora frozen[,unfrozen,strict]] [--train-subset 20000] [--eval-subset 872] [--r-max 8]
        [--alpha 16] [--lr 5e-4] [--batch 32] [--seq 64] [--model PATH] [--device cpu]
        [--precision auto|fp32|bf16|fp16]
        [--kinds KIND,...] [--runs RUNS.json] [--record]
    python benchmarks/dylora_ranks.py --report RUNS.json[,RUNS2.json] [--timing-seeds 1,2]
        [--record]

``--timing-seeds`` takes seeds for every task (``1,2``) or for one (``sst2:1,sst2:2,mrpc:0``).

``--runs`` keeps every finished fine-tuning in a JSON file as it ends, so a cut run continues
where it stopped, and runs split over processes (one task, seed or ``--kinds`` share each, one
core each) are reported together with ``--report``. ``--record`` appends the table to
``benchmarks/RESULTS.md`` (only for a run worth keeping).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _argtypes import (
    base_model,
    glue_tasks,
    json_files,
    json_out,
    names,
    no_train_split,
    number,
    parser_for,
    seq_length,
    torch_device,
    whole,
    whole_list,
)
from _dylora_report import DEFAULT_MODE, report
from _results import append_section

from archsearch.spaces import Candidate, get_task
from archsearch.worker import TrainContext
from archsearch.worker._registry import create_trainer

SETTING_KEYS = (
    "steps",
    "train_subset",
    "eval_subset",
    "r_max",
    "alpha",
    "lr",
    "batch",
    "seq",
    "model",
    "device",
    "precision",
)
QUICK = """\
    python benchmarks/dylora_ranks.py --tasks mrpc --seeds 0 --steps 10 --r-max 2 \\
        --train-subset 200 --eval-subset 100   # about a minute on 2 CPU cores"""
#: What a setting key means when a runs file written before it existed lacks it.
SETTING_DEFAULTS = {"precision": "auto"}


def setting_of(content: dict[str, Any]) -> dict[str, Any]:
    """A runs file's setting, with keys added since it was written at their old meaning."""
    return {**SETTING_DEFAULTS, **content.get("setting", {})}


def fine_tune(
    trainer: Any, setting: dict[str, Any], task: str, seed: int, lora: dict[str, Any]
) -> dict[str, Any]:
    """One fine-tuning: its primary metric per rank scored, wall and training seconds."""
    candidate = Candidate(
        space="lora",
        architecture={},
        recipe={
            "lora": {
                "r_max": setting["r_max"],
                "alpha": setting["alpha"],
                "targets": ["query", "value"],
                "model": setting["model"],
                **lora,
            },
            "max_steps": setting["steps"],
            "eval_every": setting["steps"],
            "batch_size": setting["batch"],
            "max_seq_length": setting["seq"],
            "learning_rate": setting["lr"],
            "weight_decay": 0.1,
            "warmup_ratio": 0.06,
            "seed": seed,
            "measure_latency": False,
            "progress": False,
            "precision": setting["precision"],
        },
        data={
            "task": task,
            "train_subset": setting["train_subset"],
            "eval_subset": setting["eval_subset"],
            # one dev sample for every seed (runs before 2026-12-07 drew it with the seed)
            "eval_seed": 0,
        },
    )
    start = time.perf_counter()
    result = trainer.train(candidate, TrainContext(device=setting["device"]))
    seconds = time.perf_counter() - start
    metric = get_task(task).primary_metric
    scores = {k.split("@r")[1]: v for k, v in result.metrics.items() if k.startswith(f"{metric}@r")}
    return {
        "scores": scores,
        "seconds": seconds,
        "train_seconds": result.metrics["train_seconds"],
    }


# DyLoRA modes: ``strict`` is frozen training that also puts back, after each optimiser step,
# the components AdamW's momentum and weight decay moved without a gradient
MODES: dict[str, dict[str, Any]] = {
    "frozen": {"mode": "dylora", "frozen": True},
    "unfrozen": {"mode": "dylora", "frozen": False},
    "strict": {"mode": "dylora", "frozen": True, "strict": True},
}
#: The mode ``recipe.lora`` trains by default: its verdict decides the run's, with the first
#: mode given.


def jobs(r_max: int, modes: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every fine-tuning of one task and seed, the untimed truncated baseline first (so the
    timed runs find the data tokenised)."""
    ranks = list(range(1, r_max + 1))
    out: list[tuple[str, dict[str, Any]]] = [("truncated", {"mode": "lora", "eval_ranks": ranks})]
    out += [(f"dylora-{m}", MODES[m]) for m in modes]
    out += [(f"lora-r{r}", {"mode": "lora", "r_max": r}) for r in ranks]
    return out


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Runs (or finds in ``--runs``) every fine-tuning; the runs file's content."""
    setting = {k: getattr(args, k) for k in SETTING_KEYS}
    path = Path(args.runs) if args.runs else None
    saved: dict[str, Any] = (
        json.loads(path.read_text()) if path is not None and path.exists() else {}
    )
    if saved and setting_of(saved) != setting:
        raise SystemExit(f"{path} holds runs of another setting: {setting_of(saved)}")
    saved.update(setting=setting)
    runs = saved.setdefault("runs", {})
    trainer = create_trainer("lora", {})
    for task in args.tasks.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for kind, lora in jobs(args.r_max, args.dylora.split(",")):
                if args.kinds and kind not in args.kinds.split(","):
                    continue
                key = f"{task}|{seed}|{kind}"
                if key in runs:
                    continue
                runs[key] = fine_tune(trainer, setting, task, seed, lora)
                print(f"  {key}: {runs[key]['seconds']:.0f} s", file=sys.stderr, flush=True)
                if path is not None:
                    path.write_text(json.dumps(saved, indent=1))
    return saved


def merge(paths: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for p in paths:
        content = json.loads(Path(p).read_text())
        if merged and setting_of(content) != merged["setting"]:
            raise SystemExit(f"{p} holds runs of another setting than {paths[0]}")
        merged.setdefault("setting", setting_of(content))
        merged.setdefault("runs", {}).update(content["runs"])
    return merged


def parse_timing_seeds(text: str | None) -> dict[str, set[int]] | None:
    """``1,2`` (every task, key ``""``) or ``sst2:1,mrpc:0`` (per task) -> task -> seeds."""
    if not text:
        return None
    out: dict[str, set[int]] = {}
    for item in text.split(","):
        task, _, seed = item.rpartition(":")
        out.setdefault(task, set()).add(int(seed))
    return out


def timing_seeds(text: str) -> str:
    """``--timing-seeds`` as :func:`parse_timing_seeds` reads it; returned as given."""
    try:
        parse_timing_seeds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected seeds (1,2) or task:seed items (sst2:1,mrpc:0)"
        ) from None
    return text


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__, QUICK)
    parser.add_argument("--tasks", default="sst2,mrpc", type=glue_tasks)
    parser.add_argument("--seeds", default="0,1,2", type=whole_list())
    parser.add_argument(
        "--dylora",
        default=DEFAULT_MODE,
        type=names(MODES, "DyLoRA modes"),
        help="DyLoRA modes: frozen, unfrozen (recipe.lora's default), strict (comma-separated)",
    )
    parser.add_argument("--steps", type=whole(), default=300)
    parser.add_argument("--train-subset", type=whole(0), default=20000)
    parser.add_argument("--eval-subset", type=whole(0), default=0)
    parser.add_argument("--r-max", type=whole(), default=8)
    parser.add_argument("--alpha", type=number(), default=16.0)
    parser.add_argument("--lr", type=number(), default=5e-4)
    parser.add_argument("--batch", type=whole(), default=32)
    parser.add_argument("--seq", type=seq_length, default=64)
    parser.add_argument(
        "--model", default=None, type=base_model, help="base model (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument("--device", default="cpu", type=torch_device)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="recipe.precision (auto: bf16 autocast on a GPU that has it, fp32 on the CPU)",
    )
    parser.add_argument(
        "--kinds", help="run only these fine-tunings (truncated, dylora-frozen, lora-r3, ...)"
    )
    parser.add_argument(
        "--runs", type=json_out, help="JSON file of finished fine-tunings (resumable)"
    )
    parser.add_argument(
        "--report", type=json_files, help="report these runs files (comma-separated) only"
    )
    parser.add_argument(
        "--timing-seeds",
        type=timing_seeds,
        help="sum wall times over these seeds only (default: every seed)",
    )
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    parser.add_argument(
        "--label",
        default="",
        help="record under dylora_ranks/LABEL (its own summary row: another setting, a GPU)",
    )
    args = parser.parse_args(argv)
    if args.label and not re.fullmatch(r"[A-Za-z0-9_-]+", args.label):
        parser.error(f"--label {args.label!r}: letters, digits, _ and - only")
    if args.kinds:
        kinds = [kind for kind, _ in jobs(args.r_max, args.dylora.split(","))]
        try:
            names(kinds, f"kinds of --r-max {args.r_max} and --dylora {args.dylora}")(args.kinds)
        except argparse.ArgumentTypeError as e:
            parser.error(f"argument --kinds: {e}")
    if not args.report and (error := no_train_split(args.tasks.split(","))):
        parser.error(f"argument --tasks: {error}")
    for path in args.report.split(",") if args.report else []:
        content = json.loads(Path(path).read_text())
        if not isinstance(content, dict) or not {"setting", "runs"} <= set(content):
            parser.error(f"argument --report: {path} is not a runs file (no setting and runs)")
    timing = parse_timing_seeds(args.timing_seeds)
    saved = merge(args.report.split(",")) if args.report else collect(args)
    text, summary, ok = report(saved, timing)
    print(text)
    if args.record:
        name = f"dylora_ranks/{args.label}" if args.label else "dylora_ranks"
        append_section(
            f"{name}: DyLoRA once vs LoRA at every rank",
            text,
            summary=(summary, "pass" if ok else "FAIL"),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
