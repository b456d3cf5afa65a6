"""``loo_tables.py``'s command-line values: the tables (``--tables``), the baselines' report
seeds (``--seeds-for``) and the tables a baseline is left out on (``--not-on``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from archsearch.spaces import ReplayTable, RowTableSpace
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
    """``--tables`` (or the default tables) as name -> PATH[:FORMAT]."""
    return dict(item.split("=", 1) for item in text.split(",")) if text else dict(TABLES)


def parse_tables(text: str | None) -> dict[str, ReplayTable]:
    out = {}
    for name, spec in table_specs(text).items():
        path, sep, fmt = spec.rpartition(":")
        out[name] = read_table(path, fmt) if sep else read_table(spec)
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
