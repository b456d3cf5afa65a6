"""FlexiBERT operations: training samples/s of each token mixer on one device.

For each operation (``sa``/sdp, ``sa``/wma, ``l``/dft, ``l``/dct, ``c``/5, ``c``/9) a FlexiBERT
classifier whose layers all use it (``--layers`` x ``--hidden``, ``--heads`` heads, one
feed-forward layer of 4 x hidden) trains for ``--steps`` AdamW steps on random token batches whose
lengths vary inside each batch as real padded batches do (uniform between a quarter of and the
full ``--seq-len``), after ``--warmup`` steps. Time per step is wall time with a device
synchronisation at both ends; the table gives the median of ``--repeats`` runs per operation
(after one untimed run; the repeats go round every operation in turn), and each operation's
ratio to ``sa``/sdp in the same run. No goal: it compares the mixers' cost.
Compare operations within one run (same device, same batches); the figures are not BertTrainer
trials (no data loading, evaluation or checks), they isolate the model's own cost.

    python benchmarks/flexibert_ops.py [--device cuda] [--precision bf16|fp32]
        [--layers 4] [--hidden 256] [--batch-size 32] [--seq-len 128] [--steps 50]

Small, in seconds: ``--layers 1 --hidden 32 --heads 2 --batch-size 4 --seq-len 16 --steps 3
--repeats 2``. Prints the table; ``--record`` appends it to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from archsearch.worker._flexibert_config import FlexiBertConfig
from archsearch.worker._flexibert_model import FlexiBertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_section

OPERATIONS = [("sa", "sdp"), ("sa", "wma"), ("l", "dft"), ("l", "dct"), ("c", "5"), ("c", "9")]
VOCAB = 30522


def architecture(op: str, param: str, args: argparse.Namespace) -> dict[str, object]:
    n = args.layers
    return {
        "l": n,
        "o": [op] * n,
        "p": [param] * n,
        "h": [args.hidden] * n,
        "n": [args.heads] * n,
        "f": [[4 * args.hidden]] * n,
    }


def batches(args: argparse.Namespace, device: torch.device) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(args.steps + args.warmup):
        lengths = torch.randint(
            args.seq_len // 4, args.seq_len + 1, (args.batch_size,), generator=generator
        )
        width = int(lengths.max())
        ids = torch.randint(1, VOCAB, (args.batch_size, width), generator=generator)
        mask = torch.arange(width)[None, :] < lengths[:, None]
        out.append(
            {
                "input_ids": ids.masked_fill(~mask, 0).to(device),
                "attention_mask": mask.long().to(device),
                "labels": torch.randint(0, 2, (args.batch_size,), generator=generator).to(device),
            }
        )
    return out


def samples_per_second(
    op: str, param: str, data: list[dict[str, torch.Tensor]], args: argparse.Namespace
) -> float:
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = FlexiBertConfig(
        architecture(op, param, args), vocab_size=VOCAB, max_positions=512, num_labels=2
    )
    model = FlexiBertForSequenceClassification(config).to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    start = 0.0
    for step, batch in enumerate(data):
        if step == args.warmup:
            _synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    _synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--label", default="", help="a note for the table's heading")
    p.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch sees no CUDA device here; use --device cpu")
    if args.precision == "bf16" and not args.device.startswith("cuda"):
        p.error("--precision bf16 is for GPUs")
    sizes = (args.layers, args.hidden, args.heads, args.batch_size, args.seq_len, args.steps)
    if min(*sizes, args.repeats) < 1:
        p.error(
            "--layers, --hidden, --heads, --batch-size, --seq-len, --steps and --repeats must "
            "be >= 1"
        )
    if args.hidden % args.heads:
        p.error(f"--hidden {args.hidden} must be a multiple of --heads {args.heads}")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    data = batches(args, device)
    rows = [
        "| operation | samples/s (median) | min-max | vs sa/sdp |",
        "|---|---|---|---|",
    ]
    # One untimed run first (the allocator, threads and kernels' first use were charged to
    # sa/sdp, measured first), then the repeats in rounds over every operation, so that a
    # machine's drift reaches each alike.
    samples_per_second(*OPERATIONS[0], data, args)
    by_op: dict[tuple[str, str], list[float]] = {o: [] for o in OPERATIONS}
    for _ in range(args.repeats):
        for op, param in OPERATIONS:
            by_op[(op, param)].append(samples_per_second(op, param, data, args))
    base = None
    for op, param in OPERATIONS:
        runs = by_op[(op, param)]
        median = statistics.median(runs)
        base = base or median
        rows.append(
            f"| {op}/{param} | {median:.1f} | {min(runs):.1f}-{max(runs):.1f} | "
            f"{median / base:.2f} |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    heading = (
        f"{args.layers} layers x {args.hidden} ({args.heads} heads, FF {4 * args.hidden}), batch "
        f"{args.batch_size}, lengths {args.seq_len // 4}-{args.seq_len} per batch, "
        f"{args.steps} steps after {args.warmup}, {args.repeats} repeats, {name}, "
        f"{args.precision}, torch {torch.__version__}, {args.threads} thread(s)"
    )
    print(f"\n{heading}\n\n{table}")
    if args.record:
        label = f" {args.label}" if args.label else ""
        append_section(
            f"flexibert_ops{label}",
            f"- {heading}\n\n{table}\n",
            summary=(f"samples/s per operation vs sa/sdp ({name}, {args.precision})", "no goal"),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
