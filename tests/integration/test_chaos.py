"""Issue 16's chaos test, bounded: table workers SIGKILLed at random and the server SIGKILLed
and restarted once, on SQLite and PostgreSQL. Nothing finished is lost or trained twice, no
candidate is in flight twice, every FAIL says why, nothing is left running, and every stored
value is the table's (``benchmarks/chaos.py`` runs the same schedule at full size)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from _procs import TABLE

from archsearch.spaces import FlexiBertSmallSpace
from archsearch.spaces._table import load_table

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import chaos


def _args(storage: str | None) -> argparse.Namespace:
    return argparse.Namespace(
        workers=6,
        trials=36,
        duration=0.5,
        kill_fraction=0.5,
        kill_window=8.0,
        server_kill_at=4.0,
        outage=3.0,
        lease=6,
        heartbeat=1,
        timeout=150.0,
        seed=7,
        table=str(TABLE),
        storage=storage,
    )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_killed_workers_and_a_killed_server_lose_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        from _postgres import fresh_database

        with fresh_database(request.getfixturevalue("postgres_url")) as url:
            counts, values = _run(url, tmp_path)
    else:
        counts, values = _run(None, tmp_path)
    assert counts["completed in time"], counts
    # every scheduled fault happened before the study ended (else it proves nothing)
    assert counts["worker kills done"] == "3/3" and counts["server killed"], counts
    for key in chaos.GOAL_ZERO:
        assert counts[key] == 0, (key, counts)
    assert counts["distinct completed"] == 36, counts
    space = FlexiBertSmallSpace(table=str(TABLE), task="sst2")
    table = load_table(str(TABLE))
    for arch, value in values:  # every stored value is the table's score of its architecture
        assert value == pytest.approx(table.score(space.validate(arch), "sst2")), arch


def _run(storage: str | None, tmp: Path) -> tuple[dict[str, Any], list[tuple[dict, float]]]:
    counts = chaos.run(_args(storage), tmp)
    url = storage or f"sqlite:///{tmp / 'chaos.db'}"
    study = optuna.load_study(study_name="chaos", storage=url)
    values = [
        (dict(t.user_attrs["candidate"]["architecture"]), float(t.values[0]))
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and "candidate" in t.user_attrs
    ]
    return counts, values
