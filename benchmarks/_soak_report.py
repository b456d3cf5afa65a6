"""The figures of a ``soak.py`` phase (``Row``) and their table."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """One phase's figures."""

    server: str
    clients: int
    seconds: float
    studies: int = 0
    lifecycles: int = 0
    rate: float = 0.0
    completed: int = 0
    failed: int = 0
    no_work: int = 0
    errors: int = 0
    acq_p50_ms: float = float("nan")
    acq_p99_ms: float = float("nan")
    rss_start_mib: float = float("nan")
    rss_mid_mib: float = float("nan")  # halfway through the measured window
    late_lifecycles: int = 0  # lifecycles that ended in the window's second half
    rss_end_mib: float = float("nan")
    setup: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _f(x: float, digits: int = 1) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


def growth_per_1000(r: Row) -> float:
    """The server's RSS growth in the second half of the measured window per 1,000 lifecycles
    that ended in it (KiB): the first half includes the ramp-up of threads and connections. The
    server keeps every finished trial in Optuna's cache for its life, so its memory follows the
    trials it has stored; this says how much, and a leak per call shows as a rise."""
    if not r.late_lifecycles:
        return float("nan")
    return (r.rss_end_mib - r.rss_mid_mib) * 1024 / (r.late_lifecycles / 1000)


def render(rows: list[Row]) -> str:
    lines = [
        "| server | clients | minutes | errors | lifecycles/s | acquire p50 ms | acquire p99 ms "
        "| server RSS start / mid / end MiB | RSS growth, 2nd half, KiB per 1,000 lifecycles "
        "| completed | failed | no-work polls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.server} | {r.clients} | {r.seconds / 60:g} | {r.errors} | {_f(r.rate)} "
            f"| {_f(r.acq_p50_ms, 2)} | {_f(r.acq_p99_ms, 2)} | {_f(r.rss_start_mib)} / "
            f"{_f(r.rss_mid_mib)} / {_f(r.rss_end_mib)} | {_f(growth_per_1000(r), 0)} "
            f"| {r.completed} | {r.failed} "
            f"| {r.no_work} |"
        )
    return "\n".join(lines)
