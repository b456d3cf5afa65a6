"""Shared by the benchmark scripts: machine facts and recording a run in RESULTS.md.

``benchmarks/RESULTS.md`` has two parts. At the top, a short table with one row per benchmark:
its latest figure against its goal, the date and the command (``update_summary`` rewrites the
row of the benchmark that just ran, and only that row). Below it, the history: every run's full
section, appended in order and never rewritten (``append_section``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SUMMARY_START = "<!-- summary: one row per benchmark, rewritten by benchmarks/_results.py -->"
SUMMARY_END = "<!-- /summary -->"
SUMMARY_HEAD = (
    "| benchmark | latest figure against its goal | verdict | date | command |\n"
    "|---|---|---|---|---|"
)
HEADER = (
    "# Benchmark results\n\n"
    "## Latest figure per benchmark\n\n"
    f"{SUMMARY_START}\n{SUMMARY_HEAD}\n{SUMMARY_END}\n\n"
    "## History\n\n"
    "Each section below is appended by a script in `benchmarks/` (newest last); ratios compare "
    "systems measured in the same run, because these machines are noisy.\n"
)


def machine() -> str:
    import importlib.metadata as md

    versions = []
    for pkg in ("optuna", "grpcio", "torch", "transformers"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions.append(f"{pkg} {md.version(pkg)}")
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}; "
        + ", ".join(versions)
    )


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def update_summary(
    benchmark: str, figure: str, verdict: str, cmd: str | None = None, stamp: str | None = None
) -> None:
    """Sets the summary row of ``benchmark`` (added when missing; other rows untouched).

    Args:
        benchmark: the script's name, e.g. ``"nas_table"``; one row each.
        figure: the latest figure against its goal, e.g. ``"BOSHNAS 18.0 vs random 59: 0.31
            (goal <= 0.33)"``.
        verdict: ``"pass"``, ``"FAIL"``, ``"partial"`` or ``"no goal"``.
        cmd: the command that measured it (default: this process's command line).
        stamp: the date (default: now).
    """
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    text = RESULTS.read_text()
    if SUMMARY_START not in text or SUMMARY_END not in text:
        raise RuntimeError(f"{RESULTS} has no summary block ({SUMMARY_START!r} ... {SUMMARY_END})")
    head, rest = text.split(SUMMARY_START, 1)
    block, tail = rest.split(SUMMARY_END, 1)
    rows = [ln for ln in block.strip().splitlines() if ln.startswith("| ")][1:]  # minus header
    row = (
        f"| {_cell(benchmark)} | {_cell(figure)} | {_cell(verdict)} | {stamp or _stamp()} | "
        f"`{_cell(cmd or command())}` |"
    )
    key = re.compile(rf"^\| {re.escape(benchmark)} \|")
    rows = [row if key.match(r) else r for r in rows]
    if row not in rows:
        rows.append(row)
    rows.sort()
    RESULTS.write_text(
        f"{head}{SUMMARY_START}\n{SUMMARY_HEAD}\n" + "\n".join(rows) + f"\n{SUMMARY_END}{tail}"
    )


def append_section(title: str, body: str, summary: tuple[str, str] | None = None) -> Path:
    """Appends ``## title`` with date, machine and command, then ``body``, to the history.

    Args:
        title: the section title; its first word names the benchmark.
        body: the section's Markdown.
        summary: ``(figure, verdict)`` for the benchmark's row at the top (see
            :func:`update_summary`); None leaves the summary as it is.
    """
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    stamp = _stamp()
    with RESULTS.open("a") as f:
        f.write(f"\n## {title} ({stamp})\n\n")
        f.write(f"Machine: {machine()}  \nCommand: `{command()}`\n\n")
        f.write(body.rstrip() + "\n")
    if summary is not None:
        update_summary(title.split()[0].rstrip(":"), summary[0], summary[1], stamp=stamp)
    return RESULTS
