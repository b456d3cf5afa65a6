"""BOSHNAS: NPN moment matching, the surrogate, GOBI and batch proposals (tiny, seeded)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from archsearch.surrogates._boshnas import (
    DIVERSITY,
    EXPLOITATION,
    UNCERTAINTY,
    BoshnasProposer,
    exploitation_streak,
)
from archsearch.surrogates._boshnas_surrogate import BoshnasSurrogate
from archsearch.surrogates._gobi import (
    gobi,
    library_bounds,
    nearest_free_rows,
    optimise_acquisition,
)
from archsearch.surrogates._library_proposer import RANDOM, chebyshev_performance
from archsearch.surrogates._npn import NPNLinear, NPNReLU, NPNSigmoid, heteroscedastic_nll


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These nets are tiny: intra-op threads only add synchronisation, which on a loaded
    # machine costs 10-30x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Few epochs keep every fit here well under a second.
FAST = {"max_epochs": 60}
FAST_GOBI = {"max_iterations": 40}


# ---------------------------------------------------------------------------- NPN
def _layer_with_spread(generator: torch.Generator) -> NPNLinear:
    layer = NPNLinear(4, 3, generator)
    with torch.no_grad():
        # Larger weight variances than the initialisation, so the test sees them matter.
        layer.weight_var_raw.copy_(torch.log(torch.expm1(0.02 + 0.05 * torch.rand(4, 3))))
        layer.bias_mean.copy_(torch.tensor([0.3, -0.2, 0.0]))
        layer.bias_var_raw.copy_(torch.log(torch.expm1(torch.tensor([0.01, 0.02, 0.03]))))
    return layer


def _sample_layer(layer: NPNLinear, x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    w = layer.weight_mean + layer.weight_var.sqrt() * torch.randn(n, 4, 3, generator=g)
    b = layer.bias_mean + layer.bias_var.sqrt() * torch.randn(n, 3, generator=g)
    return torch.einsum("ni,nij->nj", x, w) + b


def test_npn_linear_relu_moments_match_monte_carlo() -> None:
    g = torch.Generator().manual_seed(0)
    layer = _layer_with_spread(g)
    x_mean = torch.tensor([[0.5, -1.0, 2.0, 0.1]])
    x_var = torch.tensor([[0.2, 0.1, 0.3, 0.05]])
    n = 200_000
    x = x_mean + x_var.sqrt() * torch.randn(n, 4, generator=g)
    with torch.no_grad():
        pre = _sample_layer(layer, x, n, g)
        mean, var = layer((x_mean, x_var))
    # The linear moments are exact for independent inputs and weights.
    assert torch.allclose(mean[0], pre.mean(0), atol=0.02)
    assert torch.allclose(var[0], pre.var(0), rtol=0.03)

    # ReLU moment matching is exact for a Gaussian input: a deterministic x makes the
    # pre-activation exactly Gaussian.
    x_fixed = x_mean.expand(n, 4)
    with torch.no_grad():
        relu = torch.relu(_sample_layer(layer, x_fixed, n, g))
        relu_mean, relu_var = NPNReLU()(layer((x_mean, None)))
    assert torch.allclose(relu_mean[0], relu.mean(0), atol=0.01)
    assert torch.allclose(relu_var[0], relu.var(0), rtol=0.03, atol=1e-3)


@pytest.mark.parametrize(("m", "s"), [(0.0, 1.0), (1.0, 0.5), (-2.0, 2.0), (0.5, 0.05)])
def test_npn_sigmoid_matches_monte_carlo_within_probit_error(m: float, s: float) -> None:
    g = torch.Generator().manual_seed(1)
    samples = torch.sigmoid(m + math.sqrt(s) * torch.randn(200_000, generator=g))
    mean, var = NPNSigmoid()((torch.tensor([m]), torch.tensor([s])))
    assert abs(float(mean) - float(samples.mean())) < 0.003
    # The reference's closed form for E[sigmoid²] is coarser: within 0.025 absolute.
    assert abs(float(var) - float(samples.var())) < 0.025


def test_heteroscedastic_nll_by_hand() -> None:
    # 0.5·(10·(0.5 − 0)²/0.25 + log 0.25) = 0.5·(10 − 1.3863) = 4.3069
    value = heteroscedastic_nll(torch.tensor([0.5]), torch.tensor([0.25]), torch.tensor([0.0]))
    assert float(value) == pytest.approx(0.5 * (10 - math.log(4)), abs=1e-5)


# ---------------------------------------------------------------------------- surrogate
def test_targets_follow_the_reference_transform() -> None:
    surrogate = BoshnasSurrogate(1)
    # bound 1: losses 0.5, 0.2, 0.1, max 0.5
    assert surrogate.targets(np.array([0.5, 0.8, 0.9])) == pytest.approx([1.0, 0.4, 0.2])
    assert surrogate.to_performance(np.array([0.4])) == pytest.approx([0.8])
    derived = BoshnasSurrogate(1, performance_bound=None)
    # bound = 2 + 0.5·(2 − 0) = 3: losses 3, 2, 1
    assert derived.targets(np.array([0.0, 1.0, 2.0])) == pytest.approx([1, 2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="performance_bound"):
        surrogate.targets(np.array([0.5, 1.5]))


def _wave(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.3 * np.sin(3 * x[:, 0]) * np.cos(x[:, -1])


@pytest.mark.parametrize("dim", [1, 2])
def test_surrogate_fits_a_smooth_function(dim: int) -> None:
    rng = np.random.default_rng(dim)
    x = rng.uniform(-1, 1, size=(80, dim))
    surrogate = BoshnasSurrogate(dim, seed=0, **FAST)  # type: ignore[arg-type]
    report = surrogate.fit(x, _wave(x))
    assert not report.warm
    test_x = rng.uniform(-1, 1, size=(200, dim))
    mean, epistemic, aleatoric = surrogate.predict(test_x)
    error = np.abs(surrogate.to_performance(mean) - _wave(test_x))
    spread = np.ptp(_wave(test_x))
    assert error.mean() < 0.1 * spread, error.mean()
    assert (epistemic >= 0).all() and (aleatoric >= 0).all()


def test_epistemic_uncertainty_is_larger_away_from_the_data() -> None:
    # Data in two clusters at the ends of the library's range; the gap between them is far from
    # every observation but inside the box GOBI searches. (Beyond the data's hull the teacher's
    # sigmoid saturates and MC-dropout spread can shrink: see the module docstring.)
    rng = np.random.default_rng(0)
    library = rng.uniform(-1, 1, size=(500, 1))
    x = rng.uniform(0.5, 1, size=(40, 1)) * rng.choice([-1, 1], size=(40, 1))
    surrogate = BoshnasSurrogate(
        1,
        seed=0,
        performance_bound=None,
        input_center=library.mean(axis=0),
        input_scale=library.std(axis=0),
        **FAST,  # type: ignore[arg-type]
    )
    surrogate.fit(x, _wave(x))
    near = surrogate.predict(x)[1]
    far = surrogate.predict(np.linspace(-0.2, 0.2, 21)[:, None])[1]
    assert far.mean() > 1.1 * near.mean(), (near.mean(), far.mean())


def test_fit_is_deterministic_and_warm_starts() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(30, 2))
    first, second = (BoshnasSurrogate(2, seed=5, **FAST) for _ in range(2))  # type: ignore[arg-type]
    assert not first.fit(x, _wave(x)).warm
    second.fit(x, _wave(x))
    assert np.array_equal(first.predict(x)[0], second.predict(x)[0])
    more = np.vstack([x, rng.uniform(-1, 1, size=(2, 2))])
    report = first.fit(more, _wave(more))
    assert report.warm and report.n == 32


def test_acquisition_is_differentiable_and_adds_aleatoric_on_request() -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, size=(30, 2))
    surrogate = BoshnasSurrogate(2, seed=0, **FAST)  # type: ignore[arg-type]
    surrogate.fit(x, _wave(x))
    point = torch.zeros(3, 2, requires_grad=True)
    with surrogate.frozen():
        plain = surrogate.acquisition(point, use_aleatoric=False)
        (grad,) = torch.autograd.grad(plain.sum(), point)
        with_al = surrogate.acquisition(point, use_aleatoric=True)
    mean, epistemic, aleatoric = surrogate.predict(np.zeros((3, 2)))
    assert plain.detach().numpy() == pytest.approx(mean - 0.5 * epistemic, abs=1e-6)
    assert with_al.detach().numpy() == pytest.approx(mean - 0.5 * (epistemic + aleatoric), abs=1e-6)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.requires_grad for p in surrogate.npn.parameters())  # unfrozen afterwards


# ---------------------------------------------------------------------------- GOBI
def _quadratic(center: torch.Tensor, weight: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda x: ((x - center) ** 2 * weight).sum(dim=-1)


def test_gobi_lowers_the_acquisition_and_respects_the_box() -> None:
    rng = np.random.default_rng(0)
    library = rng.uniform(-1, 1, size=(300, 3))
    lower, upper = library_bounds(library)
    starts = library[:6]
    inside = optimise_acquisition(
        _quadratic(torch.tensor([0.2, -0.3, 0.1]), torch.ones(3)), starts, lower, upper
    )
    assert (inside.values <= inside.start_values + 1e-9).all()
    assert inside.values.max() < 1e-3  # all starts reach the minimum at the centre
    # A minimum outside the box: the optimum is clamped onto the box's face.
    outside = optimise_acquisition(
        _quadratic(torch.tensor([5.0, 0.0, 0.0]), torch.ones(3)), starts, lower, upper
    )
    assert outside.optima[:, 0] == pytest.approx(np.full(6, upper[0]), abs=1e-5)
    assert (outside.optima >= lower - 1e-6).all() and (outside.optima <= upper + 1e-6).all()


def test_batched_gobi_equals_one_start_at_a_time() -> None:
    # A separable quadratic has a diagonal Hessian, so the Hutchinson probe is exact and the
    # batch run must reproduce each single-start run.
    rng = np.random.default_rng(1)
    library = rng.uniform(-1, 1, size=(50, 2))
    lower, upper = library_bounds(library)
    acquisition = _quadratic(torch.tensor([0.3, 0.4]), torch.tensor([1.0, 4.0]))
    batch = optimise_acquisition(acquisition, library[:4], lower, upper)
    for k in range(4):
        single = optimise_acquisition(acquisition, library[k : k + 1], lower, upper)
        assert single.optima[0] == pytest.approx(batch.optima[k], abs=1e-6)
        assert single.iterations[0] == batch.iterations[k]


def test_nearest_free_rows_by_hand() -> None:
    library = np.array([[0.0], [1.0], [2.0], [3.0]])
    free = np.array([True, False, True, True])
    # 1.1 -> row 1 is excluded; row 2 (0.9) beats row 0 (1.1). 1.2 -> row 2 taken; row 0 (1.2).
    assert nearest_free_rows(np.array([[1.1], [1.2]]), library, free) == [2, 0]
    assert nearest_free_rows(np.array([[1.1], [1.2], [0.0], [0.0]]), library, free) == [2, 0, 3]


def test_gobi_returns_free_rows_nearest_to_the_optimum() -> None:
    rng = np.random.default_rng(2)
    library = rng.uniform(-1, 1, size=(400, 2))
    center = np.array([0.1, 0.2])
    nearest = np.argsort(np.abs(library - center).mean(axis=1))
    free = np.ones(400, dtype=bool)
    free[nearest[:3]] = False  # the three closest rows are observed or in flight
    rows, result = gobi(
        _quadratic(torch.tensor(center, dtype=torch.float32), torch.ones(2)),
        library,
        free,
        rng,
        n_starts=5,
    )
    assert (result.values < result.start_values).all()
    # Every start ends near the centre: the best optimum takes the nearest free row, the others
    # the next nearest ones (up to where each optimum stopped).
    assert rows[0] == nearest[3] and len(set(rows)) == 5
    assert set(rows) <= set(nearest[3:12].tolist())


# ---------------------------------------------------------------------------- history rules
def test_exploitation_streak_by_hand() -> None:
    values = [0.1, 0.2, 0.5, 0.4, 0.3, 0.6, 0.6, 0.1]
    kinds = [RANDOM, RANDOM, EXPLOITATION, EXPLOITATION, EXPLOITATION, EXPLOITATION, DIVERSITY,
             EXPLOITATION]  # fmt: skip
    # after init (2): 0.5 improves ->0; 0.4 ->1; 0.3 ->2; 0.6 improves ->0; 0.6 diversity ->0;
    # 0.1 ->1
    assert exploitation_streak(values, ["maximize"], kinds, n_init=2) == 1
    assert exploitation_streak(values[:5], ["maximize"], kinds[:5], n_init=2) == 2
    assert exploitation_streak([3.0, 2.0, 2.5], ["minimize"], None, n_init=1) == 1
    # Several objectives: a new non-dominated point resets, a dominated one counts.
    two = np.array([[1.0, 1.0], [2.0, 0.5], [1.5, 0.4], [0.5, 2.0]])
    assert exploitation_streak(two, ["maximize", "maximize"], None, n_init=1) == 0
    assert exploitation_streak(two[:3], ["maximize", "maximize"], None, n_init=1) == 1


def test_chebyshev_performance_by_hand() -> None:
    values = np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 20.0]])
    # maximise obj 0 (losses 1, 0, .5), minimise obj 1 (losses 0, 1, .5); w = (.5, .5)
    perf = chebyshev_performance(values, ["maximize", "minimize"], np.array([0.5, 0.5]), rho=0.1)
    assert perf == pytest.approx([-(0.5 + 0.05), -(0.5 + 0.05), -(0.25 + 0.05)])


# ---------------------------------------------------------------------------- proposals
def _library(n: int = 300, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, dim))


def _peak(library: np.ndarray) -> np.ndarray:
    return -np.sum((library - 0.35) ** 2, axis=1)


def _proposer(**kw: object) -> BoshnasProposer:
    kw.setdefault("n_init", 6)
    return BoshnasProposer(
        surrogate_options=FAST,
        gobi_options=FAST_GOBI,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("search", ["scan", "gobi"])
def test_propose_returns_distinct_free_rows_for_large_batches(search: str) -> None:
    library = _library()
    rng = np.random.default_rng(0)
    observed = rng.choice(300, 20, replace=False)
    in_flight = [i for i in range(300) if i not in set(observed)][:30]
    proposer = _proposer(n_starts=3, acquisition_search=search)
    proposals = proposer.propose_with_kinds(
        library, observed, _peak(library[observed]), in_flight, 15, rng
    )
    rows = [p.index for p in proposals]
    assert len(rows) == 15 == len(set(rows))
    assert not set(rows) & (set(observed) | set(in_flight))
    assert {p.kind for p in proposals} <= {EXPLOITATION, UNCERTAINTY, DIVERSITY}
    assert sum(p.kind == EXPLOITATION for p in proposals) >= 8  # p = 0.8 per slot


def test_scan_exploits_the_free_rows_best_on_the_acquisition() -> None:
    """Exploitation slots are taken first, from the free rows in acquisition order (lower is
    better, GOBI's sign), so they are exactly the best free rows."""
    library = _library(200)
    rng = np.random.default_rng(3)
    observed = rng.choice(200, 15, replace=False)
    in_flight = np.setdiff1d(np.arange(200), observed)[:40]
    proposer = _proposer(acquisition_search="scan")
    proposals = proposer.propose_with_kinds(
        library, observed, _peak(library[observed]), in_flight, 10, np.random.default_rng(5)
    )
    exploit = [p.index for p in proposals if p.kind == EXPLOITATION]
    assert len(exploit) >= 5
    assert proposer.surrogate is not None
    use_al = proposer.use_aleatoric(_peak(library[observed])[:, None], None)
    with proposer.surrogate.frozen(), torch.no_grad():
        acq = proposer.surrogate.acquisition(torch.as_tensor(library, dtype=torch.float32), use_al)
    free = np.setdiff1d(np.arange(200), np.concatenate([observed, in_flight]))
    best_free = free[np.argsort(acq.numpy()[free], kind="stable")]
    assert exploit == [int(r) for r in best_free[: len(exploit)]]
    with pytest.raises(ValueError, match="acquisition_search must be one of scan, gobi"):
        _proposer(acquisition_search="grid")


def test_propose_when_almost_everything_is_excluded() -> None:
    library = _library(60)
    observed = np.arange(20)
    excluded = np.arange(20, 57)  # three rows left: 57, 58, 59
    proposer = _proposer()
    rows = proposer.propose(
        library, observed, _peak(library[observed]), excluded, 5, np.random.default_rng(1)
    )
    assert sorted(rows) == [57, 58, 59]
    everything = np.arange(20, 60)
    assert proposer.propose(library, observed, _peak(library[observed]), everything, 4,
                            np.random.default_rng(1)) == []  # fmt: skip


def test_propose_is_random_before_n_init_and_validates_input() -> None:
    library = _library(50)
    proposals = _proposer().propose_with_kinds(
        library, [0, 1], [0.1, 0.2], [2, 3], 6, np.random.default_rng(0)
    )
    rows = [p.index for p in proposals]
    assert len(set(rows)) == 6 and not set(rows) & {0, 1, 2, 3}
    assert {p.kind for p in proposals} == {RANDOM}
    with pytest.raises(ValueError, match="observed_perf"):
        _proposer().propose(library, [0, 1], [0.1], [], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="excluded_idx"):
        _proposer().propose(library, [0], [0.1], [50], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="finite"):
        _proposer().propose(library, [0], [float("nan")], [], 1, np.random.default_rng(0))


def test_the_initial_design_counts_random_rows_in_flight() -> None:
    """n_init random rows in all: with 4 results of n_init 5 in, a call for 4 rows gets the one
    random row the design still lacks (and no surrogate fit); with that row in flight, 4
    model-based rows; below min_observed (3) every row is random."""
    library = _library(120)
    proposer = _proposer(n_init=5)
    assert proposer.min_observed == 3
    observed = [0, 1, 2, 3]
    values = _peak(library[observed])

    def kinds(in_flight: list[int], random_in_flight: int, obs: list[int] = observed) -> list[str]:
        proposals = proposer.propose_with_kinds(
            library, obs, _peak(library[obs]), in_flight, 4, np.random.default_rng(0),
            random_in_flight=random_in_flight,
        )  # fmt: skip
        rows = [p.index for p in proposals]
        assert len(set(rows)) == len(rows) and not set(rows) & (set(obs) | set(in_flight))
        return [p.kind for p in proposals]

    assert kinds([], 0) == [RANDOM]
    assert proposer.surrogate is None  # nothing fitted for it
    batch = kinds([10], 1)
    assert len(batch) == 4 and RANDOM not in batch
    assert proposer.surrogate is not None
    assert kinds([10, 11, 12], 3, [0, 1]) == [RANDOM] * 4  # 2 results: too few for a model
    # One worker: random until n_init results, then the model (the usual rule).
    for n in range(2, 7):
        (proposal,) = proposer.propose_with_kinds(
            library, list(range(n)), _peak(library[:n]), [], 1, np.random.default_rng(n)
        )
        assert (proposal.kind == RANDOM) == (n < 5), n
    with pytest.raises(ValueError, match="random_in_flight"):
        proposer.propose(library, observed, values, [], 1, np.random.default_rng(0),
                         random_in_flight=-1)  # fmt: skip


def test_multi_objective_proposals() -> None:
    library = _library(200)
    observed = np.arange(12)
    size = np.abs(library[observed]).sum(axis=1)
    values = np.column_stack([_peak(library[observed]), size])
    multi = _proposer(directions=("maximize", "minimize"))
    rows = multi.propose(library, observed, values, [12, 13], 4, np.random.default_rng(0))
    assert len(set(rows)) == 4 and not set(rows) & set(range(14))
    # Weight on the first objective only: the same batch as single-objective on it (the
    # surrogate's derived bound makes its targets invariant to the affine normalisation).
    concentrated = _proposer(directions=("maximize", "minimize")).propose(
        library, observed, values, [12, 13], 4, np.random.default_rng(7),
        weights=np.array([1.0, 0.0]),
    )  # fmt: skip
    single = _proposer().propose(
        library, observed, values[:, 0], [12, 13], 4, np.random.default_rng(7)
    )
    assert concentrated == single


def test_aleatoric_phase_follows_the_history() -> None:
    proposer = _proposer(n_init=2)
    values = [0.5, 0.6, 0.7, 0.1, 0.1, 0.1, 0.1]
    assert not proposer.use_aleatoric(np.array(values)[:, None], None)
    assert proposer.use_aleatoric(np.array([*values, 0.1])[:, None], None)


def _evaluations_to_find_best(proposer: BoshnasProposer | None, seed: int, budget: int) -> int:
    library = _library(150, 2, seed=seed)
    values = _peak(library)
    best = int(np.argmax(values))
    rng = np.random.default_rng(seed)
    observed: list[int] = []
    while len(observed) < budget:
        if proposer is None:
            free = np.setdiff1d(np.arange(150), observed)
            batch = [int(i) for i in rng.choice(free, 5, replace=False)]
        else:
            batch = proposer.propose(library, observed, values[observed], [], 5, rng)
        for row in batch:
            observed.append(row)
            if row == best:
                return len(observed)
    return budget


def test_boshnas_finds_the_optimum_faster_than_random() -> None:
    seeds = range(3)
    budget = 60
    found = [_evaluations_to_find_best(_proposer(n_init=10, seed=s), s, budget) for s in seeds]
    random = [_evaluations_to_find_best(None, s, budget) for s in seeds]
    # Random search needs (150 + 1)/2 ≈ 75 evaluations on average to hit one row of 150.
    assert np.mean(found) < np.mean(random), (found, random)
    assert np.mean(found) < 40, found
