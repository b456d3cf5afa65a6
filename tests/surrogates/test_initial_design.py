"""The library proposers' initial design: random rows, or a greedy maximin design (``init``)."""

from __future__ import annotations

import numpy as np
import pytest

from archsearch.search import LOOPS
from archsearch.spaces import SpecError
from archsearch.surrogates._boshnas import BoshnasProposer
from archsearch.surrogates._embedding_gp import EmbeddingGPProposer
from archsearch.surrogates._library_proposer import RANDOM, maximin_rows


def test_maximin_takes_the_row_farthest_from_those_taken() -> None:
    line = np.arange(11, dtype=float)[:, None]  # rows 0..10 on a line
    free = np.ones(11, dtype=bool)
    free[0] = False  # observed or in flight
    rows = maximin_rows(line, free, 2, np.random.default_rng(0))
    assert rows == [10, 5]  # the far end, then the middle of the widest gap


def test_maximin_scales_each_column_and_draws_ties() -> None:
    # Column 1 spans 1000 times column 0. Scaled, row 1 is 1 from the taken rows and row 2 is
    # 0.1 from row 3; unscaled, row 2 would be 100 away against row 1's 1.
    rows = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 900.0], [0.0, 1000.0]])
    free = np.array([False, True, True, False])
    assert maximin_rows(rows, free, 1, np.random.default_rng(0)) == [1]
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1000.0], [1.0, 1000.0], [0.5, 500.0]])
    # Nothing taken: the first row is drawn, then the farthest from it.
    drawn = {
        tuple(maximin_rows(corners, np.ones(5, dtype=bool), 2, np.random.default_rng(s)))
        for s in range(20)
    }
    assert len({first for first, _ in drawn}) > 1
    opposite = {0: 3, 3: 0, 1: 2, 2: 1}
    assert all(second == opposite[first] for first, second in drawn if first in opposite)


@pytest.mark.parametrize("proposer", [EmbeddingGPProposer, BoshnasProposer])
def test_maximin_design_avoids_rows_in_flight_and_is_a_function_of_the_call(
    proposer: type[EmbeddingGPProposer] | type[BoshnasProposer],
) -> None:
    library = np.random.default_rng(0).uniform(size=(300, 4))
    observed, running = [0, 1], [2, 3]
    p = proposer(n_init=8, init="maximin")

    def design(seed: int) -> list[int]:
        out = p.propose_with_kinds(
            library, observed, [0.1, 0.2], running, 3, np.random.default_rng(seed),
            random_in_flight=2,
        )  # fmt: skip
        assert {q.kind for q in out} == {RANDOM}
        return [q.index for q in out]

    rows = design(0)
    assert len(set(rows)) == 3 and not set(rows) & {0, 1, 2, 3}
    assert design(0) == rows == design(1)  # continuous rows: no ties to draw
    # Each row is at least as far from the rows before it as any free row is.
    taken = [0, 1, 2, 3]
    scaled = (library - library.min(axis=0)) / np.ptp(library, axis=0)
    for row in rows:
        gap = np.linalg.norm(scaled[:, None] - scaled[taken][None], axis=2).min(axis=1)
        gap[taken] = -1
        assert gap[row] == pytest.approx(gap.max())
        taken.append(row)


def test_bad_init_is_refused() -> None:
    with pytest.raises(ValueError, match="init must be one of random, maximin"):
        EmbeddingGPProposer(init="sobol")
    with pytest.raises(SpecError, match="init must be one of random, maximin"):
        LOOPS["numeric-gp"](0, 1, {"init": "sobol"})
