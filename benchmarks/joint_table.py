"""Joint architecture + data search on a small real factorial table (not a test: a benchmark).

1. ``build``: trains every (architecture, data choice, seed) of a factorial design for real,
   through the bert trainer (the worker's code path): six tiny BERT students (the ``bert``
   space with 1 or 2 layers and width 32, 64 or 128; 2 heads, feed-forward 2x) x three
   ``data.selection`` choices (the whole training split; DSIR k examples towards the task's
   unlabelled test text, Laplace 1; a random k) x seeds, the same step budget each. Saved as JSON
   (``--table``) and CSV next to it.
2. ``replay``: searches replayed on the table's seed-mean scores (each evaluation returns one
   seed's score, drawn at random: the noise a real search sees), driven by archsearch's own
   loops and ``ask_candidate`` with the study's ``DataSpace``: joint TPE and joint random over
   (architecture, data); architecture-then-data (TPE over architectures with the default data
   for ``--arch-budget`` evaluations, then every data choice on the best architecture found,
   then the rest of the pairs at random); architecture-only (TPE over architectures, default
   data). Metric: evaluations until the table's best pair is evaluated (never, for
   architecture-only when the best pair's data is not the default), and the regret of the
   best-observed pair after 6 and 9 evaluations, over ``--replays`` seeds.
3. The interaction: two-way ANOVA (statsmodels, score ~ C(arch) * C(data), the seeds as
   replicates) and each architecture's best data choice.

    nice -n 10 python benchmarks/joint_table.py build --seeds 0,1 --steps 150 --table /tmp/a.json
    nice -n 10 python benchmarks/joint_table.py build --seeds 2 --steps 150 --table /tmp/b.json
    python benchmarks/joint_table.py replay --table /tmp/a.json,/tmp/b.json --replays 40
        --save benchmarks/joint_table.json --record   (one line)
    python benchmarks/joint_table.py replay   # the committed table's replay, in seconds

``--record`` appends the replay (with the table) to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_TABLE = Path(__file__).resolve().parent / "joint_table.json"
LAYERS = (1, 2)
WIDTHS = (32, 64, 128)


def architectures() -> list[dict[str, int]]:
    """The six students: the ``bert`` space's members for LAYERS x WIDTHS (2 heads, 2x)."""
    return [
        {
            "num_hidden_layers": n,
            "hidden_size": h,
            "num_attention_heads": 2,
            "intermediate_size": 2 * h,
        }
        for n, h in itertools.product(LAYERS, WIDTHS)
    ]


def data_choices(k: int) -> list[dict[str, Any]]:
    return [
        {"method": "none"},
        # the test text, named: a table built before 2026-12-07 aimed at the dev split that
        # scored every row (a leak); its design differs, so load_tables will not merge the two
        {"method": "dsir", "k": k, "laplace": 1, "target": "test"},
        {"method": "random", "size": k},
    ]


def build(args: argparse.Namespace) -> None:
    import torch

    from archsearch.spaces import Candidate, choice_label
    from archsearch.worker import TrainContext
    from archsearch.worker._registry import create_trainer

    torch.set_num_threads(args.threads)
    trainer = create_trainer("bert", {})
    archs, datas = architectures(), data_choices(args.k)
    seeds = [int(s) for s in args.seeds.split(",")]
    table: dict[str, Any] = {
        "task": args.task,
        "settings": {
            "steps": args.steps,
            "batch_size": args.batch,
            "max_seq_length": args.seq,
            "learning_rate": args.lr,
            "k": args.k,
            "eval_subset": args.eval_subset,
            "device": args.device,
        },
        "architectures": archs,
        "data": datas,
        "data_labels": [choice_label(d) for d in datas],
        "seeds": seeds,
        "rows": [],
    }
    out = Path(args.table)
    chosen = [int(a) for a in args.archs.split(",")] if args.archs else range(len(archs))
    for seed, a, (d, data) in itertools.product(seeds, chosen, enumerate(datas)):
        arch = archs[a]
        candidate = Candidate(
            space="bert",
            architecture=arch,
            recipe={
                "max_steps": args.steps,
                "eval_every": args.steps,
                "batch_size": args.batch,
                "max_seq_length": args.seq,
                "learning_rate": args.lr,
                "seed": seed,
                "measure_latency": False,
                "progress": False,
            },
            # eval_seed: one dev sample for every seed (tables built before 2026-12-07 drew
            # it with the training seed)
            data={
                "task": args.task,
                "selection": data,
                "eval_subset": args.eval_subset,
                "eval_seed": 0,
            },
        )
        start = time.perf_counter()
        result = trainer.train(candidate, TrainContext(device=args.device))
        seconds = time.perf_counter() - start
        score = float(result.metrics[args.metric])
        table["rows"].append(
            {"arch": a, "data": d, "seed": seed, "score": score, "seconds": round(seconds, 2)}
        )
        print(
            f"arch {a} {arch['num_hidden_layers']}x{arch['hidden_size']}  "
            f"{table['data_labels'][d]:<22} seed {seed}  {args.metric} {score:.4f}  "
            f"{seconds:.1f}s",
            flush=True,
        )
        out.write_text(json.dumps(table, indent=1))  # partial tables survive an interruption
    save(table, out, args.metric)
    print(f"table: {out} and {out.with_suffix('.csv')}")


def save(table: dict[str, Any], out: Path, metric: str = "accuracy") -> None:
    """The table as JSON at ``out`` and as CSV next to it (one row per training)."""
    out.write_text(json.dumps(table, indent=1))
    archs = table["architectures"]
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "layers", "hidden", "data", "seed", metric, "seconds"])
        for r in table["rows"]:
            arch = archs[r["arch"]]
            w.writerow(
                [
                    r["arch"],
                    arch["num_hidden_layers"],
                    arch["hidden_size"],
                    table["data_labels"][r["data"]],
                    r["seed"],
                    r["score"],
                    r["seconds"],
                ]
            )


def load_tables(paths: list[str]) -> dict[str, Any]:
    """One table from several builds of the same design (e.g. one process per seed): rows
    merged, the first of a repeated (arch, data, seed) kept.

    Raises:
        SystemExit: The builds differ in task, settings, architectures or data choices.
    """
    tables = [json.loads(Path(p).read_text()) for p in paths]
    out = tables[0]
    keys = ("task", "settings", "architectures", "data")
    done = {(r["arch"], r["data"], r["seed"]) for r in out["rows"]}
    for path, t in zip(paths[1:], tables[1:], strict=True):
        if any(t[k] != out[k] for k in keys):
            raise SystemExit(f"{path} is not a build of the same design as {paths[0]}")
        for r in t["rows"]:
            if (r["arch"], r["data"], r["seed"]) not in done:
                out["rows"].append(r)
                done.add((r["arch"], r["data"], r["seed"]))
    out["seeds"] = sorted({r["seed"] for r in out["rows"]})
    return complete_part(out)


def complete_part(table: dict[str, Any]) -> dict[str, Any]:
    """The table restricted to the architectures with every (data, seed) cell (an interrupted
    build leaves some out; they are named on stderr)."""
    need = {(d, s) for d in range(len(table["data"])) for s in table["seeds"]}
    have: dict[int, set[tuple[int, int]]] = {}
    for r in table["rows"]:
        have.setdefault(r["arch"], set()).add((r["data"], r["seed"]))
    keep = [a for a in range(len(table["architectures"])) if have.get(a, set()) >= need]
    if len(keep) < len(table["architectures"]):
        dropped = sorted(set(range(len(table["architectures"]))) - set(keep))
        print(f"incomplete build: architectures {dropped} left out", file=sys.stderr)
    new = {a: i for i, a in enumerate(keep)}
    return {
        **table,
        "architectures": [table["architectures"][a] for a in keep],
        "rows": [{**r, "arch": new[r["arch"]]} for r in table["rows"] if r["arch"] in new],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the factorial table")
    b.add_argument("--task", default="sst2")
    b.add_argument("--metric", default="accuracy")
    b.add_argument("--seeds", default="0,1")
    b.add_argument("--steps", type=int, default=150)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--seq", type=int, default=64)
    b.add_argument("--lr", type=float, default=1e-3)
    b.add_argument("--k", type=int, default=2000, help="examples DSIR and random keep")
    b.add_argument("--eval-subset", type=int, default=0, help="dev examples (0: all)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--archs", default="", help="indices to train (default all; split a build)")
    b.add_argument(
        "--table",
        required=True,
        help="JSON file to write (rewritten after every row; not the committed "
        "benchmarks/joint_table.json, which replay reads: build to new files, then "
        "`replay --table A.json,B.json --save ...` merges them)",
    )
    r = sub.add_parser("replay", help="replay searches on a built table")
    r.add_argument("--table", default=str(DEFAULT_TABLE), help="one or more, comma-separated")
    r.add_argument("--replays", type=int, default=40)
    r.add_argument("--arch-budget", type=int, default=4)
    r.add_argument("--record", action="store_true")
    r.add_argument("--save", default="", help="write the merged table (JSON + CSV) here")
    args = parser.parse_args(argv)
    if args.cmd == "build" and Path(args.table).resolve() == DEFAULT_TABLE:
        parser.error(
            f"build --table {args.table} would replace the committed table, which the recorded "
            "replay reads; build to another file"
        )
    if args.cmd == "build":
        build(args)
        return 0
    from _joint_replay import analyse, replay_report

    table = load_tables(args.table.split(","))
    report = analyse(table) + "\n\n" + replay_report(table, args.replays, args.arch_budget)
    print(report)
    if args.save:
        save(table, Path(args.save))
    if args.record:
        from _results import append_section

        append_section(
            "joint_table: architecture x data factorial table and replayed searches",
            report + "\n\nThe machine was shared with other jobs (2 cores, several helpers); "
            "seconds are indicative, scores and evaluation counts are not affected.",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
