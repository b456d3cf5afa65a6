"""The statistics ``benchmarks/nas_table.py`` prints next to its medians."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import nas_table
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


def test_rows_tied_at_the_top_threshold_are_all_targets() -> None:
    from archsearch.server._replay_stats import top_targets

    # 10 rows, top 1% = the best row; three rows share the best score: three targets.
    scores = [0.9, 0.9, 0.9, 0.5, 0.6, 0.7, 0.4, 0.3, 0.2, 0.1]
    t = top_targets(scores, 1.0, "maximize")
    assert (t.threshold, t.k, t.count, t.best) == (0.9, 1, 3, 0.9)
    # Lower is better: the tie at the smallest perplexity.
    t = top_targets([5.0, 1.0, 1.0, 3.0], 25.0, "minimize")
    assert (t.threshold, t.k, t.count, t.best) == (1.0, 1, 2, 1.0)
    # With 3 targets among 10 rows random search needs 2 draws (P = 0.53), not 5 (one target).
    assert random_search_median(10, 3, evals=10) == 2
    assert random_search_median(10, 1, evals=10) == 5


def _tied_flexibert_table(path: Path) -> str:
    """Ten 2-layer rows whose three best tie at 0.9."""
    rows = []
    for i in range(10):
        heads, hidden, ff = [2, 4][i % 2], [128, 256][(i // 2) % 2], [512, 1024, 2048][i % 3]
        rows.append(
            {
                "l": 2,
                "a": [heads, 2],
                "h": [hidden, 128],
                "s": ["sdp", ["sdp", "wma"][i // 5]],
                "f": [ff, 512],
            }
        )
    scores = [0.9, 0.9, 0.9, 0.5, 0.6, 0.7, 0.4, 0.3, 0.2, 0.1]
    path.write_text(json.dumps({"model_dicts": rows, "accuracies": [{"SST-2": s} for s in scores]}))
    return str(path)


def test_nas_table_counts_ties_in_random_searchs_exact_median(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _tied_flexibert_table(tmp_path / "tied.json")
    code = nas_table.main(
        [
            "--table",
            table,
            "--loops",
            "random",
            "--seeds",
            "2",
            "--evals",
            "4",
            "--no-record",
            "--plot",
            str(tmp_path / "r.png"),
            "--parallel",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "top 1% = best 1 -> score >= 0.9000 (3 rows counting ties)" in out
    assert "| random (exact: uniform without replacement) | - | 2 |" in out
    assert (tmp_path / "r.png").stat().st_size > 0


def test_nas_table_judges_the_recommended_loop_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The goal's verdicts are printed for the recommended default (numeric-gp) before
    BOSHNAS's, against random search's exact median (ties counted: 3 of 10 rows)."""
    table = _tied_flexibert_table(tmp_path / "tied.json")
    args = ["--table", table, "--loops", "numeric-gp,random", "--seeds", "2", "--evals", "4"]
    code = nas_table.main(
        [*args, "--no-record", "--plot", str(tmp_path / "r.png"), "--parallel", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    verdicts = [line for line in out.splitlines() if "(goal <= " in line]
    assert verdicts[0].startswith("numeric-gp (recommended) ")
    assert " vs random (exact) " in verdicts[0]
    assert not any(line.startswith("BOSHNAS") for line in verdicts)
    # every verdict's ratio is its two medians' quotient, judged against its goal
    for line in verdicts:
        mine, theirs = (float(x) for x in re.findall(r"(\d+\.\d) vs [^:]+? (\d+\.\d)", line)[0])
        ratio = float(re.search(r"ratio (\d+\.\d\d)", line).group(1))  # type: ignore[union-attr]
        assert ratio == pytest.approx(mine / theirs, abs=0.006)
        goal = float(re.search(r"goal <= (\d\.\d\d)", line).group(1))  # type: ignore[union-attr]
        assert line.split(";")[0].endswith("pass" if mine <= goal * theirs else "FAIL")
