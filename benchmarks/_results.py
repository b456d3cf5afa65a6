"""Shared by the benchmark scripts: machine facts and appending a section to RESULTS.md.

Benchmarks print a table and append it, with the date, machine and exact command, to
``benchmarks/RESULTS.md``; earlier sections are never rewritten.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Each section is appended by a script in `benchmarks/` (newest last); ratios compare "
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


def append_section(title: str, body: str) -> Path:
    """Appends ``## title`` with date, machine and command, then ``body``."""
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as f:
        f.write(f"\n## {title} ({stamp})\n\n")
        f.write(f"Machine: {machine()}  \nCommand: `{command()}`\n\n")
        f.write(body.rstrip() + "\n")
    return RESULTS
