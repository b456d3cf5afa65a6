"""``benchmarks/soak.py`` itself: a short run on SQLite works end to end and cleans up."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import soak


def test_a_five_worker_soak_on_sqlite_has_no_errors_and_stops_everything() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    args = soak.parse_args(
        [
            *("--storage", "sqlite", "--clients", "5", "--minutes", "0.0834"),
            *("--warmup", "1", "--train-seconds", "0.05", "--procs", "1"),
        ]
    )
    rows = soak.run(args)
    assert len(rows) == 1
    row = rows[0]
    assert row.errors == 0, row.notes
    assert row.lifecycles > 0 and row.rate > 0
    assert row.completed + row.failed >= row.lifecycles
    assert row.acq_p50_ms > 0 and row.acq_p99_ms >= row.acq_p50_ms
    assert all(math.isfinite(x) for x in (row.rss_start_mib, row.rss_mid_mib, row.rss_end_mib))
    assert 0 < row.late_lifecycles < row.lifecycles
    assert math.isfinite(soak.growth_per_1000(row))
    assert "| this | 5 |" in soak.render(rows)
    left = [
        " ".join(p.cmdline())
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before
    ]
    # multiprocessing's resource tracker lives as long as this interpreter, by design
    left = [c for c in left if "resource_tracker" not in c]
    assert not left, f"processes left running: {left}"


@pytest.mark.parametrize(
    "argv",
    [["--clients", "5,10", "--minutes", "1"], ["--clients", "0"], ["--minutes", "0.01"]],
)
def test_bad_phases_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        soak.parse_args(argv)


def test_enough_studies_for_the_fastest_possible_phase() -> None:
    assert soak.studies_needed(5, 60, 1.0) == 1
    # 1,000 workers without training for 10 minutes could pass one study's trial cap
    assert soak.studies_needed(1000, 600, 0.0) > 1
