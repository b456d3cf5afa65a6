"""Leave-one-out across NAS tables: choose the default loop on some tables, report on another.

Issue 17's protocol 3, so that no figure is reported on the data it was chosen on without
saying so. For each table held out in turn:

1. **Choose** (tuning seeds ``0 .. --tune-seeds - 1``): every candidate loop of ``--candidates``
   is replayed on every *other* table, one at a time and with four asynchronous workers; its
   score is the geometric mean, over those tables and both protocols, of its median
   evaluations to the top 1% divided by random search's exact median on that table. The
   lowest score is the default chosen for this fold.
2. **Report** (report seeds ``1000 ..``, never used to choose): on the held-out table, the
   chosen loop's median evaluations to the top 1% with a 90% interval, beside random search's
   exact median (ties at the threshold counted), TPE over the table's per-layer parameters, and
   regularised evolution and local search (``--baselines``; ``gp`` adds Optuna's GP sampler
   over the same parameters, ``gp+padded`` the same sampler with every layer's parameters
   suggested in every trial: a baseline ``LOOP+padded`` replays LOOP on the table read with
   ``padded=true``, "n/a" on a FlexiBERT table, whose space has no such option); the ratios
   against the issue's goal (at most 1/3 of random's, at most 2/3 of TPE's, in both protocols).

The FlexiBERT SST-2 table is where BOSHNAS's own defaults (``features: both``, ``n_init: 5``) were
chosen before this protocol existed: its fold is marked as the tuning table.

Every replay goes through ``archsearch replay``'s code (``server/_replay.py``: the real loops,
the server's ``ask_candidate``), each stopped once it reaches the top 1% (what comes after
cannot change the count). Runs are cached in ``--cache`` (JSON, written as they finish),
so a cut run continues where it stopped and a second report costs nothing.

    python benchmarks/loo_tables.py [--tables NAME=PATH[:FORMAT],...] [--candidates ...]
        [--baselines tpe,evolution,local-search[,gp,gp+padded]] [--tune-seeds 10]
        [--report-seeds 20] [--seeds-for gp=6] [--not-on gp+padded=TABLE] [--evals 200]
        [--jobs 2]
        [--cache benchmarks/loo_tables_runs.json] [--record]
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optuna.samplers._tpe._truncnorm as _truncnorm
import scipy.special
from _loo_args import padded_tables, parse_args
from _loo_candidates import CANDIDATES, LOOP_OPTIONS
from _results import append_section

from archsearch.server._replay import replay_seeds
from archsearch.server._replay_stats import (
    Run,
    median_interval,
    random_search_median,
    top_targets,
)
from archsearch.spaces import ReplayTable

#: The evaluation budget of a replay (at most half a table's rows: :func:`budget`).
DEFAULT_EVALS = 200
TUNING_TABLE = "flexibert-sst2"  # where BOSHNAS's defaults were chosen, before this protocol
BASELINES = "tpe,evolution,local-search"  # reported beside the chosen loop; TPE always
PROTOCOLS: dict[str, dict[str, Any]] = {
    "one at a time": {"parallel": 1},
    "four asynchronous": {"parallel": 4, "asynchronous": True},
}
REPORT_SEED0 = 1000
PADDED = "+padded"  # a baseline LOOP+padded: LOOP on the table read with padded=true

# Optuna 5.0's TPE computes log Φ one Python call per element (``np.frompyfunc``): 0.6 s per
# suggestion over per-layer parameters, most of a 200-evaluation TPE replay's 4 minutes. SciPy's
# vectorised ``log_ndtr`` is the same function (largest difference 3e-13 absolute on [-40, 10]);
# the same seeds gave the same trajectories in a check. Only this benchmark's process is patched.
_truncnorm._log_ndtr = scipy.special.log_ndtr


class RunCache:
    """Replays by (table, loop, protocol, seed), kept in a JSON file as they finish, each with
    the evaluation budget and the code it was measured with. A replay of another budget is
    run again; one measured with other code is reused (the cache resumes long runs) and
    counted in :meth:`reuse_note`, which the report carries."""

    def __init__(self, path: Path | None) -> None:
        from archsearch.worker._provenance import code_version

        self.path = path
        self.code = code_version()
        self.runs: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path is not None and path.exists() else {}
        )
        #: Replays this run took from the cache, by the code that measured them.
        self.reused: dict[str, int] = {}
        self.used = 0

    def reuse_note(self) -> str:
        """ "" when every replay was measured by this code; else how many were not."""
        older = {c: n for c, n in self.reused.items() if c != self.code}
        if not older:
            return ""
        said = ", ".join(f"{n} by {c}" for c, n in sorted(older.items()))
        return (
            f"{sum(older.values())} of the {self.used} replays come from the cache, measured "
            f"with other code ({said}); this run's code is {self.code}"
        )

    def _usable(self, key: str, evals: int, recorded_before: int) -> bool:
        """Whether the cached replay ``key`` ran with budget ``evals`` (a replay cached before
        budgets were recorded ran with ``recorded_before``, the default's)."""
        entry = self.runs.get(key)
        return entry is not None and entry.get("evals", recorded_before) == evals

    @staticmethod
    def key(table: str, loop: str, protocol: str, seed: int) -> str:
        return f"{table}|{loop}|{protocol}|{seed}"

    def get(
        self,
        table_name: str,
        table: ReplayTable,
        loop: str,
        protocol: str,
        seeds: range,
        evals: int,
        jobs: int,
    ) -> list[Run]:
        before = budget(table, DEFAULT_EVALS)  # the budget of replays cached without one
        missing = [
            s
            for s in seeds
            if not self._usable(self.key(table_name, loop, protocol, s), evals, before)
        ]
        # Only the evaluations to the top 1% are reported: a replay stops there.
        stop_at = top_targets(table.scores, 1.0, table.direction).threshold
        for start, end in _spans(missing):
            found = replay_seeds(
                table,
                loop.removesuffix(PADDED),
                range(start, end),
                evals,
                jobs,
                loop_options=LOOP_OPTIONS,
                stop_at=stop_at,
                **PROTOCOLS[protocol],
            )
            for run in found:
                self.runs[self.key(table_name, loop, protocol, run.seed)] = {
                    "best": run.best,
                    "asks": run.asks,
                    "seconds": run.seconds,
                    "evals": evals,
                    "code": self.code,
                }
                print(
                    f"  {table_name} {loop} ({protocol}) seed {run.seed}: {run.seconds:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                if self.path is not None:
                    self.path.write_text(json.dumps(self.runs))
        keys = [self.key(table_name, loop, protocol, s) for s in seeds]
        out = []
        for s, k in zip(seeds, keys, strict=True):
            entry = self.runs[k]
            code = str(entry.get("code", "code before 2026-12-07 (not recorded)"))
            self.reused[code] = self.reused.get(code, 0) + 1
            self.used += 1
            fields = {f: entry[f] for f in ("best", "asks", "seconds")}
            out.append(Run(loop, s, direction=table.direction, **fields))
        return out


def _spans(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of ``seeds`` as ``(start, end)`` ranges."""
    spans: list[tuple[int, int]] = []
    for s in seeds:
        if spans and spans[-1][1] == s:
            spans[-1] = (spans[-1][0], s + 1)
        else:
            spans.append((s, s + 1))
    return spans


def budget(table: ReplayTable, evals: int) -> int:
    """A replay's evaluation budget on ``table``: ``evals``, at most half the table's rows.

    Past half a small table a sampler's suggestions are mostly rows it has seen (TPE: 525
    suggestions for 104 evaluations of a 200-row table), which costs minutes per replay and
    says nothing about how soon the top 1% is found; a run that has not found it by then
    counts as never (``budget + 1``). Random search's exact median is taken at the same budget.
    """
    return min(evals, len(table.architectures) // 2)


def evals_to_top(runs: Sequence[Run], table: ReplayTable, evals: int) -> list[int]:
    """Each run's evaluations to the table's top 1% (``evals + 1`` when not within ``evals``)."""
    threshold = top_targets(table.scores, 1.0, table.direction).threshold
    hits = (r.evals_to(threshold) for r in runs)
    return [h if h is not None and h <= evals else evals + 1 for h in hits]


def exact_random(table: ReplayTable, evals: int) -> int:
    targets = top_targets(table.scores, 1.0, table.direction)
    return random_search_median(targets.rows, targets.count, evals)


def choose(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]], held_out: str
) -> tuple[str, dict[str, float]]:
    """The candidate with the lowest geometric mean ratio (to random's exact median) over
    every table but ``held_out`` and every protocol; ``scores[loop][table][protocol]``.
    Returns it and every candidate's geometric mean."""
    means = {}
    for loop, by_table in scores.items():
        ratios = [r for t, by_p in by_table.items() if t != held_out for r in by_p.values()]
        means[loop] = math.exp(statistics.fmean(math.log(r) for r in ratios))
    return min(means, key=lambda loop: (means[loop], loop)), means


def protocol_tables(
    tables: Mapping[str, ReplayTable],
    candidates: Sequence[str],
    runs: Callable[[str, str, str, range], list[Run]],
    tune: range,
    report: range,
    evals: int,
    baselines: Sequence[str] = tuple(BASELINES.split(",")),
    seeds_for: Mapping[str, int] | None = None,
) -> tuple[list[str], list[bool]]:
    """Every fold's markdown and whether each fold met the goal in both protocols.

    ``seeds_for``: a baseline (``LOOP``, or ``LOOP:TABLE`` for one held-out table) -> its number
    of report seeds (the first of ``report``), for one too slow to replay on all of them; its
    column says how many (the chosen loop and TPE, which the goal compares, always run on all).
    """
    shown = ["tpe", *(b for b in baselines if b != "tpe")]  # the goal is against TPE
    fewer = {k: n for k, n in (seeds_for or {}).items() if k.split(":")[0] != "tpe"}
    capped = {name: budget(t, evals) for name, t in tables.items()}
    tuning: dict[str, dict[str, dict[str, float]]] = {}
    for loop in candidates:
        for name, table in tables.items():
            for protocol in PROTOCOLS:
                hits = evals_to_top(runs(name, loop, protocol, tune), table, capped[name])
                ratio = statistics.median(hits) / exact_random(table, capped[name])
                tuning.setdefault(loop, {}).setdefault(name, {})[protocol] = ratio
    lines = [
        f"Tuning seeds {tune.start}..{tune.stop - 1} choose the default; report seeds "
        f"{report.start}..{report.stop - 1} measure it. Evaluations to the top 1% (median "
        "[90% interval]; budget: --evals, at most half a table's rows; a run that never reached "
        "it counts as budget + 1); ratios against random search's exact median (ties counted) "
        "and TPE's median over per-layer parameters. n/a: a baseline not replayed on that "
        "table (LOOP+padded on a FlexiBERT table, whose space has no padding, or --not-on).",
        "",
    ]
    passed = []
    for held_out, table in tables.items():
        chosen, means = choose(tuning, held_out)
        columns = list(dict.fromkeys([chosen, *shown]))
        count = {
            loop: len(report)
            if loop == chosen
            else fewer.get(f"{loop}:{held_out}", fewer.get(loop, len(report)))
            for loop in columns
        }
        mark = " (the tuning table of BOSHNAS's defaults)" if held_out == TUNING_TABLE else ""
        lines += [
            f"**Held out: {held_out}**{mark}, {len(table.architectures)} rows; chosen on "
            f"{', '.join(t for t in tables if t != held_out)}: **{chosen}** (geometric mean "
            "ratio to random: "
            + ", ".join(f"{loop} {m:.2f}" for loop, m in sorted(means.items(), key=lambda x: x[1]))
            + ")",
            "",
            "| protocol | random (exact) | "
            + " | ".join(
                loop if count[loop] == len(report) else f"{loop} ({count[loop]} seeds)"
                for loop in columns
            )
            + f" | {chosen} / random | {chosen} / TPE | goal |",
            "|---|---:|" + "---:|" * (len(columns) + 3),
        ]
        fold_ok = True
        for protocol in PROTOCOLS:
            random_median = exact_random(table, capped[held_out])
            medians, cells = {}, []
            for loop in columns:
                some = report[: count[loop]]
                hits = evals_to_top(runs(held_out, loop, protocol, some), table, capped[held_out])
                if not hits:  # a baseline that does not apply to this table
                    cells.append("n/a")
                    continue
                low, high = median_interval(hits)
                medians[loop] = statistics.median(hits)
                cells.append(f"{medians[loop]:g} [{low:g}, {high:g}]")
            vs_random = medians[chosen] / random_median
            vs_tpe = medians[chosen] / medians["tpe"]
            ok = vs_random <= 1 / 3 and vs_tpe <= 2 / 3
            fold_ok = fold_ok and ok
            lines.append(
                f"| {protocol} | {random_median} | "
                + " | ".join(cells)
                + f" | {vs_random:.2f} | {vs_tpe:.2f} | {'pass' if ok else 'FAIL'} |"
            )
        passed.append(fold_ok)
        lines.append("")
    return lines, passed


def main(argv: list[str] | None = None) -> int:
    args, tables, seeds_for, not_on = parse_args(
        __doc__, argv, CANDIDATES, BASELINES, DEFAULT_EVALS, PADDED
    )
    padded = padded_tables(tables) if PADDED in args.baselines else {}
    cache = RunCache(Path(args.cache) if args.cache else None)

    def runs(name: str, loop: str, protocol: str, seeds: range) -> list[Run]:
        capped = budget(tables[name], args.evals)
        if (loop, name) in not_on:
            return []
        if loop.endswith(PADDED):
            if name not in padded:
                return []
            return cache.get(name, padded[name], loop, protocol, seeds, capped, args.jobs)
        return cache.get(name, tables[name], loop, protocol, seeds, capped, args.jobs)

    tune = range(args.tune_seeds)
    report = range(REPORT_SEED0, REPORT_SEED0 + args.report_seeds)
    lines, passed = protocol_tables(
        tables,
        args.candidates.split(","),
        runs,
        tune,
        report,
        args.evals,
        args.baselines.split(","),
        seeds_for,
    )
    note = cache.reuse_note()
    text = "\n".join(lines) + (f"\n\nNote: {note}." if note else "")
    print(text)
    if args.record:
        held = [t for t in tables if t != TUNING_TABLE]
        ok = sum(ok for t, ok in zip(tables, passed, strict=True) if t != TUNING_TABLE)
        older = f"; {note}" if note else ""
        append_section(
            "loo_tables: leave-one-out across the NAS tables",
            text,
            summary=(
                f"chosen default met the goal in both protocols on {ok} of {len(held)} held-out "
                f"tables (the tuning table, {TUNING_TABLE}, is reported but not judged){older}",
                "pass" if ok == len(held) else "FAIL",
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
