"""Graph edit distance with the FlexiBERT costs, and Transformer2vec embeddings fitted to it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest

from archsearch.spaces import FlexiBertSpace, architecture_graph
from archsearch.surrogates import _ged, _transformer2vec
from archsearch.surrogates._embedding_fidelity import rank_fidelity
from archsearch.surrogates._ged import (
    LabelCosts,
    assignment_edit_distance,
    graph_edit_distance,
    pairwise_edit_distances,
)
from archsearch.surrogates._transformer2vec import Transformer2vec

SPACE = FlexiBertSpace()  # the paper's space (design_space_test.yaml)
LABELS = SPACE.graph_labels()

# A vocabulary for hand-built graphs: the spacer first, so a=1, b=2, c=3 and inserting or
# deleting any node has a positive cost that no cheaper substitution can tie with.
HAND_LABELS = ["", "a", "b", "c"]
METHODS = ["networkx", "assignment"]


def hand_graph(labels: list[str], edges: list[tuple[int, int]]) -> nx.DiGraph:
    graph = nx.DiGraph()
    for node, label in enumerate(labels):
        graph.add_node(node, label=label)
    graph.add_edges_from(edges)
    return graph


def sample_architectures(n: int, seed: int) -> dict[str, dict[str, Any]]:
    """``n`` distinct random architectures of the space, keyed by fingerprint."""
    rng = random.Random(seed)
    archs: dict[str, dict[str, Any]] = {}
    while len(archs) < n:
        arch = SPACE.sample(rng)
        archs[SPACE.fingerprint(arch)] = arch
    return archs


def sample_graphs(n: int, seed: int) -> dict[str, nx.DiGraph]:
    return {key: SPACE.graph(arch) for key, arch in sample_architectures(n, seed).items()}


# ----------------------------------------------------------------------------- GED


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # b -> c substituted: |2 - 3| = 1; both edges carried over.
        (hand_graph(["a", "b"], [(0, 1)]), hand_graph(["a", "c"], [(0, 1)]), 1.0),
        # a -> c substituted: |1 - 3| = 2 (cost is the gap in the vocabulary, not 1).
        (hand_graph(["a", "b"], [(0, 1)]), hand_graph(["c", "b"], [(0, 1)]), 2.0),
        # Insert node a (index 1) and its edge a->b (0.1); b->c is kept.
        (hand_graph(["b", "c"], [(0, 1)]), hand_graph(["a", "b", "c"], [(0, 1), (1, 2)]), 1.1),
        # Delete node a (1) and its two edges (0.2); b->c is kept.
        (
            hand_graph(["a", "b", "c"], [(0, 1), (0, 2), (1, 2)]),
            hand_graph(["b", "c"], [(0, 1)]),
            1.2,
        ),
        # Same nodes, one extra edge: 0.1.
        (
            hand_graph(["a", "b", "c"], [(0, 1), (1, 2)]),
            hand_graph(["a", "b", "c"], [(0, 1), (1, 2), (0, 2)]),
            0.1,
        ),
    ],
)
def test_hand_computed_costs(
    first: nx.DiGraph, second: nx.DiGraph, expected: float, method: _ged.GedMethod
) -> None:
    assert graph_edit_distance(first, second, HAND_LABELS, method=method) == pytest.approx(
        expected, abs=1e-9
    )
    assert graph_edit_distance(second, first, HAND_LABELS, method=method) == pytest.approx(
        expected, abs=1e-9
    )


def test_ged_symmetric_zero_on_identical_and_methods_agree() -> None:
    graphs = list(sample_graphs(12, seed=3).values())
    costs = LabelCosts(LABELS)
    for g in graphs[:4]:
        assert graph_edit_distance(g, g, costs) == 0.0
        assert graph_edit_distance(g, g.copy(), costs, method="assignment") == 0.0
    for first, second in zip(graphs[0::2], graphs[1::2], strict=True):
        forward = graph_edit_distance(first, second, costs)
        assert forward > 0
        assert graph_edit_distance(second, first, costs) == forward
        # The shortcut is the same number as networkx's first approximation, bit for bit.
        assert assignment_edit_distance(first, second, costs) == forward


def test_one_direction_is_not_symmetric_so_the_minimum_is_taken() -> None:
    # networkx's first approximation depends on argument order on FlexiBERT graphs (the LSA
    # breaks ties differently), which is why graph_edit_distance takes both directions.
    graphs = list(sample_graphs(20, seed=4).values())
    costs = LabelCosts(LABELS)
    prepared = [_ged.prepare_graph(g, costs) for g in graphs]
    gaps = []
    for first, second in zip(prepared[0::2], prepared[1::2], strict=True):
        forward = _ged._assignment_one_way(first, second)
        backward = _ged._assignment_one_way(second, first)
        gaps.append(abs(forward - backward))
        assert _ged.prepared_edit_distance(first, second) == round(min(forward, backward), 6)
    assert max(gaps) > 0


def test_larger_space_methods_agree_and_timeout_falls_back_to_the_same_value() -> None:
    labels = FlexiBertSpace(variant="large").graph_labels()
    big = {
        "l": 6,
        "o": ["sa", "c", "l", "sa", "c", "l"],
        "p": ["wma", "13", "dft", "sdp", "5", "dct"],
        "h": [512, 256, 128, 512, 256, 128],
        "n": [8, 4, 2, 8, 8, 4],
        "f": [[4096, 2048, 512], [1024], [2048, 2048], [512], [4096, 4096, 4096], [1024]],
    }
    small = {"l": 2, "o": ["sa", "c"], "p": ["sdp", "9"], "h": [256, 128], "n": [4, 2]}
    small["f"] = [[1024], [512, 512]]
    g1, g2 = architecture_graph(big), architecture_graph(small)
    reference = graph_edit_distance(g1, g2, labels, timeout=None)
    assert assignment_edit_distance(g1, g2, labels) == reference
    # A timeout too short for networkx's first descent: the equal shortcut answers.
    assert graph_edit_distance(g1, g2, labels, timeout=1e-9) == reference


def test_pairwise_matrix_is_symmetric_with_zero_diagonal() -> None:
    graphs = sample_graphs(5, seed=5)
    matrix = pairwise_edit_distances(graphs, LABELS, method="assignment")
    assert matrix.shape == (5, 5)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), 0.0)
    assert (matrix[~np.eye(5, dtype=bool)] > 0).all()


def test_bad_ged_input_names_the_problem() -> None:
    g = hand_graph(["a", "zzz"], [(0, 1)])
    with pytest.raises(ValueError, match="'zzz' is not in the label vocabulary"):
        graph_edit_distance(g, g, HAND_LABELS)
    unlabelled = nx.DiGraph([(0, 1)])
    with pytest.raises(ValueError, match="no 'label' attribute"):
        assignment_edit_distance(unlabelled, unlabelled, HAND_LABELS)
    with pytest.raises(ValueError, match="unknown GED method"):
        graph_edit_distance(g, g, HAND_LABELS, method="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        graph_edit_distance(g, g, HAND_LABELS, timeout=0)
    with pytest.raises(ValueError, match="non-empty list"):
        LabelCosts([])


# ----------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def archs30() -> dict[str, dict[str, Any]]:
    return sample_architectures(30, seed=0)


@pytest.fixture(scope="module")
def graphs30(archs30: dict[str, dict[str, Any]]) -> dict[str, nx.DiGraph]:
    return {key: SPACE.graph(arch) for key, arch in archs30.items()}


@pytest.fixture(scope="module")
def fitted(graphs30: dict[str, nx.DiGraph]) -> Transformer2vec:
    model = Transformer2vec(LABELS, partners=8, seed=0)
    model.fit(graphs30)
    return model


def test_fit_preserves_ged_order_on_held_out_pairs(
    fitted: Transformer2vec, graphs30: dict[str, nx.DiGraph]
) -> None:
    assert fitted.keys == list(graphs30)
    assert fitted.dim == 16
    assert fitted.vectors().shape == (30, 16)
    # A sample of the 435 pairs, not all of them: each graph with 8 partners.
    assert 30 * 8 // 2 <= len(fitted.trained_pairs) <= 30 * 8
    assert len(fitted.trained_pairs) < 435
    rho = rank_fidelity(fitted, graphs30, n_pairs=150, seed=1)
    assert rho > 0.9
    # Distances are in GED units: on trained pairs they match GED to a few percent.
    errors = []
    for a, b in sorted(fitted.trained_pairs):
        ged = fitted.ged_cache[(a, b)]
        errors.append(abs(np.linalg.norm(fitted.vector(a) - fitted.vector(b)) - ged) / ged)
    assert float(np.median(errors)) < 0.05


def test_ged_cache_means_nothing_is_computed_twice(
    graphs30: dict[str, nx.DiGraph], monkeypatch: pytest.MonkeyPatch
) -> None:
    subset = dict(list(graphs30.items())[:10])
    model = Transformer2vec(LABELS, partners=3, min_epochs=10, max_epochs=10)
    model.fit(subset)
    assert set(model.ged_cache) == set(model.trained_pairs)
    calls = []
    original = _transformer2vec.prepared_edit_distance

    def counting(*args: Any) -> float:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(_transformer2vec, "prepared_edit_distance", counting)
    model.fit(subset)
    assert calls == []
    keys = list(subset)
    assert model.graph_distance(keys[0], subset[keys[0]], keys[0], subset[keys[0]]) == 0.0
    assert calls == []


def test_fit_is_deterministic_given_the_seed(graphs30: dict[str, nx.DiGraph]) -> None:
    subset = dict(list(graphs30.items())[:12])
    runs = []
    for seed in (7, 7, 8):
        model = Transformer2vec(LABELS, partners=4, seed=seed, min_epochs=20, max_epochs=20)
        model.fit(subset)
        runs.append(model.vectors())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_embed_new_places_a_new_graph_next_to_its_nearest_by_ged(
    fitted: Transformer2vec,
    archs30: dict[str, dict[str, Any]],
    graphs30: dict[str, nx.DiGraph],
) -> None:
    # Each new architecture is a fitted one with the last FF width of its last layer changed:
    # its nearest fitted graph by GED is that one, by a wide margin.
    before = fitted.vectors(graphs30)
    base_keys = list(graphs30)[:5]
    new: dict[str, nx.DiGraph] = {}
    for key in base_keys:
        arch = json.loads(json.dumps(archs30[key]))
        last = arch["f"][-1]
        last[-1] = 512 if last[-1] == 1024 else 1024
        new[SPACE.fingerprint(arch)] = SPACE.graph(arch)
    vectors = fitted.embed_new(new)
    assert vectors.shape == (5, 16)
    fitted_vectors = fitted.vectors(graphs30)
    for base, (key, graph), vector in zip(base_keys, new.items(), vectors, strict=True):
        geds = [fitted.graph_distance(key, graph, k, g) for k, g in graphs30.items()]
        assert list(graphs30)[int(np.argmin(geds))] == base
        nearest = list(graphs30)[int(np.argmin(np.linalg.norm(fitted_vectors - vector, axis=1)))]
        assert nearest == base
        assert key in fitted
        np.testing.assert_array_equal(fitted.vector(key), vector)
    # Anchors stay frozen, and embedding known keys again changes nothing.
    np.testing.assert_array_equal(fitted.vectors(graphs30), before)
    np.testing.assert_array_equal(fitted.embed_new(new), vectors)
    assert len(fitted) == 35


def test_save_load_round_trip(fitted: Transformer2vec, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "t2v.npz")
    loaded = Transformer2vec.load(path)
    assert loaded.keys == fitted.keys
    np.testing.assert_array_equal(loaded.vectors(), fitted.vectors())
    assert loaded.anchor_keys == fitted.anchor_keys
    assert loaded.trained_pairs == fitted.trained_pairs
    assert loaded.ged_cache == fitted.ged_cache
    assert loaded.labels == fitted.labels
    assert (loaded.scale, loaded.fit_epochs, loaded.fit_loss) == (
        fitted.scale,
        fitted.fit_epochs,
        fitted.fit_loss,
    )
    # The loaded anchors are usable: both models place a new graph at the same point.
    new = {"new-candidate": SPACE.graph(SPACE.sample(random.Random(98)))}
    np.testing.assert_array_equal(loaded.embed_new(new), fitted.embed_new(new))


def test_load_refuses_other_files_and_versions(fitted: Transformer2vec, tmp_path: Path) -> None:
    bogus = tmp_path / "other.npz"
    np.savez(bogus, meta=np.array(json.dumps({"format": "something-else", "version": 1})))
    with pytest.raises(ValueError, match="refit and save again"):
        Transformer2vec.load(bogus)
    not_npz = tmp_path / "x.npz"
    not_npz.write_text("hello")
    with pytest.raises(ValueError, match="not a Transformer2vec file"):
        Transformer2vec.load(not_npz)


def test_the_saved_file_stores_each_key_once(tmp_path: Path) -> None:
    """Issue 11: version 1 stored every GED pair as two fixed-width strings (a 5,000-row
    library: 130 MB, about 44 kB per row with FlexiBERT keys). A library-sized model (5,000
    rows, 16 partners each, keys as the library loops make them: sorted JSON architectures)
    round-trips exactly in under 400 bytes per row (about 255)."""
    from archsearch.search._library_loops import arch_key

    rng, nrng = random.Random(0), np.random.default_rng(0)
    keys = list(dict.fromkeys(arch_key(SPACE.sample(rng)) for _ in range(5_100)))[:5_000]
    assert len(keys) == 5_000
    model = Transformer2vec(LABELS, seed=0)
    model._keys, model._index = keys, {key: i for i, key in enumerate(keys)}
    model._vectors = nrng.normal(size=(len(keys), model.dim))
    pairs = {
        tuple(sorted((keys[i], keys[int(j)])))
        for i in range(len(keys))
        for j in nrng.choice(len(keys), size=16, replace=False)
        if j != i
    }
    model._trained_pairs = set(pairs)  # type: ignore[arg-type]
    # GEDs of FlexiBERT graphs are multiples of 0.2 below about 60; one pair names a key the
    # model has not embedded (graph_distances caches any pair it is asked).
    model._ged_cache = {pair: round(float(nrng.uniform(0, 60)) * 5) / 5 for pair in pairs}  # type: ignore[misc]
    model._ged_cache[(keys[0], "zz-not-embedded")] = 1.4
    path = model.save(tmp_path / "t2v.npz")
    assert path.stat().st_size < 400 * len(keys), path.stat().st_size
    loaded = Transformer2vec.load(path)
    assert loaded.keys == keys
    np.testing.assert_array_equal(loaded.vectors(), model.vectors())  # bit for bit
    assert loaded.ged_cache == model.ged_cache and loaded.trained_pairs == model.trained_pairs


def test_a_version_1_file_is_refused_by_version(fitted: Transformer2vec, tmp_path: Path) -> None:
    """An old cache names its version; the library loops then refit and overwrite it."""
    old = tmp_path / "v1.npz"
    meta = {"format": "archsearch.transformer2vec", "version": 1, "config": {}}
    keys = np.array(fitted.keys, dtype=str)
    np.savez(old, meta=np.array(json.dumps(meta)), keys=keys, ged_pairs=np.stack([keys, keys], 1))
    with pytest.raises(ValueError, match=r"version 1; this code reads .* version 2"):
        Transformer2vec.load(old)


def test_bad_fit_input_names_the_problem(graphs30: dict[str, nx.DiGraph]) -> None:
    model = Transformer2vec(LABELS)
    one = dict(list(graphs30.items())[:1])
    with pytest.raises(ValueError, match="at least 2 graphs"):
        model.fit(one)
    with pytest.raises(ValueError, match="not a string"):
        model.fit(dict(enumerate(graphs30.values())))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="needs a fitted model"):
        model.embed_new(one)
    with pytest.raises(KeyError, match="not embedded"):
        model.vector("nope")
    with pytest.raises(ValueError, match="max_epochs"):
        Transformer2vec(LABELS, min_epochs=10, max_epochs=5)
