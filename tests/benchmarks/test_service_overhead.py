"""``benchmarks/service_overhead.py`` runs end to end: a short cell per system, no errors, every
process stopped (its clients live in ``_overhead_clients``, its processes in ``_processes``)."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import service_overhead


def test_a_short_run_measures_both_systems_without_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    argv = ["--systems", "ours,a", "--clients", "1", "--seconds", "1.5", "--warmup", "0.5"]
    code = service_overhead.main([*argv, "--no-record"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split(" | ")[0]: line for line in out.splitlines() if line.startswith("| ")}
    for system in ("| ours", "| a"):
        cells = [c.strip() for c in rows[system].strip("|").split("|")]
        assert cells[1] == "1" and float(cells[2]) > 0  # clients, lifecycles/s
        assert cells[-1] == "0"  # errors
    left = [
        " ".join(p.cmdline())
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before
        and "resource_tracker" not in " ".join(p.cmdline())
        and "forkserver" not in " ".join(p.cmdline())
    ]
    assert not left, f"processes left running: {left}"


def test_a_run_that_measured_no_goal_does_not_pass() -> None:
    """One system at one client count recorded "pass" with every goal "n/a"."""
    from _overhead_report import Cell, render

    ours = Cell("ours", 1, throughput=5.0, n=10, p50_ms=2.0, acq_p99_ms=3.0)
    assert render([ours], None)[2] is None  # type: ignore[arg-type]  # args unused
    b = Cell("b", 1, throughput=2.0, n=4, p50_ms=8.0)
    assert render([ours, b], None)[2] is None  # type: ignore[arg-type]  # 8 and 32 clients not run
    slow = Cell("ours", 1, throughput=5.0, n=10, p50_ms=6.0)
    assert render([slow, b], None)[2] is False  # type: ignore[arg-type]
