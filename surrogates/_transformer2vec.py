"""Transformer2vec: Euclidean embeddings of architecture graphs whose distances match their GED.

The FlexiBERT reference (algorithms.md 1.3, ``embedding_util.generate_grad_embeddings``) learns one
free 16-d vector per graph so that ``||e_i - e_j||`` matches the graph edit distance GED(i, j):
mean squared error over all pairs, Adam (lr 0.002), CosineAnnealingWarmRestarts(T0=10 epochs,
stepped by fractional epoch), batches of 2,048 pairs, 10 epochs, seed 0. BOSHNAS then searches in
that space.

GED values are cached by the (sorted) pair of keys, so nothing is computed twice; the cache is
saved with the embedding. Keys are architecture fingerprints: one key always names one graph.

What differs from the reference, and why, is in ``_transformer2vec_fit.py`` (the optimisation);
the file format of :meth:`Transformer2vec.save` in ``_transformer2vec_file.py``; how well an
embedding keeps the order of GEDs (:func:`rank_fidelity`) in ``_embedding_fidelity.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np

from archsearch.surrogates._ged import (
    DEFAULT_TIMEOUT_S,
    GED_METHODS,
    GedMethod,
    LabelCosts,
    PreparedGraph,
    graph_edit_distance,
    prepare_graph,
    prepared_edit_distance,
)
from archsearch.surrogates._transformer2vec_file import SavedModel, read_model, write_model
from archsearch.surrogates._transformer2vec_fit import fit_vectors, place, sample_pairs

PairKey = tuple[str, str]


def _pair(a: str, b: str) -> PairKey:
    """The cache key of an unordered pair."""
    return (a, b) if a <= b else (b, a)


def _check_graphs(graphs: Mapping[str, nx.DiGraph], what: str) -> None:
    if not isinstance(graphs, Mapping):
        raise ValueError(f"{what} must be a mapping from architecture fingerprint to graph")
    for key, graph in graphs.items():
        if not isinstance(key, str):
            raise ValueError(
                f"{what}: key {key!r} is not a string; key graphs by architecture fingerprint"
            )
        if not isinstance(graph, nx.DiGraph):
            raise ValueError(
                f"{what}[{key!r}] is a {type(graph).__name__}, not a networkx DiGraph; build "
                "it with architecture_graph(...)"
            )


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class Transformer2vec:
    """Graph embeddings whose Euclidean distances approximate graph edit distances.

    Args:
        labels: node-label vocabulary in cost order (``ordered_labels(...)`` of the space).
        dim: embedding dimension (the reference: 16).
        partners: random partners per graph when fitting (k; about k*n GED pairs in all).
        batch_size: pairs per optimiser step (the reference: 2,048).
        lr: Adam learning rate, in units of the mean GED (the reference: 0.002).
        restart_epochs: T0 of CosineAnnealingWarmRestarts, in epochs (the reference: 10).
        min_epochs: train at least this many epochs.
        max_epochs: train at most this many epochs.
        tolerance: stop at a cycle's end once the training loss improved by less than this
            fraction since the previous cycle's end.
        anchors: how many fitted graphs new graphs are placed against (:meth:`embed_new`).
        seed: seeds pair sampling, initial vectors, batch order and anchor choice.
        ged_method: ``"assignment"`` (default) or ``"networkx"``; both give the same values
            (see ``archsearch.surrogates._ged``), the first 50-250 times faster.
        ged_timeout: seconds bound on one networkx GED call (``"networkx"`` only).

    Raises:
        ValueError: on an out-of-range setting.
    """

    def __init__(
        self,
        labels: Sequence[str],
        *,
        dim: int = 16,
        partners: int = 16,
        batch_size: int = 2048,
        lr: float = 0.002,
        restart_epochs: int = 10,
        min_epochs: int = 100,
        max_epochs: int = 5000,
        tolerance: float = 1e-3,
        anchors: int = 64,
        seed: int = 0,
        ged_method: GedMethod = "assignment",
        ged_timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._costs = LabelCosts(labels)
        self._dim = _positive_int("dim", dim)
        self.partners = _positive_int("partners", partners)
        self.batch_size = _positive_int("batch_size", batch_size)
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.lr = float(lr)
        self.restart_epochs = _positive_int("restart_epochs", restart_epochs)
        self.min_epochs = _positive_int("min_epochs", min_epochs)
        self.max_epochs = _positive_int("max_epochs", max_epochs)
        if self.max_epochs < self.min_epochs:
            raise ValueError(
                f"max_epochs ({max_epochs}) is below min_epochs ({min_epochs}); raise max_epochs"
            )
        if not (isinstance(tolerance, int | float) and 0 <= tolerance < 1):
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.anchors = _positive_int("anchors", anchors)
        self.seed = _positive_int("seed", seed, minimum=0)
        if ged_method not in GED_METHODS:
            raise ValueError(
                f"unknown ged_method {ged_method!r}; use one of {', '.join(GED_METHODS)}"
            )
        self.ged_method: GedMethod = ged_method
        self.ged_timeout = ged_timeout

        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._vectors = np.zeros((0, self._dim))
        self._anchor_graphs: dict[str, nx.DiGraph] = {}
        self._trained_pairs: set[PairKey] = set()
        self._ged_cache: dict[PairKey, float] = {}
        #: Mean GED of the fitted pairs: the unit distances were trained in.
        self.scale = 1.0
        #: Epochs the last :meth:`fit` ran, and its final MSE in units of ``scale`` squared.
        self.fit_epochs = 0
        self.fit_loss = math.nan

    # ----------------------------------------------------------------------------- lookup

    @property
    def labels(self) -> tuple[str, ...]:
        """The label vocabulary in cost order."""
        return self._costs.labels

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def keys(self) -> list[str]:
        """Keys of every embedded graph, in embedding order (fitted first, then new ones)."""
        return list(self._keys)

    @property
    def anchor_keys(self) -> list[str]:
        """Keys of the frozen graphs :meth:`embed_new` places new graphs against."""
        return list(self._anchor_graphs)

    @property
    def trained_pairs(self) -> frozenset[PairKey]:
        """Sorted key pairs whose GED the vectors were fitted to (fit and embed_new)."""
        return frozenset(self._trained_pairs)

    @property
    def ged_cache(self) -> Mapping[PairKey, float]:
        """Read-only view of the GED cache: ``{(key_a, key_b) sorted: GED}``."""
        return MappingProxyType(self._ged_cache)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def vector(self, key: str) -> np.ndarray:
        """The embedding of ``key`` (a copy, float64, shape ``(dim,)``)."""
        try:
            return self._vectors[self._index[key]].copy()
        except KeyError:
            raise KeyError(
                f"{key!r} is not embedded; fit() or embed_new() its graph first"
            ) from None

    def vectors(self, keys: Iterable[str] | None = None) -> np.ndarray:
        """Embeddings of ``keys`` (default: all, in :attr:`keys` order), shape ``(n, dim)``."""
        if keys is None:
            return self._vectors.copy()
        rows = []
        for key in keys:
            if key not in self._index:
                raise KeyError(f"{key!r} is not embedded; fit() or embed_new() its graph first")
            rows.append(self._index[key])
        return self._vectors[rows].copy()

    # ----------------------------------------------------------------------------- GED

    def graph_distance(
        self, key_a: str, graph_a: nx.DiGraph, key_b: str, graph_b: nx.DiGraph
    ) -> float:
        """GED between two keyed graphs, from the cache when it was computed before."""
        return float(self.graph_distances([(key_a, key_b)], {key_a: graph_a, key_b: graph_b})[0])

    def graph_distances(
        self, pairs: Sequence[tuple[str, str]], graphs: Mapping[str, nx.DiGraph]
    ) -> np.ndarray:
        """GEDs of many key pairs, from the cache where computed before, cached otherwise.

        Each graph is indexed once per call (``prepare_graph``), not once per pair: on
        FlexiBERT graphs that indexing costs more than the assignment itself.

        Args:
            pairs: ``(key_a, key_b)`` pairs, in any order.
            graphs: the graph of every key in ``pairs`` whose GED is not cached yet.

        Returns:
            The GEDs in the order of ``pairs``.
        """
        prepared: dict[str, PreparedGraph] = {}

        def prepare(key: str) -> PreparedGraph:
            if key not in prepared:
                prepared[key] = prepare_graph(graphs[key], self._costs)
            return prepared[key]

        out = np.empty(len(pairs))
        for position, (a, b) in enumerate(pairs):
            if a == b:
                out[position] = 0.0
                continue
            pair = _pair(a, b)
            value = self._ged_cache.get(pair)
            if value is None:
                if self.ged_method == "assignment":
                    value = prepared_edit_distance(prepare(a), prepare(b))
                else:
                    value = graph_edit_distance(
                        graphs[a],
                        graphs[b],
                        self._costs,
                        method="networkx",
                        timeout=self.ged_timeout,
                    )
                self._ged_cache[pair] = value
            out[position] = value
        return out

    # ----------------------------------------------------------------------------- fit

    def fit(self, graphs: Mapping[str, nx.DiGraph]) -> None:
        """Fits one vector per graph from scratch (previous vectors are dropped).

        Args:
            graphs: ``{fingerprint: graph}``, at least two graphs. Order matters for
                determinism only (same mapping order and seed give the same vectors).

        Raises:
            ValueError: on fewer than two graphs, non-string keys or unknown node labels.
        """
        _check_graphs(graphs, "graphs")
        keys = list(graphs)
        if len(keys) < 2:
            raise ValueError(f"fit needs at least 2 graphs, got {len(keys)}")
        rng = np.random.default_rng(self.seed)
        index_pairs = sample_pairs(len(keys), self.partners, rng)
        targets = self.graph_distances(
            [(keys[i], keys[j]) for i, j in index_pairs.tolist()], graphs
        )
        mean_ged = float(targets.mean())
        self.scale = mean_ged if mean_ged > 0 else 1.0

        vectors, self.fit_epochs, self.fit_loss = fit_vectors(
            len(keys),
            self._dim,
            index_pairs,
            targets / self.scale,
            seed=self.seed,
            lr=self.lr,
            batch_size=self.batch_size,
            restart_epochs=self.restart_epochs,
            min_epochs=self.min_epochs,
            max_epochs=self.max_epochs,
            tolerance=self.tolerance,
        )

        self._keys = keys
        self._index = {key: i for i, key in enumerate(keys)}
        self._vectors = vectors * self.scale
        self._trained_pairs = {_pair(keys[i], keys[j]) for i, j in index_pairs.tolist()}
        anchor_rows = rng.choice(len(keys), size=min(self.anchors, len(keys)), replace=False)
        # Copies: the caller may reuse or change its graphs; anchors must stay what was fitted.
        self._anchor_graphs = {
            keys[i]: graphs[keys[i]].copy() for i in sorted(anchor_rows.tolist())
        }

    # ----------------------------------------------------------------------------- new graphs

    def embed_new(self, graphs: Mapping[str, nx.DiGraph]) -> np.ndarray:
        """Embeds new graphs against the frozen anchors, without refitting anything else.

        Each new vector minimises ``sum_a (||x - e_a|| - GED(new, a))^2`` over the anchors ``a``
        (the fit's objective restricted to the new graph's pairs with the anchors), solved by
        ``scipy.optimize.least_squares`` from two starts (the anchors' centroid, and next to the
        anchor with the smallest GED), keeping the better. Keys already embedded keep their
        vectors. The new keys are added to the model.

        Args:
            graphs: ``{fingerprint: graph}`` of the candidates to embed.

        Returns:
            Vectors of ``graphs`` in its order, shape ``(len(graphs), dim)``.

        Raises:
            ValueError: before :meth:`fit`, or on bad keys/graphs.
        """
        _check_graphs(graphs, "graphs")
        if not self._anchor_graphs:
            raise ValueError("embed_new needs a fitted model; call fit() (or load()) first")
        anchor_keys = list(self._anchor_graphs)
        anchor_vectors = self.vectors(anchor_keys) / self.scale
        new_keys = [key for key in graphs if key not in self._index]
        # One call for every (new, anchor) pair, so each anchor graph is indexed once.
        all_targets = self.graph_distances(
            [(key, anchor) for key in new_keys for anchor in anchor_keys],
            {**self._anchor_graphs, **graphs},
        ).reshape(len(new_keys), len(anchor_keys))
        positions = place(anchor_vectors, all_targets / self.scale, self.seed)
        for key in new_keys:
            self._index[key] = len(self._keys)
            self._keys.append(key)
            self._trained_pairs.update(_pair(key, anchor) for anchor in anchor_keys)
        if new_keys:
            self._vectors = np.vstack([self._vectors, positions * self.scale])
        return self.vectors(graphs.keys())

    # ----------------------------------------------------------------------------- files

    def _config(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "dim": self._dim,
            "partners": self.partners,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "restart_epochs": self.restart_epochs,
            "min_epochs": self.min_epochs,
            "max_epochs": self.max_epochs,
            "tolerance": self.tolerance,
            "anchors": self.anchors,
            "seed": self.seed,
            "ged_method": self.ged_method,
            "ged_timeout": self.ged_timeout,
        }

    def save(self, path: str | Path) -> Path:
        """Writes the whole model (vectors, anchors and their graphs, GED cache) to ``path``.

        The file is a compressed NumPy ``.npz`` without pickled objects, written atomically
        (temporary file, then rename). Each key is stored once, in a UTF-8 JSON list (the
        embedded keys first, in embedding order, then the other keys the GED cache names);
        anchors and pairs are ``int32`` indices into that list. :meth:`load` restores an equal
        model: vectors and GEDs bit for bit (both stay ``float64``). The format is
        ``_transformer2vec_file.py``'s.

        Returns:
            The path written.
        """
        return write_model(
            path,
            SavedModel(
                config=self._config(),
                scale=self.scale,
                fit_epochs=self.fit_epochs,
                fit_loss=self.fit_loss,
                keys=self._keys,
                vectors=self._vectors,
                anchor_graphs=self._anchor_graphs,
                trained_pairs=self._trained_pairs,
                ged_cache=self._ged_cache,
            ),
        )

    @classmethod
    def load(cls, path: str | Path) -> Transformer2vec:
        """Reads a model written by :meth:`save`.

        Raises:
            ValueError: when the file is not a Transformer2vec file or has another version
                (a cache of an older version is refitted by its owner, not read).
        """
        saved = read_model(path)
        model = cls(**saved.config)
        model.scale = saved.scale
        model.fit_epochs = saved.fit_epochs
        model.fit_loss = saved.fit_loss
        model._vectors = saved.vectors.reshape(-1, model.dim)
        model._keys = saved.keys
        model._index = {key: i for i, key in enumerate(model._keys)}
        model._anchor_graphs = saved.anchor_graphs
        model._trained_pairs = saved.trained_pairs
        model._ged_cache = saved.ged_cache
        return model
