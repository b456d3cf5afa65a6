"""``loo_tables.py``'s command-line values: the tables (``--tables``), the baselines' report
seeds (``--seeds-for``) and the tables a baseline is left out on (``--not-on``)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from _argtypes import whole

from archsearch.spaces import ReplayTable, RowTableSpace, SpecError
from archsearch.spaces._table_readers import read_table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLES = {
    "flexibert-sst2": f"{SHARED}/flexibert-small/dataset_small_sst2.json:flexibert",
    "hw-gpt-bench-s": f"{SHARED}/nas-tables/hw_gpt_bench_s.json:nas-tables",
    "lts-gpt2-wt103": f"{SHARED}/nas-tables/lts_gpt2_wt103.json:nas-tables",
    "lts-transxl-wt103": f"{SHARED}/nas-tables/lts_transxl_wt103.json:nas-tables",
}


def parse_seeds_for(
    text: str, baselines: Sequence[str], report_seeds: int, tables: Sequence[str] = ()
) -> dict[str, int] | str:
    """``LOOP[:TABLE]=N,...`` -> {"LOOP" or "LOOP:TABLE": N}, or what is wrong with it (a
    message for the user)."""
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        key, sep, n = item.partition("=")
        loop, colon, table = key.partition(":")
        if loop not in baselines or loop == "tpe":
            return f"--seeds-for {item}: only a baseline other than tpe can have fewer seeds"
        if colon and table not in tables:
            return f"--seeds-for {item}: TABLE must be one of {', '.join(tables)}"
        if not sep or not n.isdigit() or not 1 <= int(n) <= report_seeds:
            return f"--seeds-for {item}: give LOOP[:TABLE]=N with N from 1 to --report-seeds"
        out[key] = int(n)
    return out


def parse_not_on(
    text: str, baselines: Sequence[str], tables: Sequence[str]
) -> set[tuple[str, str]] | str:
    """``LOOP=TABLE,...`` -> {(loop, table)} not replayed ("n/a"), or what is wrong with it."""
    out = set()
    for item in filter(None, text.split(",")):
        loop, sep, table = item.partition("=")
        if loop not in baselines or loop == "tpe":
            return f"--not-on {item}: only a baseline other than tpe can be left out"
        if not sep or table not in tables:
            return f"--not-on {item}: give LOOP=TABLE with TABLE one of {', '.join(tables)}"
        out.add((loop, table))
    return out


def table_specs(text: str | None) -> dict[str, str]:
    """``--tables`` (or the default tables) as name -> PATH[:FORMAT].

    Raises:
        ValueError: an item that is not NAME=PATH[:FORMAT], or a name twice (the message
            says which).
    """
    if not text:
        return dict(TABLES)
    out: dict[str, str] = {}
    for item in text.split(","):
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec or name in out:
            raise ValueError(
                f"--tables {item!r}: give NAME=PATH[:FORMAT],... with distinct names (e.g. "
                "mine=runs.csv:csv)"
            )
        out[name] = spec
    return out


def table_options(items: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--table-option NAME:KEY=VALUE`` items as name -> reader options (a CSV's ``score``
    column and ``direction``, a nas-tables file's ``metric``, ...).

    Raises:
        ValueError: a malformed item or an unknown table name.
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        name, _, option = item.partition(":")
        key, sep, value = option.partition("=")
        if name not in names or not sep or not key:
            raise ValueError(
                f"--table-option {item!r}: give NAME:KEY=VALUE with NAME one of "
                f"{', '.join(names)} (e.g. mine:direction=minimize)"
            )
        out.setdefault(name, {})[key] = value
    return out


def parse_tables(
    text: str | None, options: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, ReplayTable]:
    """The tables, read with their reader options.

    Raises:
        SpecError: a table its reader cannot read (the message names it and the fix).
    """
    out = {}
    for name, spec in table_specs(text).items():
        path, sep, fmt = spec.rpartition(":")
        given = dict((options or {}).get(name, {}))
        out[name] = read_table(path, fmt, **given) if sep else read_table(spec, **given)
    return out


def padded_tables(tables: Mapping[str, ReplayTable]) -> dict[str, ReplayTable]:
    """The tables whose space is a ``RowTableSpace``, each with a padded copy of it (what the
    reader option ``padded=true`` builds), without reading them again."""
    return {
        name: dataclasses.replace(
            t, space=RowTableSpace(t.architectures, label=t.source, padded=True)
        )
        for name, t in tables.items()
        if isinstance(t.space, RowTableSpace)
    }


def parse_args(
    doc: str | None,
    argv: list[str] | None,
    candidates: str,
    baselines: str,
    evals: int,
    padded: str,
) -> tuple[argparse.Namespace, dict[str, ReplayTable], dict[str, int], set[tuple[str, str]]]:
    """``loo_tables.py``'s command line, every value checked before any replay (argparse's
    one-line error, exit status 2): the arguments, the tables read, the baselines' report
    seeds and the (baseline, table) pairs left out."""
    from archsearch.server._replay import ReplayError, check_loops

    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    p.add_argument("--tables", help="NAME=PATH[:FORMAT],... (default: the four shared tables)")
    p.add_argument("--candidates", default=candidates)
    p.add_argument(
        "--baselines", default=baselines, help="loops reported beside the chosen one (TPE always)"
    )
    p.add_argument("--tune-seeds", type=whole(), default=10)
    p.add_argument("--report-seeds", type=whole(), default=20)
    p.add_argument(
        "--seeds-for",
        default="",
        metavar="LOOP=N,...",
        help="fewer report seeds for some baselines, e.g. gp=6, or on one held-out table, "
        "gp+padded:lts-transxl-wt103=3 (the column says how many)",
    )
    p.add_argument(
        "--not-on",
        default="",
        metavar="LOOP=TABLE,...",
        help="leave a baseline out on a table, e.g. gp+padded=lts-gpt2-wt103 (its cells: n/a)",
    )
    p.add_argument("--evals", type=whole(), default=evals)
    p.add_argument("--jobs", type=whole(), default=2)
    p.add_argument("--cache", default=None, help="JSON file of finished replays (resumable)")
    p.add_argument(
        "--table-option",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="a reader option of one table of --tables (a CSV's score column and direction: "
        "mine:score=loss, mine:direction=minimize); repeatable",
    )
    p.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    try:
        check_loops(
            [
                *args.candidates.split(","),
                *(b.removesuffix(padded) for b in args.baselines.split(",")),
            ]
        )
    except ReplayError as e:
        p.error(str(e))
    try:
        names = list(table_specs(args.tables))
        options = table_options(args.table_option, names)
    except ValueError as e:
        p.error(str(e))
    seeds_for = parse_seeds_for(args.seeds_for, args.baselines.split(","), args.report_seeds, names)
    if isinstance(seeds_for, str):
        p.error(seeds_for)
    try:
        tables = parse_tables(args.tables, options)
    except SpecError as e:
        p.error(f"argument --tables: {e}")
    if len(tables) < 2:
        raise SystemExit("leave-one-out needs at least two tables")
    not_on = parse_not_on(args.not_on, args.baselines.split(","), list(tables))
    if isinstance(not_on, str):
        p.error(not_on)
    assert not isinstance(seeds_for, str) and not isinstance(not_on, str)
    return args, tables, seeds_for, not_on
