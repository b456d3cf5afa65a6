"""The BoTorch GP baseline over a library of embeddings (tiny, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from botorch.models import SingleTaskGP

from archsearch.surrogates._embedding_gp import (
    LOGEI_BELIEVER,
    QLOGEI,
    QLOGEI_JOINT,
    EmbeddingGPProposer,
)
from archsearch.surrogates._library_proposer import RANDOM


def _library(n: int = 200, dim: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, dim))


def _peak(x: np.ndarray) -> np.ndarray:
    return -np.sum((x - 0.4) ** 2, axis=1)


def test_random_before_n_init() -> None:
    library = _library(30)
    proposals = EmbeddingGPProposer(n_init=5).propose_with_kinds(
        library, [0, 1], [0.1, 0.2], [2], 4, np.random.default_rng(0)
    )
    rows = [p.index for p in proposals]
    assert len(set(rows)) == 4 and not set(rows) & {0, 1, 2}
    assert {p.kind for p in proposals} == {RANDOM}


def test_batch_is_distinct_free_and_near_the_optimum() -> None:
    library = _library()
    rng = np.random.default_rng(0)
    observed = rng.choice(200, 25, replace=False)
    excluded = [i for i in range(200) if i not in set(observed)][:20]
    proposals = EmbeddingGPProposer(n_init=10).propose_with_kinds(
        library, observed, _peak(library[observed]), excluded, 6, rng
    )
    rows = [p.index for p in proposals]
    assert len(rows) == 6 == len(set(rows))
    assert not set(rows) & (set(observed) | set(excluded))
    assert {p.kind for p in proposals} == {QLOGEI}
    # On a smooth bowl, the first greedy pick is better than the median unobserved row.
    free = np.setdiff1d(np.arange(200), np.concatenate([observed, excluded]))
    assert _peak(library[[rows[0]]])[0] > np.median(_peak(library[free]))


def test_fewer_free_rows_than_workers() -> None:
    library = _library(40)
    observed = np.arange(12)
    rows = EmbeddingGPProposer(n_init=10).propose(
        library, observed, _peak(library[observed]), np.arange(12, 38), 5, np.random.default_rng(1)
    )
    assert sorted(rows) == [38, 39]


def test_duplicate_embeddings_map_to_distinct_rows() -> None:
    library = _library(40)
    library[30] = library[31]  # two candidates with the same embedding
    observed = np.arange(12)
    rows = EmbeddingGPProposer(n_init=10).propose(
        library, observed, _peak(library[observed]), np.arange(12, 30), 10, np.random.default_rng(2)
    )
    assert sorted(rows) == list(range(30, 40))


def test_multi_objective_and_bad_input() -> None:
    library = _library(60)
    observed = np.arange(12)
    values = np.column_stack([_peak(library[observed]), np.abs(library[observed]).sum(axis=1)])
    proposer = EmbeddingGPProposer(directions=("maximize", "minimize"), n_init=10)
    rows = proposer.propose(library, observed, values, [], 3, np.random.default_rng(0))
    assert len(set(rows)) == 3 and not set(rows) & set(range(12))
    with pytest.raises(ValueError, match="direction"):
        EmbeddingGPProposer(directions=("up",))
    with pytest.raises(ValueError, match="k must be"):
        proposer.propose(library, observed, values, [], -1, np.random.default_rng(0))


def test_believer_takes_rows_in_flight_at_the_predicted_mean() -> None:
    """``pending="believer"``: the rows in flight join the GP at its predicted mean under the
    fitted hyperparameters, so its uncertainty there shrinks and nothing else moves."""
    library = _library(300, dim=2, seed=3)
    observed = np.arange(15)
    perf = _peak(library[observed])
    proposer = EmbeddingGPProposer(n_init=10, pending="believer", warm_start=True)
    assert proposer.uses_pending
    model = proposer.fit_model(library, library[observed], perf).eval()
    in_flight = np.array([100, 200])
    believer = proposer.believe(library, model, observed, in_flight)
    x = torch.as_tensor(library[in_flight], dtype=torch.float64)
    before, after = model.posterior(x), believer.posterior(x)
    assert torch.allclose(after.mean, before.mean, atol=1e-6)
    assert (after.variance < 0.75 * before.variance).all()
    assert believer.likelihood.noise.item() == model.likelihood.noise.item()  # no refit
    proposals = proposer.propose_with_kinds(
        library, observed, perf, in_flight, 3, np.random.default_rng(0), pending_idx=in_flight
    )
    rows = [p.index for p in proposals]
    assert len(set(rows)) == 3 and not set(rows) & (set(observed) | set(in_flight))
    assert {p.kind for p in proposals} == {LOGEI_BELIEVER}
    free = np.setdiff1d(np.arange(300), np.concatenate([observed, in_flight]))
    assert _peak(library[[rows[0]]])[0] > np.quantile(_peak(library[free]), 0.9)
    with pytest.raises(ValueError, match="pending must be one of"):
        EmbeddingGPProposer(pending="fantasize")


def test_power_outcome_warps_a_long_tail_and_keeps_the_order() -> None:
    """``outcome="power"``: standardised, Yeo-Johnson warped, standardised again. A long tail of
    poor rows is pulled in (the best rows spread apart), the order is kept; the default is the
    plain standardisation; fewer than three distinct values are only standardised."""
    rng = np.random.default_rng(0)
    # Like negated perplexities: most rows near the best, a few far below.
    performance = -np.concatenate([rng.uniform(24, 30, 20), rng.uniform(60, 75, 4)])
    plain = EmbeddingGPProposer().scale(performance)[:, 0].numpy()
    np.testing.assert_allclose(plain, (performance - performance.mean()) / performance.std(ddof=1))
    warped = EmbeddingGPProposer(outcome="power").scale(performance)[:, 0].numpy()
    assert np.array_equal(np.argsort(warped, kind="stable"), np.argsort(plain, kind="stable"))
    assert abs(warped.mean()) < 1e-9 and warped.std(ddof=1) == pytest.approx(1.0)
    assert abs(scipy_skew(warped)) < abs(scipy_skew(plain))
    best = np.argsort(performance)[-20:]
    assert np.ptp(warped[best]) > np.ptp(plain[best])
    two = np.array([1.0, 2.0, 1.0, 2.0])
    np.testing.assert_allclose(
        EmbeddingGPProposer(outcome="power").scale(two), EmbeddingGPProposer().scale(two)
    )
    with pytest.raises(ValueError, match="outcome must be one of standardize, power"):
        EmbeddingGPProposer(outcome="rank")


def test_power_outcome_proposes_near_the_optimum() -> None:
    library = _library()
    rng = np.random.default_rng(0)
    observed = rng.choice(200, 25, replace=False)
    proposer = EmbeddingGPProposer(n_init=10, outcome="power")
    rows = proposer.propose(library, observed, _peak(library[observed]), [], 3, rng)
    free = np.setdiff1d(np.arange(200), observed)
    assert len(set(rows)) == 3 and not set(rows) & set(observed)
    assert _peak(library[[rows[0]]])[0] > np.median(_peak(library[free]))


def _mll(model: SingleTaskGP) -> float:
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model.train()
    out = model(*model.train_inputs)  # type: ignore[misc]
    return ExactMarginalLogLikelihood(model.likelihood, model)(out, model.train_targets).item()


def test_input_warp_learns_a_log_shaped_size() -> None:
    """``input_warp``: a Kumaraswamy warp per input, fitted with the kernel. A score that grows
    with the log of a size (1 to 1,000) gets a strong concave warp of that column and almost
    none of the other; the warped GP explains the data better and still proposes the best rows,
    also as a kriging believer (the warp's parameters carry over)."""
    from botorch.models.transforms.input import Normalize, Warp

    rng = np.random.default_rng(0)
    library = np.column_stack([rng.uniform(1, 1000, 300), rng.uniform(0, 1, 300)])

    def score(x: np.ndarray) -> np.ndarray:
        return np.log(x[:, 0]) - 0.5 * (x[:, 1] - 0.5) ** 2

    observed = rng.choice(300, 30, replace=False)
    warped = EmbeddingGPProposer(input_warp=True, warm_start=True)
    model = warped.fit_model(library, library[observed], score(library[observed]))
    plain = EmbeddingGPProposer().fit_model(library, library[observed], score(library[observed]))
    assert isinstance(model.input_transform, Warp)
    assert isinstance(plain.input_transform, Normalize)
    a = model.input_transform.concentration1.detach().numpy()  # type: ignore[operator]
    assert a[0] < 0.3 and 0.5 < a[1] < 2.0
    assert _mll(model) > _mll(plain)
    free = np.setdiff1d(np.arange(300), observed)
    rows = warped.propose(library, observed, score(library[observed]), [], 2, rng)
    assert (score(library[free]) < score(library[rows[:1]])[0]).mean() > 0.9
    believer = EmbeddingGPProposer(input_warp=True, pending="believer")
    proposals = believer.propose_with_kinds(
        library, observed, score(library[observed]), [5], 2, rng, pending_idx=np.array([5])
    )
    assert {p.kind for p in proposals} == {LOGEI_BELIEVER}
    assert (score(library[free]) < score(library[[proposals[0].index]])[0]).mean() > 0.9


def test_fit_iterations_caps_each_fit_and_warm_fits_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fit_iterations``: no fit runs more L-BFGS-B iterations than the cap, where the warp's
    uncapped fit runs many more; warm started, successive capped fits keep raising the
    likelihood of the same data (each goes on from the last)."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.optim.fit import fit_gpytorch_mll_scipy

    import archsearch.surrogates._embedding_gp as module

    steps: list[int] = []

    def counting(mll, **kwargs):  # type: ignore[no-untyped-def]
        result = fit_gpytorch_mll_scipy(mll, **kwargs)
        steps.append(result.step)
        return result

    def fit(mll, **kwargs):  # type: ignore[no-untyped-def]
        return fit_gpytorch_mll(mll, optimizer=counting, **kwargs)

    monkeypatch.setattr(module, "fit_gpytorch_mll", fit)
    rng = np.random.default_rng(0)
    library = np.column_stack([rng.uniform(1, 1000, 300), rng.uniform(0, 1, 300)])
    y = np.log(library[:, 0]) - 0.5 * (library[:, 1] - 0.5) ** 2
    observed = rng.choice(300, 40, replace=False)
    EmbeddingGPProposer(input_warp=True).fit_model(library, library[observed], y[observed])
    assert steps[-1] > 10
    steps.clear()
    capped = EmbeddingGPProposer(input_warp=True, warm_start=True, fit_iterations=3)
    likelihoods = []
    for _ in range(3):
        likelihoods.append(_mll(capped.fit_model(library, library[observed], y[observed])))
    assert steps and max(steps) <= 3
    assert likelihoods[0] < likelihoods[1] < likelihoods[2]


def scipy_skew(x: np.ndarray) -> float:
    from scipy.stats import skew

    return float(skew(x))


def test_joint_pending_counts_rows_in_flight_in_qlogei() -> None:
    """``pending="joint"``: the rows in flight are qLogEI's ``X_pending``. A free row with the
    same embedding as a row in flight adds nothing to the batch's improvement, so the joint
    pick avoids it; with ``ignore`` (rows in flight only kept out) the same model picks it."""
    library = _library(300, dim=2, seed=3)
    observed = np.arange(15)
    perf = _peak(library[observed])
    ignore = EmbeddingGPProposer(n_init=10)
    model = ignore.fit_model(library, library[observed], perf).eval()
    with torch.no_grad():
        mean = model.posterior(torch.as_tensor(library, dtype=torch.float64)).mean[:, 0]
    free = np.setdiff1d(np.arange(300), observed)
    top = int(free[int(torch.argmax(mean[free]))])
    twin = int(free[free != top][0])
    library[twin] = library[top]  # a free row that would repeat the row in flight
    in_flight = np.array([top])
    args = (library, observed, perf, in_flight, 1, np.random.default_rng(0))
    (blind,) = ignore.propose_with_kinds(*args, pending_idx=in_flight)
    assert blind.index == twin and blind.kind == QLOGEI
    joint = EmbeddingGPProposer(n_init=10, pending="joint")
    assert joint.uses_pending
    (pick,) = joint.propose_with_kinds(*args, pending_idx=in_flight)
    assert pick.index not in (top, twin) and pick.kind == QLOGEI_JOINT
    # Without rows in flight it is plain qLogEI: the same pick as ``ignore``.
    none = np.array([], dtype=np.int64)
    (alone,) = joint.propose_with_kinds(*args[:3], none, 1, np.random.default_rng(0))
    (plain,) = ignore.propose_with_kinds(*args[:3], none, 1, np.random.default_rng(0))
    assert alone.index == plain.index and alone.kind == QLOGEI
