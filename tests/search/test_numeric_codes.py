"""The library loops' ``numeric`` features: numbers as scaled numbers, the rest one-hot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from archsearch.search import EmbeddingGPLoop, make_loop
from archsearch.search._param_codes import ParamCodes
from archsearch.spaces import RowTableSpace, SpecError

#: Decoder rows: 2 or 3 layers, a per-layer width with many values, a two-valued flag.
ROWS = [
    {"n_layer": 2, "d_inner": [640, 1871], "act": "gelu", "bias": True},
    {"n_layer": 3, "d_inner": [800, 1071, 1200], "act": "relu", "bias": False},
    {"n_layer": 2, "d_inner": [1871, 640], "act": "relu", "bias": True},
    {"n_layer": 3, "d_inner": [1000, 640, 1500], "act": "gelu", "bias": False},
    {"n_layer": 3, "d_inner": [700, 900, 1300], "act": "gelu", "bias": True},
]


def test_numbers_keep_their_order_and_missing_layers_get_an_indicator() -> None:
    space = RowTableSpace(ROWS)
    codes = ParamCodes([space.raw_feature_params(a) for a in ROWS])
    x = codes.transform([space.raw_feature_params(a) for a in ROWS])
    # Numbers: d_inner.0, d_inner.1, d_inner.2 (+ its absent flag); two-valued n_layer, the
    # strings and the booleans are one-hot (2 columns each).
    assert sorted(codes.numeric) == ["d_inner.0", "d_inner.1", "d_inner.2"]
    assert sorted(codes.categorical) == ["act", "bias", "n_layer"]
    assert x.shape == (5, codes.width) == (5, 3 + 1 + 3 * 2)
    d0 = x[:, 0]  # d_inner.0 scaled over 640..1871
    np.testing.assert_allclose(d0, (np.array([640, 800, 1871, 1000, 700]) - 640) / (1871 - 640))
    # Order is kept: 800 is nearer 640 than 1871 is (a one-hot code cannot say so).
    assert abs(d0[1] - d0[0]) < abs(d0[2] - d0[0])
    # The third layer: a value where rows have it, 0 and the absent flag where they do not.
    third, absent = x[:, 2], x[:, 3]
    np.testing.assert_array_equal(absent, [1.0, 0.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(third, [0.0, 0.0, 0.0, 1.0, 1 / 3])
    # One one-hot value per categorical parameter.
    np.testing.assert_array_equal(x[:, 4:].sum(axis=1), np.full(5, 3.0))


def test_rows_outside_the_library_are_coded_with_its_scales() -> None:
    codes = ParamCodes([{"w": 1.0}, {"w": 2.0}, {"w": 3.0}, {"c": "a", "w": 2.0}])
    x = codes.transform([{"w": 5.0, "c": "unseen"}])
    # w scaled by the library's range (beyond 1), an unknown string: all zeros.
    np.testing.assert_allclose(x, [[2.0, 0.0, 0.0]])


def test_the_library_serves_numeric_features_to_the_loop(tmp_path: Path) -> None:
    space = RowTableSpace(ROWS)
    loop = make_loop("embedding-gp", 0, 1, {"features": "numeric"})
    assert isinstance(loop, EmbeddingGPLoop)
    loop.cache_root = tmp_path
    lib = loop.library(space)
    x = lib.features("numeric")
    assert x.shape == (5, 10)
    # Unbinned values (``raw_feature_params``) between the extremes, not one-hot codes.
    assert x[:, 0].min() == 0.0 and x[:, 0].max() == 1.0
    assert len(np.unique(x[:, 0])) == 5
    with pytest.raises(SpecError, match="unknown feature kind"):
        make_loop("embedding-gp", 0, 1, {"features": "numbers"})
    # Rows without graphs have no embedding: ``embedding+numeric`` is the numeric codes alone.
    np.testing.assert_array_equal(lib.features("embedding+numeric"), x)


def test_numeric_gp_is_the_gp_with_the_chosen_defaults() -> None:
    """``numeric-gp``: numeric features, warm starts, Yeo-Johnson warped scores and warped
    inputs with capped fits, rows in flight as qLogEI's ``X_pending``, a maximin initial
    design, unless the study says otherwise; a launch on a table space accepts it, a bad
    option is refused."""
    from _procs import TABLE

    from archsearch.search import NumericGPLoop
    from archsearch.server._spec import SearchSpec

    loop = make_loop("numeric-gp", 0, 1, None)
    assert isinstance(loop, NumericGPLoop) and loop.name == "numeric-gp"
    assert loop.features == "numeric"
    assert loop.own_options == {
        "warm_start": True,
        "outcome": "power",
        "input_warp": True,
        "fit_iterations": 100,
        "pending": "joint",
        "init": "maximin",
    }
    proposer = loop.make_proposer(["maximize"])
    assert proposer.outcome == "power" and proposer.pending == "joint" and proposer.warm_start
    assert proposer.init == "maximin"
    assert proposer.input_warp and proposer.fit_iterations == 100
    other = make_loop(
        "numeric-gp",
        0,
        1,
        {"pending": "believer", "features": "both", "outcome": "standardize", "input_warp": False},
    )
    assert other.features == "both" and other.own_options["pending"] == "believer"
    assert other.make_proposer(["maximize"]).outcome == "standardize"
    assert not other.make_proposer(["maximize"]).input_warp
    spec = SearchSpec.from_dict(
        {
            "name": "x",
            "space": "flexibert-small",
            "space_options": {"table": TABLE},
            "loop": "numeric-gp",
            "n_trials": 3,
        }
    )
    assert spec.loop == "numeric-gp"
    with pytest.raises(SpecError, match=r"loop_options\.pending|pending"):
        make_loop("numeric-gp", 0, 1, {"pending": "fantasize"})


def test_totals_add_each_layer_groups_sum_and_mean() -> None:
    """``numeric+totals``: per-layer numbers (names equal but for digits) get their sum and
    mean over the layers a row has, min-max scaled; strings, single parameters and two-valued
    groups of numbers alike count by their values, not their count of distinct values."""
    space = RowTableSpace(ROWS)
    rows = [space.raw_feature_params(a) for a in ROWS]
    plain = ParamCodes(rows)
    codes = ParamCodes(rows, totals=True)
    assert list(codes.totals) == ["d_inner.#"]
    assert codes.totals["d_inner.#"][0] == ["d_inner.0", "d_inner.1", "d_inner.2"]
    x = codes.transform(rows)
    assert x.shape == (5, codes.width) == (5, plain.width + 2)
    np.testing.assert_array_equal(x[:, : plain.width], plain.transform(rows))
    sums = np.array([640 + 1871, 800 + 1071 + 1200, 1871 + 640, 1000 + 640 + 1500, 2900])
    means = sums / np.array([2, 3, 2, 3, 3])
    np.testing.assert_allclose(x[:, -2], (sums - sums.min()) / np.ptp(sums))
    np.testing.assert_allclose(x[:, -1], (means - means.min()) / np.ptp(means))
    # FlexiBERT-style names (``l0.hidden``): the digits may sit anywhere; two-valued widths
    # count; a lone numbered parameter and a group holding a string do not.
    layered = [
        {"l0.hidden": 128, "l1.hidden": 256, "l0.kind": "sdp", "l1.kind": "dft", "fc2": 3},
        {"l0.hidden": 256, "l0.kind": "sdp", "fc2": 4},
    ]
    totals = ParamCodes(layered, totals=True)
    assert list(totals.totals) == ["l#.hidden"]
    np.testing.assert_allclose(totals.transform(layered)[:, -2:], [[1.0, 0.0], [0.0, 1.0]])


def test_the_gp_loop_takes_the_totals_and_the_power_outcome(tmp_path: Path) -> None:
    space = RowTableSpace(ROWS)
    loop = make_loop("numeric-gp", 0, 1, {"features": "numeric+totals", "outcome": "power"})
    loop.cache_root = tmp_path
    lib = loop.library(space)
    assert lib.features("numeric+totals").shape == (5, lib.features("numeric").shape[1] + 2)
    assert loop.own_options["outcome"] == "power"
    with pytest.raises(SpecError, match="outcome"):
        make_loop("numeric-gp", 0, 1, {"outcome": "log"})


def test_the_gp_loops_take_an_input_warp() -> None:
    loop = make_loop("embedding-gp", 0, 1, {"input_warp": True})
    proposer = loop.make_proposer(["maximize"])
    assert proposer.input_warp and proposer.outcome == "standardize"  # the defaults stay
    assert not make_loop("embedding-gp", 0, 1).make_proposer(["maximize"]).input_warp
    with pytest.raises(SpecError, match="input_wrap"):
        make_loop("numeric-gp", 0, 1, {"input_wrap": True})


def test_the_gp_loops_take_a_fit_iteration_cap() -> None:
    loop = make_loop("numeric-gp", 0, 1, {"input_warp": True, "fit_iterations": 100})
    assert loop.make_proposer(["maximize"]).fit_iterations == 100
    assert make_loop("embedding-gp", 0, 1).make_proposer(["maximize"]).fit_iterations is None
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(SpecError, match="fit_iterations"):
            make_loop("embedding-gp", 0, 1, {"fit_iterations": bad})
