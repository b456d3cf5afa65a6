"""Suggestion time of the library proposers at 500 observed trials (issue 4's goal: <= 1 s).

Library: 10,000 random 16-d embeddings (standard normal); objective: a smooth synthetic function
``tanh(x·w/4) − 0.1·|x|²/16``; 500 observed rows drawn at random. Cases:

* ``warm``: the service's steady state. The proposer already fitted its surrogate on 499
  observations (an untimed call); one new observation arrives and ``propose`` is timed.
* ``cold``: a fresh proposer (a restarted server): the surrogate is fitted from scratch.

``EmbeddingGPProposer`` keeps no state, so it has one case. Each cell is the median of
``--repeats`` runs (cold BOSHNAS: one run, it is slow). Prints a table and appends it to
``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/suggest_time.py [--threads 2] [--repeats 3] [--no-gp] [--no-append]``
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _argtypes import parser_for, whole

from archsearch.surrogates._boshnas import BoshnasProposer
from archsearch.surrogates._embedding_gp import EmbeddingGPProposer
from archsearch.surrogates._library_proposer import LibraryProposer

LIBRARY_SIZE = 10_000
DIM = 16
OBSERVED = 500
QUICK = (
    "    python benchmarks/suggest_time.py --repeats 1 --no-gp --no-append\n"
    "(the problem keeps its size, 500 observed trials: cold BOSHNAS fits still take a while)"
)


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    library = rng.normal(size=(LIBRARY_SIZE, DIM))
    direction = rng.normal(size=DIM)
    values = np.tanh(library @ direction / 4) - 0.1 * (library**2).sum(axis=1) / DIM
    order = rng.permutation(LIBRARY_SIZE)[: OBSERVED + 1]
    return library, values, order


def _time_propose(
    proposer: LibraryProposer,
    library: np.ndarray,
    values: np.ndarray,
    observed: np.ndarray,
    k: int,
    seed: int,
) -> float:
    started = time.perf_counter()
    rows = proposer.propose(library, observed, values[observed], [], k, np.random.default_rng(seed))
    elapsed = time.perf_counter() - started
    assert len(set(rows)) == k
    return elapsed


def main() -> None:
    parser = parser_for(__doc__, QUICK)
    parser.add_argument("--threads", type=whole(), default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=whole(), default=3)
    parser.add_argument("--no-gp", action="store_true", help="skip the GP baseline")
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument(
        "--warm-max-epochs",
        type=whole(0),
        default=None,
        help="cap the epochs of warm surrogate fits (BoshnasSurrogate warm_max_epochs; "
        "default: the surrogate's, 20; 0: uncapped)",
    )
    args = parser.parse_args()
    surrogate: dict[str, int | None] = (
        {} if args.warm_max_epochs is None else {"warm_max_epochs": args.warm_max_epochs or None}
    )
    torch.set_num_threads(args.threads)
    library, values, order = _problem()
    load_before = os.getloadavg()
    rows: list[tuple[str, int, str, float, float, str]] = []

    for k in (1, 8):
        warm_times, fit_times, epochs = [], [], ""
        for repeat in range(args.repeats):
            proposer = BoshnasProposer(seed=repeat, surrogate_options=surrogate)
            proposer.propose(
                library, order[:OBSERVED - 1], values[order[:OBSERVED - 1]], [], k,
                np.random.default_rng(100 + repeat),
            )  # fmt: skip
            warm_times.append(
                _time_propose(proposer, library, values, order[:OBSERVED], k, 200 + repeat)
            )
            assert proposer.last_fit is not None
            fit_times.append(proposer.last_fit.seconds)
            epochs = "/".join(str(e) for e in proposer.last_fit.epochs.values())
        rows.append(
            ("boshnas", k, "warm", statistics.median(warm_times), statistics.median(fit_times),
             epochs)
        )  # fmt: skip
        cold = BoshnasProposer(seed=0, surrogate_options=surrogate)
        seconds = _time_propose(cold, library, values, order[:OBSERVED], k, 300)
        assert cold.last_fit is not None
        cold_epochs = "/".join(str(e) for e in cold.last_fit.epochs.values())
        rows.append(("boshnas", k, "cold", seconds, cold.last_fit.seconds, cold_epochs))
        if not args.no_gp:
            gp_times = [
                _time_propose(EmbeddingGPProposer(seed=r), library, values, order[:OBSERVED], k, r)
                for r in range(args.repeats)
            ]
            rows.append(("embedding-gp", k, "stateless", statistics.median(gp_times), 0.0, "-"))

    load_after = os.getloadavg()
    lines = [
        f"- library {LIBRARY_SIZE} x {DIM}-d random embeddings, smooth synthetic objective, "
        f"{OBSERVED} observed trials; `torch.set_num_threads({args.threads})`; median of "
        f"{args.repeats} runs (cold BOSHNAS: 1 run)",
        "- warm = surrogate already fitted on 499, one new observation arrives (steady state); "
        "cold = fresh proposer (fit from scratch)",
        "- warm fits capped at the surrogate's default (WARM_MAX_EPOCHS)"
        if args.warm_max_epochs is None
        else f"- warm fits capped at {args.warm_max_epochs} epochs per net"
        if args.warm_max_epochs
        else "- warm fits uncapped (early stopping only)",
        f"- load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores; "
        "above ~1 other jobs shared the machine)",
        "",
        "| proposer | k | case | propose s | of which fit s | epochs teacher/student/npn |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name, k, case, seconds, fit_seconds, epochs in rows:
        lines.append(f"| {name} | {k} | {case} | {seconds:.2f} | {fit_seconds:.2f} | {epochs} |")
    warm_k1 = next(r[3] for r in rows if r[0] == "boshnas" and r[1] == 1 and r[2] == "warm")
    verdict = "PASS" if warm_k1 <= 1.0 else "FAIL"
    lines.append("")
    lines.append(
        f"- **{verdict}** goal: suggestion time at 500 observed trials <= 1 s (warm, k=1): "
        f"{warm_k1:.2f} s"
    )
    table = "\n".join(lines)
    print(table)
    if not args.no_append:
        from _results import append_section

        append_section(
            "suggest_time",
            table,
            summary=(
                f"BOSHNAS suggestion at 500 observed trials (warm, k=1): {warm_k1:.2f} s "
                "(goal <= 1 s)",
                verdict.lower() if verdict == "PASS" else verdict,
            ),
        )


if __name__ == "__main__":
    main()
