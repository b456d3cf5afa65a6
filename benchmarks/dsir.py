"""DSIR selection cost: the first selection (features + importance weights) vs trials that
change only k or the seed (weights from the cache), on a pool of GLUE text.

Pool: the text of SST-2 train, CoLA train, MRPC train, STS-B train, QNLI test and RTE test
from the ``glue_data`` folder (one text per example, pairs joined), capped by ``--pool`` (a
seeded random subset); target: ``--target`` (default RTE train). Each row is one
:func:`dsir_select` call in one process with one :class:`DsirCache`, as a worker's trials
share it; ``--package`` also times the ``data-selection`` package (one process,
``min_example_length=1``, ``num_tokens_to_fit='all'``) on the same texts for comparison.

Usage::

    python benchmarks/dsir.py                       # the whole GLUE pool, k 10000 then others
    python benchmarks/dsir.py --pool 20000 --package

Prints a Markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from archsearch.worker._dsir import DsirCache, dsir_select
from archsearch.worker._glue_dir import resolve_glue_dir
from archsearch.worker._text_pools import glue_texts

POOL_SOURCES = (
    ("sst2", "train"),
    ("cola", "train"),
    ("mrpc", "train"),
    ("stsb", "train"),
    ("qnli", "test"),
    ("rte", "test"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--pool", type=int, default=0, help="cap on pool texts (0: all)")
    parser.add_argument("--target", default="rte/train", help="TASK/SPLIT of the target")
    parser.add_argument("--ks", default="10000,5000,1000,10000", help="k of each selection")
    parser.add_argument("--package", action="store_true", help="also time data-selection")
    args = parser.parse_args()

    folder = resolve_glue_dir(args.glue_dir)[0]
    pool: list[str] = []
    sources: list[str] = []
    for task, split in POOL_SOURCES:
        texts = glue_texts(task, split, folder)
        pool += texts
        sources += [f"{task}/{split}"] * len(texts)
    if args.pool and args.pool < len(pool):  # a seeded random subset, in pool order
        keep = sorted(random.Random(0).sample(range(len(pool)), args.pool))
        pool, sources = [pool[i] for i in keep], [sources[i] for i in keep]
    task, split = args.target.split("/")
    target = glue_texts(task, split, folder)
    ks = [min(int(k), len(pool)) for k in args.ks.split(",")]
    print(f"pool {len(pool)} texts, target {args.target} ({len(target)} texts)\n")

    cache = DsirCache()
    rows = []
    for i, k in enumerate(ks):
        start = time.perf_counter()
        chosen = dsir_select(pool, target, k, sources=sources, seed=i, cache=cache)
        seconds = time.perf_counter() - start
        rows.append((f"ours, selection {i + 1}", k, seconds, chosen))
    print("| run | k | seconds | weights | KL selected | KL random | shares (top 3) |")
    print("|---|---:|---:|---|---:|---:|---|")
    for name, k, seconds, chosen in rows:
        top = sorted(chosen.shares.items(), key=lambda kv: -kv[1])[:3]
        shares = ", ".join(f"{s} {v:.1%}" for s, v in top)
        weights = "cached" if chosen.cache_hit else "fitted"
        print(
            f"| {name} | {k} | {seconds:.3f} | {weights} | {chosen.kl_selected:.4f} "
            f"| {chosen.kl_random:.4f} | {shares} |"
        )
    if args.package:
        seconds = _time_package(pool, target, ks[0])
        print(f"| data-selection 1.0.3, 1 process | {ks[0]} | {seconds:.3f} | fitted | | | |")


def _time_package(pool: list[str], target: list[str], k: int) -> float:
    from data_selection import HashedNgramDSIR

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, texts in (("pool", pool), ("target", target)):
            with (folder / f"{name}.jsonl").open("w") as f:
                f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
        start = time.perf_counter()
        dsir = HashedNgramDSIR(
            [str(folder / "pool.jsonl")],
            [str(folder / "target.jsonl")],
            str(folder / "cache"),
            num_proc=1,
            min_example_length=1,
        )
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        dsir.compute_importance_weights()
        dsir.resample(str(folder / "out"), num_to_sample=k)
        return time.perf_counter() - start


if __name__ == "__main__":
    main()
