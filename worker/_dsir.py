"""DSIR selection: k pool texts towards a target, with provenance (the method is in
``_dsir_features``, the cache of features and weights in ``_dsir_cache``).

:func:`dsir_select` returns the chosen indices with their provenance (``method="random"``: the
seeded uniformly random baseline of the same size instead, with the same provenance);
:func:`select_texts` is the plain "k texts from a pool towards a target" entry point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from archsearch.spaces._selection_checks import DEFAULT_BUCKETS, DEFAULT_MIN_LENGTH, DEFAULT_NGRAMS
from archsearch.worker._dsir_cache import DEFAULT_CACHE, DSIR_DIR_ENV, DsirCache, dsir_root
from archsearch.worker._dsir_features import (
    PACKAGE_MIN_LENGTH,
    FeatureMatrix,
    HashedNgrams,
    ImportanceWeights,
    fit_importance,
    gumbel_top_k,
    kl_divergence,
    texts_digest,
    tokenize,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_CACHE",
    "DEFAULT_MIN_LENGTH",
    "DEFAULT_NGRAMS",
    "DSIR_DIR_ENV",
    "PACKAGE_MIN_LENGTH",
    "DsirCache",
    "DsirSelection",
    "FeatureMatrix",
    "HashedNgrams",
    "ImportanceWeights",
    "SelectionMethod",
    "dsir_root",
    "dsir_select",
    "fit_importance",
    "gumbel_top_k",
    "kl_divergence",
    "resolve_k",
    "select_texts",
    "texts_digest",
    "tokenize",
]


#: What :func:`dsir_select` picks: importance resampling, or its uniformly random baseline.
SelectionMethod = Literal["dsir", "random"]


@dataclasses.dataclass(frozen=True)
class DsirSelection:
    """What :func:`dsir_select` chose, and how.

    Attributes:
        indices: The chosen pool indices, ascending.
        cache_hit: The importance weights came from the cache.
        pool_hash: Digest of the pool texts (in order).
        ids_hash: Digest of the chosen indices.
        shares: Each source's share of the selection (sources as given; one "pool" if none).
        pool_shares: Each source's share of the pool.
        kl_selected: KL(target || selection) on the hashed n-gram distributions.
        kl_random: KL(target || a uniformly random selection of the same size and filter;
            for a ``"random"`` selection that selection itself, so ``kl_reduction`` is 0).
        eligible: How many pool texts passed the length filter.
        target: The target's source names (set by ``run_dsir``; empty when not known).
        seed: The Gumbel (or random pick's) seed used (None when not known).
    """

    indices: np.ndarray
    cache_hit: bool
    pool_hash: str
    ids_hash: str
    shares: dict[str, float]
    pool_shares: dict[str, float]
    kl_selected: float
    kl_random: float
    eligible: int
    target: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def kl_reduction(self) -> float:
        """How much closer to the target than random the selection is (KL units)."""
        return self.kl_random - self.kl_selected

    def info(self, prefix: str = "selection") -> dict[str, str]:
        """Provenance as a trial's ``info`` entries (strings), keys ``<prefix>_...``."""
        return {
            f"{prefix}_pool_hash": f"sha256:{self.pool_hash}",
            f"{prefix}_ids_hash": f"sha256:{self.ids_hash}",
            f"{prefix}_size": str(len(self.indices)),
            f"{prefix}_eligible": str(self.eligible),
            f"{prefix}_shares": json.dumps(self.shares, sort_keys=True),
            f"{prefix}_pool_shares": json.dumps(self.pool_shares, sort_keys=True),
            f"{prefix}_kl": f"{self.kl_selected:.6g}",
            f"{prefix}_kl_random": f"{self.kl_random:.6g}",
            f"{prefix}_kl_reduction": f"{self.kl_reduction:.6g}",
            f"{prefix}_cache": "hit" if self.cache_hit else "miss",
            **({f"{prefix}_target": json.dumps(list(self.target))} if self.target else {}),
            **({f"{prefix}_seed": str(self.seed)} if self.seed is not None else {}),
        }


def resolve_k(k: int | None, fraction: float | None, pool_size: int) -> int:
    """The number of texts to select: ``k``, or ``fraction`` of the pool (at least 1)."""
    if (k is None) == (fraction is None):
        raise ValueError("give exactly one of k and fraction")
    if k is not None:
        return int(k)
    assert fraction is not None
    return max(1, int(fraction * pool_size))


def dsir_select(
    pool: Sequence[str],
    target: Sequence[str],
    k: int,
    *,
    sources: Sequence[str] | None = None,
    ngrams: int = DEFAULT_NGRAMS,
    buckets: int = DEFAULT_BUCKETS,
    laplace: float = 0.0,
    min_length: int = DEFAULT_MIN_LENGTH,
    top_k: bool = False,
    seed: int = 0,
    cache: DsirCache | None = None,
    method: SelectionMethod = "dsir",
) -> DsirSelection:
    """Selects k pool texts towards the target's n-gram distribution.

    With ``method="random"`` it selects the baseline instead: k of the texts that pass
    ``min_length``, uniformly at random with ``seed`` (``np.random.default_rng(seed)``), the
    very selection a ``"dsir"`` call with the same seed measures its ``kl_random`` on. The
    weights are still fitted (and cached: a DSIR and a random selection of the same pool and
    target share them) for the eligibility filter and the KL provenance.

    Args:
        pool: The texts to choose from.
        target: The texts whose distribution the selection should match.
        k: How many to choose.
        sources: The source name of every pool text (for the shares); None: one source.
        ngrams, buckets: The features (the package's ``ngrams`` and ``num_buckets``).
        laplace: Pseudo-count added to every target bucket (``target_laplace_smoothing``).
        min_length: Texts shorter than this (the package's length estimate) are never chosen.
        top_k: Deterministic top-k instead of Gumbel sampling.
        seed: The Gumbel noise's seed; also the random baseline's.
        cache: Where features and weights are kept (default: :data:`DEFAULT_CACHE`).
        method: ``"dsir"`` (importance resampling) or ``"random"`` (the baseline); with
            ``"random"``, ``laplace`` only smooths the target of the KL provenance.

    Raises:
        ValueError: k is not positive, the pool or the target is empty or has no word,
            fewer than k pool texts pass ``min_length`` (the message says how many do), an
            unknown method, or ``top_k`` with ``method="random"``.
    """
    if method not in ("dsir", "random"):
        raise ValueError(f"method must be 'dsir' or 'random', got {method!r}")
    if method == "random" and top_k:
        raise ValueError("top_k is a DSIR setting: a random selection has no weights to rank")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not pool or not target:
        raise ValueError(f"the {'pool' if not pool else 'target'} holds no text")
    if sources is not None and len(sources) != len(pool):
        raise ValueError(f"{len(sources)} source names for {len(pool)} pool texts")
    cache = cache or DEFAULT_CACHE
    weights, hit = cache.weights(pool, target, ngrams=ngrams, buckets=buckets, laplace=laplace)
    eligible = weights.eligible(min_length)
    count = int(eligible.sum())
    if count < k:
        hint = (
            f"; the data-selection package's default min_length of {PACKAGE_MIN_LENGTH} drops "
            "sentence-length texts such as GLUE's"
            if min_length > DEFAULT_MIN_LENGTH
            else ""
        )
        raise ValueError(
            f"only {count} of {len(pool)} pool texts are at least min_length {min_length} "
            f"tokens long, fewer than k = {k}: lower k or min_length{hint}"
        )
    baseline = np.sort(np.random.default_rng(seed).choice(np.flatnonzero(eligible), k, False))
    chosen = (
        baseline
        if method == "random"
        else gumbel_top_k(weights.log_weights, k, eligible=eligible, seed=seed, top_k=top_k)
    )
    names = np.asarray(sources if sources is not None else ["pool"] * len(pool))
    kl_selected = _kl_of(weights, chosen)
    return DsirSelection(
        indices=chosen,
        cache_hit=hit,
        pool_hash=texts_digest(pool),
        ids_hash=hashlib.sha256(chosen.astype(np.int64).tobytes()).hexdigest()[:16],
        shares=_shares(names[chosen]),
        pool_shares=_shares(names),
        kl_selected=kl_selected,
        kl_random=kl_selected if method == "random" else _kl_of(weights, baseline),
        eligible=count,
    )


def select_texts(pool: Sequence[str], target: Sequence[str], k: int, **options: Any) -> list[str]:
    """The k pool texts DSIR picks towards ``target`` (in pool order).

    For callers that want text, not provenance (distillation text, pre-training text);
    ``options`` are :func:`dsir_select`'s.
    """
    return [pool[i] for i in dsir_select(pool, target, k, **options).indices]


def _kl_of(weights: ImportanceWeights, chosen: np.ndarray) -> float:
    # Add-one smoothing of the selection's counts: a few hundred short texts leave most of
    # 10k buckets empty, and unsmoothed those empty buckets (log 1e-8) would swamp the
    # measure and favour whichever selection spreads over more buckets.
    counts = weights.pool.counts(chosen).astype(np.float64) + 1.0
    return kl_divergence(weights.target_probs, counts / counts.sum())


def _shares(names: np.ndarray) -> dict[str, float]:
    values, counts = np.unique(names, return_counts=True)
    return {str(v): round(float(c) / len(names), 6) for v, c in zip(values, counts, strict=True)}
