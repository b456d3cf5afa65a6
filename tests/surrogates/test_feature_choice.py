"""Choosing features by leave-one-out rank correlation, and BOSHNAS's kriging believer."""

from __future__ import annotations

import numpy as np
import pytest

from archsearch.surrogates import BoshnasProposer, choose_features, loo_spearman

FAST = {"max_epochs": 30, "warm_max_epochs": 5}


def _data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    performance = signal[:, 0] - 0.5 * signal[:, 1] ** 2 + 0.3 * signal[:, 2]
    return signal, noise, performance


def test_the_features_that_explain_the_scores_are_chosen() -> None:
    signal, noise, y = _data()
    rows = np.arange(40)
    choice = choose_features({"noise": noise, "signal": signal}, rows, y[rows])
    assert choice.kind == "signal"
    assert choice.scores["signal"] > 0.5 > choice.scores["noise"]
    # Every feature set is scored; a tie goes to the earlier one.
    tie = choose_features({"a": signal, "b": signal.copy()}, rows, y[rows])
    assert tie.kind == "a" and tie.scores["a"] == tie.scores["b"]


def test_leave_one_out_is_undefined_for_constant_features_or_scores() -> None:
    signal, _, y = _data(20)
    assert loo_spearman(np.ones((20, 3)), y) == -1.0
    assert loo_spearman(signal, np.zeros(20)) == -1.0
    with pytest.raises(ValueError, match="no candidate"):
        choose_features({}, np.arange(3), y[:3])


def test_leave_one_out_predictions_do_not_see_their_own_score() -> None:
    # Scores that are pure noise: a method that leaked each point's own score into its
    # prediction would correlate strongly; honest leave-one-out does not.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 4))
    assert loo_spearman(x, rng.normal(size=60)) < 0.4


def _library(n: int = 120, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, size=(n, dim))


def test_believer_fits_the_rows_in_flight_with_their_predicted_scores() -> None:
    library = _library()
    observed = np.arange(8)
    perf = -np.sum((library[observed] - 0.3) ** 2, axis=1)
    rng = np.random.default_rng(0)
    believer = BoshnasProposer(n_init=4, surrogate_options=FAST, pending="believer")
    ignore = BoshnasProposer(n_init=4, surrogate_options=FAST)
    assert believer.uses_pending and not ignore.uses_pending
    pending = np.arange(8, 11)
    for proposer in (believer, ignore):
        proposer.propose_with_kinds(library, observed, perf, [], 1, rng)  # a first fit
        (p,) = proposer.propose_with_kinds(library, observed, perf, [], 1, rng, pending_idx=pending)
        assert p.index not in set(pending.tolist()) | set(observed.tolist())
    assert believer.last_fit is not None and believer.last_fit.n == 8 + 3
    assert ignore.last_fit is not None and ignore.last_fit.n == 8
    with pytest.raises(ValueError, match="pending must be one of"):
        BoshnasProposer(pending="liar")
    with pytest.raises(ValueError, match="pending_idx must be library rows"):
        believer.propose_with_kinds(library, observed, perf, [], 1, rng, pending_idx=[500])
