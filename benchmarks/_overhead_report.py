"""The report of ``service_overhead.py``: each cell's figures, the table, the goals, RESULTS.md."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from _results import append_section

SYSTEMS = {
    "ours": "archsearch serve (gRPC, server-side ask/tell)",
    "a": "Optuna ask/tell in-process (RDBStorage)",
    "b": "Optuna GrpcStorageProxy + run_grpc_proxy_server",
}


@dataclass
class Cell:
    system: str
    clients: int
    throughput: float = 0.0
    n: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    acq_p50_ms: float = float("nan")
    acq_p99_ms: float = float("nan")
    errors: int = 0
    no_work: int = 0
    setup_s: float = 0.0
    drain_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _f(x: float, digits: int = 1) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


def render(cells: list[Cell], args: argparse.Namespace) -> tuple[str, list[str], bool | None]:
    """The markdown table, the ratio/goal lines and whether every goal passed: False when one
    failed, None when none failed but one was not measured (a run of fewer systems or
    client counts: it cannot pass goals it did not check)."""
    lines = [
        "| system | clients | lifecycles/s | overhead p50 ms | overhead p99 ms "
        "| acquire p50 ms | acquire p99 ms | lifecycles | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.system} | {c.clients} | {_f(c.throughput)} | {_f(c.p50_ms, 2)} "
            f"| {_f(c.p99_ms, 2)} | {_f(c.acq_p50_ms, 2)} | {_f(c.acq_p99_ms, 2)} | {c.n} "
            f"| {c.errors} |"
        )
    table = "\n".join(lines)
    by = {(c.system, c.clients): c for c in cells}
    out: list[str] = []
    all_ok: bool | None = True
    clients = sorted({c.clients for c in cells})
    for n in clients:
        o, a, b = by.get(("ours", n)), by.get(("a", n)), by.get(("b", n))
        parts = []
        if o and b and b.p50_ms == b.p50_ms and b.p50_ms > 0:
            parts.append(f"ours/b p50 overhead {o.p50_ms / b.p50_ms:.2f}")
        if o and a and a.p50_ms == a.p50_ms and a.p50_ms > 0:
            parts.append(f"ours/a p50 overhead {o.p50_ms / a.p50_ms:.2f}")
        if o and b and b.throughput > 0:
            parts.append(f"ours/b throughput {o.throughput / b.throughput:.2f}")
        if o and a and a.throughput > 0:
            parts.append(f"ours/a throughput {o.throughput / a.throughput:.2f}")
        if parts:
            out.append(f"- {n} client(s): " + ", ".join(parts))

    def goal(name: str, ok: bool | None, detail: str) -> None:
        nonlocal all_ok
        verdict = "n/a (not measured in this run)" if ok is None else ("PASS" if ok else "FAIL")
        if ok is False:
            all_ok = False
        elif ok is None and all_ok:
            all_ok = None
        out.append(f"- **{verdict}** {name}: {detail}")

    pairs = [
        (by[("ours", n)], by[("b", n)]) for n in clients if ("ours", n) in by and ("b", n) in by
    ]
    if pairs:
        bad = [
            f"{o.clients}: {o.p50_ms:.2f} vs {b.p50_ms:.2f} ms"
            for o, b in pairs
            if not o.p50_ms <= 0.5 * b.p50_ms
        ]
        detail = "; ".join(
            f"{o.clients} clients {o.p50_ms:.2f} ms vs (b) {b.p50_ms:.2f} ms" for o, b in pairs
        )
        goal("ours p50 overhead <= 1/2 of (b)'s, every client count", not bad, detail)
    else:
        goal("ours p50 overhead <= 1/2 of (b)'s", None, "")
    o8, a8 = by.get(("ours", 8)), by.get(("a", 8))
    if o8 and a8:
        goal(
            "ours p50 overhead <= (a)'s at 8 clients",
            o8.p50_ms <= a8.p50_ms,
            f"{o8.p50_ms:.2f} ms vs (a) {a8.p50_ms:.2f} ms",
        )
    else:
        goal("ours p50 overhead <= (a)'s at 8 clients", None, "")
    o32 = by.get(("ours", 32))
    if o32:
        goal(
            "ours p99 acquire latency < 50 ms at 32 clients (SQLite)",
            o32.acq_p99_ms < 50.0,
            f"{o32.acq_p99_ms:.2f} ms",
        )
    else:
        goal("ours p99 acquire latency < 50 ms at 32 clients", None, "")
    for c in cells:
        for note in c.notes[:5]:
            out.append(f"- note ({c.system}, {c.clients} clients): {note}")
    return table, out, all_ok


def record(
    table: str,
    lines: list[str],
    args: argparse.Namespace,
    started: str,
    loads: list[str],
    ok: bool | None,
) -> None:
    legend = "; ".join(f"`{k}` = {v}" for k, v in SYSTEMS.items())
    append_section(
        "service_overhead",
        f"- started {started}; load average (1/5/15 min) before the first and after the last "
        f"cell: {loads[0]} / {loads[-1]} (includes this run's own client processes; other "
        "jobs on the machine inflate every column alike)\n"
        f"- {args.warmup:g} s warm-up + {args.seconds:g} s measured per cell; fresh SQLite "
        "(WAL, synchronous=NORMAL) per cell; random sampler; flexibert-small space "
        f"`--space {args.space}`\n"
        f"- systems: {legend}\n\n"
        f"{table}\n\n" + "\n".join(lines) + "\n",
        summary=(
            "; ".join(ln.removeprefix("- ") for ln in lines if ln.startswith("- **")),
            "pass" if ok else "FAIL" if ok is False else "not every goal measured",
        ),
    )
