"""``benchmarks/joint_table.py``'s replayed searches and interaction test, on synthetic tables
whose answers are known."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _joint_replay import _search, analyse
from joint_table import architectures, complete_part, data_choices

from archsearch.spaces import choice_label


def _table(interaction: bool, seed: int = 0) -> dict[str, Any]:
    """Scores rise with the architecture; with ``interaction``, odd architectures gain from
    the random subset, even ones lose, and the best pair is (5, random)."""
    rng = random.Random(seed)
    archs, datas = architectures(), data_choices(100)
    rows = []
    for s in (0, 1):
        for a in range(6):
            for d in range(3):
                effect = (0.03 if a % 2 else -0.03) * (d == 2) if interaction else 0.0
                score = 0.6 + 0.02 * a + effect + rng.gauss(0, 0.001)
                rows.append({"arch": a, "data": d, "seed": s, "score": score, "seconds": 1.0})
    settings = {"steps": 1, "batch_size": 1, "max_seq_length": 8, "learning_rate": 1.0}
    return {
        "task": "sst2",
        "settings": {**settings, "k": 100, "eval_subset": 0, "device": "cpu"},
        "architectures": archs,
        "data": datas,
        "data_labels": [choice_label(d) for d in datas],
        "seeds": [0, 1],
        "rows": rows,
    }


def test_every_strategy_orders_pairs_without_repeats() -> None:
    table = _table(interaction=True)
    for strategy in ("joint TPE", "joint random", "arch-then-data TPE"):
        order = _search(table, strategy, 0, 4)
        pairs = [(a, d) for a, d, _ in order]
        assert len(pairs) == len(set(pairs)) == 18, strategy  # every pair, once
    only = _search(table, "arch-only TPE", 0, 4)
    assert sorted(a for a, _, _ in only) == list(range(6))  # each architecture once
    assert {d for _, d, _ in only} == {0}  # always the default data


def test_arch_then_data_tries_every_data_choice_on_its_best_architecture() -> None:
    table = _table(interaction=True)
    order = _search(table, "arch-then-data TPE", 3, 4)
    first = order[:4]
    assert {d for _, d, _ in first} == {0}
    best = max(first, key=lambda o: o[2])[0]
    assert {(a, d) for a, d, _ in order[4:6]} == {(best, 1), (best, 2)}


def test_the_anova_sees_an_interaction_only_where_there_is_one() -> None:
    def p_interaction(text: str) -> float:
        (line,) = [ln for ln in text.splitlines() if ln.startswith("| interaction |")]
        return float(line.split("|")[4])

    assert p_interaction(analyse(_table(interaction=True))) < 1e-6
    assert p_interaction(analyse(_table(interaction=False))) > 1e-3


def test_an_interrupted_build_keeps_its_complete_architectures() -> None:
    table = _table(interaction=False)
    table["rows"] = [r for r in table["rows"] if not (r["arch"] == 2 and r["seed"] == 1)]
    part = complete_part(table)
    assert len(part["architectures"]) == 5 and len(part["rows"]) == 30
    assert {r["arch"] for r in part["rows"]} == set(range(5))
