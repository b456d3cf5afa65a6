"""How faithful a Transformer2vec embedding is: rank correlation with GED on held-out pairs."""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np
from scipy.stats import spearmanr

from archsearch.surrogates._transformer2vec import (
    Transformer2vec,
    _check_graphs,
    _pair,
    _positive_int,
)


def rank_fidelity(
    model: Transformer2vec, graphs: Mapping[str, nx.DiGraph], n_pairs: int, seed: int = 0
) -> float:
    """Spearman correlation between embedding distance and GED on held-out pairs.

    Pairs are drawn uniformly among unordered pairs of distinct embedded keys of ``graphs``
    that the model was NOT fitted to (:attr:`Transformer2vec.trained_pairs`). Their GEDs go
    into the model's cache.

    Args:
        model: a fitted model.
        graphs: ``{fingerprint: graph}``; keys the model has not embedded are ignored.
        n_pairs: how many held-out pairs to draw (fewer when fewer exist).
        seed: seeds the draw.

    Returns:
        Spearman's rho (NaN when all drawn GEDs, or all distances, are equal).

    Raises:
        ValueError: when fewer than 3 held-out pairs exist.
    """
    _positive_int("n_pairs", n_pairs)
    _check_graphs(graphs, "graphs")
    keys = [key for key in graphs if key in model]
    rng = np.random.default_rng(seed)
    trained = model.trained_pairs
    n = len(keys)
    total = n * (n - 1) // 2
    chosen: list[tuple[int, int]]
    if total <= 4 * n_pairs + len(trained):
        # Small enough to list every held-out pair and draw without replacement.
        candidates = [
            (i, j)
            for i in range(n)
            for j in range(i + 1, n)
            if _pair(keys[i], keys[j]) not in trained
        ]
        picks = rng.permutation(len(candidates))[:n_pairs]
        chosen = [candidates[p] for p in sorted(picks.tolist())]
    else:
        # Too many to list: rejection-sample; held-out pairs are then the large majority.
        seen: set[tuple[int, int]] = set()
        while len(seen) < n_pairs:
            i, j = (int(x) for x in rng.choice(n, size=2, replace=False))
            pair = (min(i, j), max(i, j))
            if _pair(keys[i], keys[j]) not in trained:
                seen.add(pair)
        chosen = sorted(seen)
    if len(chosen) < 3:
        raise ValueError(
            f"only {len(chosen)} held-out pairs among {n} embedded graphs; pass more graphs"
        )
    geds = model.graph_distances([(keys[i], keys[j]) for i, j in chosen], graphs)
    vectors = model.vectors(keys)
    distances = np.array([np.linalg.norm(vectors[i] - vectors[j]) for i, j in chosen])
    rho = spearmanr(distances, geds).statistic
    return float(rho)
