"""The statistics ``benchmarks/nas_table.py`` prints next to its medians."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from nas_table import median_interval, random_search_median


def _simulated_first_hits(n_rows: int, n_top: int, draws: int, seed: int) -> np.ndarray:
    """Evaluations until the first top row, for random orders of the rows (without repeats)."""
    rng = np.random.default_rng(seed)
    is_top = np.zeros(n_rows, dtype=bool)
    is_top[:n_top] = True
    return np.array([int(np.argmax(is_top[rng.permutation(n_rows)])) + 1 for _ in range(draws)])


@pytest.mark.parametrize(("n_rows", "n_top"), [(620, 7), (100, 1), (50, 10)])
def test_exact_random_median_matches_simulated_random_search(n_rows: int, n_top: int) -> None:
    hits = _simulated_first_hits(n_rows, n_top, 20_000, seed=n_rows + n_top)
    exact = random_search_median(n_rows, n_top, evals=n_rows)
    assert abs(float(np.median(hits)) - exact) <= 1
    # The median's defining property, on the simulation: about half the searches hit by then.
    assert np.mean(hits <= exact) >= 0.49
    assert np.mean(hits <= exact - 1) < 0.51


def test_exact_random_median_on_the_flexibert_table_figures() -> None:
    # 620 scored rows, top 1% = the best 7: by hand, P(hit by 58) = 0.4989, P(hit by 59) = 0.5052.
    assert random_search_median(620, 7, evals=100) == 59
    # Every row is a top row: the first evaluation hits.
    assert random_search_median(10, 10, evals=100) == 1
    # Not reached within the budget: counted as budget + 1, as a failed seed is.
    assert random_search_median(620, 1, evals=100) == 101


def test_median_interval_brackets_the_median_and_narrows_with_more_seeds() -> None:
    rng = np.random.default_rng(0)
    few = list(rng.geometric(1 / 30, size=20))
    many = list(rng.geometric(1 / 30, size=320))
    low, high = median_interval(few)
    assert low <= float(np.median(few)) <= high
    low_many, high_many = median_interval(many)
    assert low_many <= float(np.median(many)) <= high_many
    assert high_many - low_many < high - low
    # Deterministic: the same seeds give the same interval.
    assert median_interval(few) == (low, high)
