"""The 1PL fit (worker/_irt.py): difficulties recovered from synthetic answers, the ability
estimate, bad input; and py-irt's fit of the same data, where py-irt is installed."""

from __future__ import annotations

import numpy as np
import pytest

from archsearch.worker._irt import estimate_ability, fit_1pl, fit_1pl_pyirt


def _synthetic(subjects: int, items: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(0, 1, subjects), rng.normal(0, 1, items)
    p = 1 / (1 + np.exp(-(theta[:, None] - b[None, :])))
    return (rng.random(p.shape) < p).astype(float), theta, b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_fit_recovers_difficulties(seed: int) -> None:
    responses, theta, b = _synthetic(60, 200, seed)
    ability, difficulty = fit_1pl(responses)
    assert np.corrcoef(difficulty, b)[0, 1] >= 0.9
    assert np.corrcoef(ability, theta)[0, 1] >= 0.9
    # the scale is the model's own: θ − b, not shifted by the fit
    assert abs(float(np.mean(difficulty) - np.mean(b))) < 0.5


def test_map_fit_handles_unanswered_and_all_correct_items() -> None:
    responses, _, b = _synthetic(40, 100, 3)
    responses[:, 0] = 1.0  # every subject right: finite, and the easiest item
    responses[::2, 1] = np.nan  # half the subjects never saw item 1
    _, difficulty = fit_1pl(responses)
    assert np.isfinite(difficulty).all()
    assert difficulty[0] == difficulty.min()
    assert np.corrcoef(difficulty[2:], b[2:])[0, 1] >= 0.85


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(3), "subjects x items"),
        (np.full((2, 2), np.nan), "no answer"),
        (np.array([[0.0, 2.0]]), "0 \\(wrong\\), 1"),
    ],
)
def test_map_fit_refuses_bad_responses(bad: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_1pl(bad)


def test_ability_estimate_follows_the_answers() -> None:
    rng = np.random.default_rng(0)
    b = rng.normal(0, 1, 1000)
    estimates = []
    for true in (-1.0, 0.0, 1.5):
        correct = rng.random(1000) < 1 / (1 + np.exp(-(true - b)))
        estimates.append(estimate_ability(b, correct))
    assert estimates == sorted(estimates)
    assert estimates[2] == pytest.approx(1.5, abs=0.3)
    # the N(0, 1) prior keeps a perfect record finite
    assert 0 < estimate_ability(b[:10], np.ones(10, bool)) < 5
    with pytest.raises(ValueError, match="one answer per difficulty"):
        estimate_ability(b[:3], np.ones(2, bool))


def test_pyirt_agrees_with_the_map_fit() -> None:
    pytest.importorskip("py_irt", reason="py-irt is optional (see worker/_irt.py)")
    responses, _, b = _synthetic(40, 60, 0)
    _, ours = fit_1pl(responses)
    _, theirs = fit_1pl_pyirt(responses, epochs=300)
    assert np.corrcoef(theirs, ours)[0, 1] >= 0.9
    assert np.corrcoef(theirs, b)[0, 1] >= 0.8
