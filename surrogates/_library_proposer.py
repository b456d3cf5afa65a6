"""Proposers over a library of embeddings: the ``LibraryProposer`` contract and what it shares.

A library proposer chooses rows of a fixed library of candidate embeddings for idle workers from
the observations so far. ``BoshnasProposer`` (``_boshnas.py``) and ``EmbeddingGPProposer``
(``_embedding_gp.py``) implement it; this module holds their common part: the ``Proposal`` record,
the validated ``Observations`` of one call, the initial design, and ParEGO's scalarisation of
several objectives (``chebyshev_performance``).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Random rows of the initial design by default (the BOSHNAS reference's, run_boshnas.py).
N_INIT = 10
#: Kind of a proposal of the initial design (``Proposal.kind``).
RANDOM = "random"
#: How the initial design's rows are chosen (``LibraryProposer.init``).
INIT_DESIGNS = ("random", "maximin")


@dataclass(frozen=True)
class Proposal:
    """One proposed library row and why it was chosen.

    Attributes:
        index: Row of the library.
        kind: ``"random"`` (the initial design, random or maximin), ``"exploitation"``
            (GOBI), ``"uncertainty"`` (largest ξ), ``"diversity"`` (uniform random) or
            ``"qlogei"``. Store it with the trial: ``BoshnasProposer`` derives its aleatoric
            phase from it, and library loops count the design's rows in flight by it.
    """

    index: int
    kind: str


@dataclass(frozen=True)
class Observations:
    """Validated inputs of one ``propose`` call (see ``LibraryProposer.propose``)."""

    library: np.ndarray
    observed: np.ndarray
    values: np.ndarray  # (n, m), raw objective values
    free: np.ndarray  # bool (N,): neither observed nor excluded
    pending: np.ndarray = dataclasses.field(  # rows in flight (``pending_idx``)
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )


def _objective_signs(directions: Sequence[str]) -> np.ndarray:
    signs = []
    for direction in directions:
        if direction not in ("maximize", "minimize"):
            raise ValueError(
                f"unknown direction {direction!r}; use 'maximize' or 'minimize' per objective"
            )
        signs.append(1.0 if direction == "maximize" else -1.0)
    if not signs:
        raise ValueError("directions is empty; give one direction per objective")
    return np.asarray(signs)


def chebyshev_performance(
    values: np.ndarray, directions: Sequence[str], weights: np.ndarray, rho: float = 0.05
) -> np.ndarray:
    """ParEGO's augmented Chebyshev scalarisation, as a performance (higher is better).

    Each objective is oriented so higher is better and min-max normalised over the observed
    values into a loss ``l_i`` in [0, 1] (0 = best observed); the scalar loss is
    ``max_i w_i·l_i + rho·Σ_i w_i·l_i`` and the performance is its negative. With ``w`` a unit
    vector on objective j this is an increasing affine map of objective j, so an affine-invariant
    surrogate (``performance_bound=None``) behaves exactly as single-objective on j.
    """
    signs = _objective_signs(directions)
    oriented = np.asarray(values, dtype=np.float64) * signs
    low, high = oriented.min(axis=0), oriented.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    losses = (high - oriented) / span
    weighted = losses * np.asarray(weights, dtype=np.float64)
    return -(weighted.max(axis=1) + rho * weighted.sum(axis=1))


def maximin_rows(
    library: np.ndarray, free: np.ndarray, size: int, rng: np.random.Generator
) -> list[int]:
    """``size`` free rows, each the farthest from the rows not free and those chosen before it.

    Distances are Euclidean with every column scaled to [0, 1] over the library; ties (within
    1e-9) are drawn with ``rng``, and so is the first row when no row is taken yet. scipy's
    ``qmc`` designs fill a box, not a finite set of rows, hence this greedy form.
    """
    low, span = library.min(axis=0), np.ptp(library, axis=0)
    x = (library - low) / np.where(span > 0, span, 1.0)
    nearest = np.full(library.shape[0], np.inf)
    for taken in np.flatnonzero(~free):
        nearest = np.minimum(nearest, np.linalg.norm(x - x[taken], axis=1))
    available = free.copy()
    chosen: list[int] = []
    for _ in range(size):
        candidates = np.flatnonzero(available)
        gaps = nearest[candidates]
        best = candidates[gaps >= gaps.max() - 1e-9] if np.isfinite(gaps.max()) else candidates
        pick = int(rng.choice(best))
        chosen.append(pick)
        available[pick] = False
        nearest = np.minimum(nearest, np.linalg.norm(x - x[pick], axis=1))
    return chosen


class LibraryProposer(abc.ABC):
    """Chooses library rows for idle workers from the observations so far.

    Contract: ``propose`` returns distinct library indices, none observed or excluded, at most
    ``k`` (fewer only when fewer rows are free or fewer rows of the initial design are left,
    see below), and keeps no state the arguments lack except
    caches (fitted models) that the same arguments would rebuild.

    The initial design is ``n_init`` uniformly random rows *in all*, counting those in flight
    (``random_in_flight``), as Ax's ``num_trials`` does: idle workers that ask while the first
    random rows are still running get random rows only up to that quota, then model-based ones
    once ``min_observed`` (``max(2, ceil(n_init / 2))``, Ax's ``min_trials_observed``) results
    are in. Otherwise four workers and ``n_init`` 5 would evaluate eight random rows (two
    rounds of four) before the first model-based one. With one worker this is the usual rule:
    random until ``n_init`` results, then the model.

    ``init="maximin"`` spreads the design instead: each of its rows is the free row farthest
    (Euclidean, every library column scaled to [0, 1]) from its nearest row already observed,
    in flight or chosen, ties drawn at random; the first row of an empty study is random. Rows
    picked one at a time this way are a greedy maximin design over the library, which stays a
    pure function of the call's arguments (so restarts and replays rebuild it).

    Args:
        directions: One ``"maximize"``/``"minimize"`` per objective.
        n_init: Rows of the initial design (observed or in flight).
        seed: Seeds the models.
        init: ``random`` (default) or ``maximin`` (above).
    """

    def __init__(
        self,
        directions: Sequence[str] = ("maximize",),
        n_init: int = N_INIT,
        seed: int = 0,
        init: str = "random",
    ) -> None:
        self.directions = tuple(directions)
        self.signs = _objective_signs(self.directions)
        if n_init < 2:
            raise ValueError(f"n_init must be >= 2 (a surrogate needs two points), got {n_init}")
        if init not in INIT_DESIGNS:
            raise ValueError(f"init must be one of {', '.join(INIT_DESIGNS)}, got {init!r}")
        self.init = init
        self.n_init = n_init
        self.min_observed = max(2, math.ceil(n_init / 2))
        self.seed = seed

    #: Whether proposals depend on the rows in flight (``pending_idx``); a library loop then
    #: proposes one row per call, each seeing the ones before it in flight.
    uses_pending = False

    def propose(
        self,
        library: np.ndarray,
        observed_idx: Sequence[int] | np.ndarray,
        observed_perf: Sequence[float] | np.ndarray,
        excluded_idx: Sequence[int] | np.ndarray,
        k: int,
        rng: np.random.Generator,
        *,
        observed_kinds: Sequence[str] | None = None,
        weights: np.ndarray | None = None,
        random_in_flight: int = 0,
    ) -> list[int]:
        """Library rows for ``k`` idle workers (see ``propose_with_kinds``)."""
        return [
            p.index
            for p in self.propose_with_kinds(
                library,
                observed_idx,
                observed_perf,
                excluded_idx,
                k,
                rng,
                observed_kinds=observed_kinds,
                weights=weights,
                random_in_flight=random_in_flight,
            )
        ]

    def propose_with_kinds(
        self,
        library: np.ndarray,
        observed_idx: Sequence[int] | np.ndarray,
        observed_perf: Sequence[float] | np.ndarray,
        excluded_idx: Sequence[int] | np.ndarray,
        k: int,
        rng: np.random.Generator,
        *,
        observed_kinds: Sequence[str] | None = None,
        weights: np.ndarray | None = None,
        random_in_flight: int = 0,
        pending_idx: Sequence[int] | np.ndarray = (),
    ) -> list[Proposal]:
        """Library rows for ``k`` idle workers, each with the reason it was chosen.

        While the initial design is incomplete and a model could already be fitted, only its
        remaining random rows are returned (fewer than ``k``): ask again once they are in
        flight (``random_in_flight``) for model-based rows.

        Args:
            library: Candidate embeddings ``E``, shape ``(N, d)``.
            observed_idx: Library rows with results, in the order the results arrived.
            observed_perf: Their objective values: ``(n,)`` for one objective, ``(n, m)`` for m.
            excluded_idx: Rows that must not be proposed (in flight); observed rows never are.
            k: Number of idle workers.
            rng: All random choices of this call.
            observed_kinds: ``Proposal.kind`` of each observation (same order), if stored.
            weights: Scalarisation weights for several objectives (default: drawn from the
                uniform simplex with ``rng``, one vector per call).
            random_in_flight: Rows of the initial design (proposed at random) still running;
                they must be among ``excluded_idx``.
            pending_idx: Rows in flight (never proposed); a proposer with ``uses_pending``
                takes them into account (BOSHNAS's ``pending="believer"``).
        """
        obs = self._validate(library, observed_idx, observed_perf, excluded_idx, k)
        pending = np.asarray(pending_idx, dtype=np.int64).reshape(-1)
        if pending.size and (pending.min() < 0 or pending.max() >= obs.library.shape[0]):
            raise ValueError(f"pending_idx must be library rows, got {pending}")
        obs.free[pending] = False
        obs = dataclasses.replace(obs, pending=pending)
        if (
            isinstance(random_in_flight, bool)
            or not isinstance(random_in_flight, int | np.integer)
            or random_in_flight < 0
        ):
            raise ValueError(f"random_in_flight must be an integer >= 0, got {random_in_flight!r}")
        if observed_kinds is not None and len(observed_kinds) != obs.observed.shape[0]:
            raise ValueError(
                f"{len(observed_kinds)} observed_kinds for {obs.observed.shape[0]} observations; "
                "give one kind per observation"
            )
        n_free = int(obs.free.sum())
        count = min(k, n_free)
        if count == 0:
            return []
        n_observed = obs.observed.shape[0]
        design_left = self.n_init - n_observed - int(random_in_flight)
        if n_observed < self.min_observed or design_left > 0:
            # The initial design: only its remaining rows once a model could be fitted, so no
            # fit is spent on a batch whose model-based rows nobody may ask for.
            size = count if n_observed < self.min_observed else min(count, design_left)
            return [Proposal(int(r), RANDOM) for r in self._design(obs, size, rng)]
        performance = self._performance(obs.values, rng, weights)
        proposals = self._propose(obs, performance, count, rng, observed_kinds)
        assert len({p.index for p in proposals}) == len(proposals) == count
        return proposals

    def _design(self, obs: Observations, size: int, rng: np.random.Generator) -> list[int]:
        """``size`` free rows of the initial design (``init``, class docstring)."""
        if self.init == "random":
            return [int(r) for r in rng.choice(np.flatnonzero(obs.free), size=size, replace=False)]
        return maximin_rows(obs.library, obs.free, size, rng)

    def _performance(
        self, values: np.ndarray, rng: np.random.Generator, weights: np.ndarray | None
    ) -> np.ndarray:
        n_objectives = len(self.directions)
        if n_objectives == 1:
            return values[:, 0] * self.signs[0]
        if weights is None:
            weights = rng.dirichlet(np.ones(n_objectives))
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n_objectives,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"weights must be {n_objectives} non-negative numbers, not all 0; got {weights}"
            )
        return chebyshev_performance(values, self.directions, weights / weights.sum())

    @abc.abstractmethod
    def _propose(
        self,
        obs: Observations,
        performance: np.ndarray,
        count: int,
        rng: np.random.Generator,
        kinds: Sequence[str] | None,
    ) -> list[Proposal]:
        """``count`` distinct free rows (``1 <= count <=`` free rows, n >= min_observed)."""

    def _validate(
        self,
        library: np.ndarray,
        observed_idx: Sequence[int] | np.ndarray,
        observed_perf: Sequence[float] | np.ndarray,
        excluded_idx: Sequence[int] | np.ndarray,
        k: int,
    ) -> Observations:
        lib = np.asarray(library, dtype=np.float64)
        if lib.ndim != 2 or lib.shape[0] == 0 or lib.shape[1] == 0:
            raise ValueError(f"library must have shape (N, d) with N, d >= 1, got {lib.shape}")
        if not np.isfinite(lib).all():
            raise ValueError("library embeddings must be finite; re-embed the rows with NaN/inf")
        n_rows = lib.shape[0]
        observed = np.asarray(observed_idx, dtype=np.int64).reshape(-1)
        excluded = np.asarray(excluded_idx, dtype=np.int64).reshape(-1)
        for name, idx in (("observed_idx", observed), ("excluded_idx", excluded)):
            if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
                raise ValueError(f"{name} must be library rows in [0, {n_rows}), got {idx}")
        values = np.asarray(observed_perf, dtype=np.float64)
        m = len(self.directions)
        if values.ndim == 1 and m == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape != (observed.shape[0], m):
            raise ValueError(
                f"observed_perf must have shape ({observed.shape[0]},) or "
                f"({observed.shape[0]}, {m}) for {m} objective(s), got {values.shape}"
            )
        if not np.isfinite(values).all():
            raise ValueError("observed_perf must be finite; leave failed trials out")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        free = np.ones(n_rows, dtype=bool)
        free[observed] = False
        free[excluded] = False
        return Observations(library=lib, observed=observed, values=values, free=free)
