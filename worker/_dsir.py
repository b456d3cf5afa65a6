"""DSIR: data selection with importance resampling on hashed n-gram features (numpy, no torch).

The semantics of the ``data-selection`` package's ``HashedNgramDSIR`` (algorithms.md §5), so
weights and selections equal the package's (``tests/worker/test_dsir.py`` checks it):

1. Features: lower-case, tokenise with NLTK's ``WordPunctTokenizer`` (the regular expression
   ``\\w+|[^\\w\\s]+``, written out here so the worker does not need NLTK; compiled with the
   ``regex`` engine, as NLTK 3.10 does: its ``\\w`` differs from ``re``'s on characters such
   as "³"), take the unigrams and the 2..n-grams (tokens joined by a space), hash each with
   ``sha256 mod buckets``.
2. Importance weights: ``q`` = normalised bucket counts over the whole pool, ``p`` = over the
   whole target (plus an optional Laplace pseudo-count per bucket, the package's
   ``target_laplace_smoothing``), and
   ``log w(x) = sum_j c_j(x) (log(p_j + 1e-8) - log(q_j + 1e-8))``.
3. Resampling: Gumbel(0, 1) noise on ``log w`` then the top k (sampling k without replacement
   with probability proportional to ``w``); ``top_k=True`` skips the noise. The noise comes from
   ``np.random.RandomState(seed).gumbel``, the generator the package draws from, so a seeded
   run picks exactly the package's examples.

Examples whose estimated length ``(sum c + n(n-1)/2) // n`` is below ``min_length`` are never
selected. The package's default, 100 tokens, drops every GLUE sentence; the default here is 1
(only empty texts are dropped), and a filter that leaves fewer than k texts is an error that
says so.

Faster than the package (sparse features, each distinct n-gram hashed once, one process) and
cached: :class:`DsirCache` keeps the features of a text list and the importance weights of a
(pool, target, features) triple (in memory, and the weights on disk under
:func:`dsir_root`), so trials that differ only in k or the seed resample in a fraction of a
second. :func:`dsir_select` returns the chosen indices with their provenance;
:func:`select_texts` is the plain "k texts from a pool towards a target" entry point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import regex

#: NLTK's ``WordPunctTokenizer`` pattern and flags (``nltk.tokenize.regexp``, through
#: ``nltk.redos``, which compiles with ``regex``).
_WORD_PUNCT = regex.compile(r"\w+|[^\w\s]+", regex.UNICODE | regex.MULTILINE | regex.DOTALL)
#: The package's smoothing constant inside the logarithms.
_EPS = 1e-8
DEFAULT_NGRAMS = 2
DEFAULT_BUCKETS = 10_000
DEFAULT_MIN_LENGTH = 1
#: The package's ``min_example_length`` default, named in the error for too short pools.
PACKAGE_MIN_LENGTH = 100
#: Environment variable naming the folder importance weights are kept in.
DSIR_DIR_ENV = "ARCHSEARCH_DSIR_DIR"
# Bump when the weights change in a way the key does not capture: old files then miss.
_FORMAT = 1


def tokenize(text: str) -> list[str]:
    """The package's tokens of ``text``: lower-cased, then ``WordPunctTokenizer``."""
    return _WORD_PUNCT.findall(text.lower())


def texts_digest(texts: Sequence[str]) -> str:
    """A SHA-256 digest of a list of texts, order included (16 hex digits)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class FeatureMatrix:
    """Sparse hashed n-gram counts of a list of texts (CSR without the values: each entry
    counts once).

    Attributes:
        indices: The bucket of every n-gram of every text, text after text.
        offsets: Text ``i``'s n-grams are ``indices[offsets[i]:offsets[i + 1]]``.
        ngrams: The n of the n-grams (1: unigrams only; 2: unigrams and bigrams).
        buckets: The number of hash buckets.
    """

    indices: np.ndarray
    offsets: np.ndarray
    ngrams: int
    buckets: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self) -> np.ndarray:
        """The text each entry of :attr:`indices` belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))

    def counts(self, chosen: np.ndarray | None = None) -> np.ndarray:
        """Bucket counts summed over every text, or over the texts ``chosen`` (indices)."""
        if chosen is None:
            return np.bincount(self.indices, minlength=self.buckets).astype(np.int64)
        mask = np.zeros(len(self), dtype=bool)
        mask[chosen] = True
        keep = np.repeat(mask, np.diff(self.offsets))
        return np.bincount(self.indices[keep], minlength=self.buckets).astype(np.int64)

    def lengths(self) -> np.ndarray:
        """The package's length estimate per text: ``(sum c + n(n-1)/2) // n``."""
        remainder = self.ngrams * (self.ngrams - 1) / 2
        return (np.diff(self.offsets) + remainder) // self.ngrams


class HashedNgrams:
    """The featuriser: each distinct n-gram is hashed once and remembered.

    Args:
        ngrams: n (>= 1).
        buckets: Hash buckets (>= 1).
    """

    def __init__(self, ngrams: int = DEFAULT_NGRAMS, buckets: int = DEFAULT_BUCKETS) -> None:
        if ngrams < 1 or buckets < 1:
            raise ValueError(f"ngrams and buckets must be >= 1, got {ngrams}, {buckets}")
        self.ngrams = ngrams
        self.buckets = buckets
        self._memo: dict[str, int] = {}

    def bucket(self, gram: str) -> int:
        """``int(sha256(gram).hexdigest(), 16) % buckets``, as the package hashes."""
        found = self._memo.get(gram)
        if found is None:
            digest = hashlib.sha256(gram.encode("utf-8")).digest()
            found = self._memo[gram] = int.from_bytes(digest, "big") % self.buckets
        return found

    def grams(self, text: str) -> list[str]:
        """The unigrams, then the bigrams, ... of ``text`` (the package's order)."""
        words = tokenize(text)
        out = list(words)
        for n in range(2, self.ngrams + 1):
            out.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        return out

    def features(self, texts: Sequence[str]) -> FeatureMatrix:
        """The hashed n-gram features of ``texts``."""
        memo, bucket = self._memo, self.bucket
        flat: list[int] = []
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        for i, text in enumerate(texts):
            flat.extend(memo[g] if g in memo else bucket(g) for g in self.grams(text))
            offsets[i + 1] = len(flat)
        indices = np.asarray(flat, dtype=np.int32 if self.buckets < 2**31 else np.int64)
        return FeatureMatrix(indices, offsets, self.ngrams, self.buckets)


@dataclasses.dataclass(frozen=True)
class ImportanceWeights:
    """The fitted importance estimator and every pool text's log-weight.

    Attributes:
        log_weights: ``log w(x)`` per pool text.
        lengths: The package's length estimate per pool text.
        target_probs: ``p``, the (smoothed) target bucket distribution.
        raw_probs: ``q``, the pool's bucket distribution.
        pool: The pool's features (for the distributions of a selection).
    """

    log_weights: np.ndarray
    lengths: np.ndarray
    target_probs: np.ndarray
    raw_probs: np.ndarray
    pool: FeatureMatrix

    @property
    def log_diff(self) -> np.ndarray:
        """``log(p + 1e-8) - log(q + 1e-8)`` per bucket."""
        return np.log(self.target_probs + _EPS) - np.log(self.raw_probs + _EPS)

    def eligible(self, min_length: int) -> np.ndarray:
        """The pool texts at least ``min_length`` long (a boolean mask)."""
        return np.asarray(self.lengths >= min_length)


def fit_importance(
    pool: FeatureMatrix, target: FeatureMatrix, laplace: float = 0.0
) -> ImportanceWeights:
    """Fits ``p`` and ``q`` on every n-gram of the target and pool and weighs each pool text.

    The pool distribution counts every pool text, short ones included, as the package's fit
    does (``num_tokens_to_fit='all'``, which ``'auto'`` equals below 1e9 n-grams).

    Raises:
        ValueError: The two feature matrices differ in n or buckets, or a side has no n-gram.
    """
    if (pool.ngrams, pool.buckets) != (target.ngrams, target.buckets):
        raise ValueError("pool and target features must use the same ngrams and buckets")
    raw = pool.counts()
    tgt = target.counts().astype(np.float64) + laplace
    if raw.sum() == 0 or tgt.sum() == 0:
        side = "pool" if raw.sum() == 0 else "target"
        raise ValueError(f"the {side} texts hold no word to count")
    raw_probs = raw / raw.sum()
    target_probs = tgt / tgt.sum()
    log_diff = np.log(target_probs + _EPS) - np.log(raw_probs + _EPS)
    log_weights = np.bincount(pool.rows(), weights=log_diff[pool.indices], minlength=len(pool))
    return ImportanceWeights(log_weights, pool.lengths(), target_probs, raw_probs, pool)


def gumbel_top_k(
    log_weights: np.ndarray,
    k: int,
    *,
    eligible: np.ndarray | None = None,
    seed: int | None = 0,
    top_k: bool = False,
) -> np.ndarray:
    """k indices sampled without replacement with probability proportional to ``exp(log w)``.

    The package's resampling: Gumbel(0, 1) noise from ``np.random.RandomState(seed)`` on the
    eligible weights, then ``np.argpartition``; so with ``np.random.seed(seed)`` before the
    package's ``resample`` both pick the same examples.

    Args:
        log_weights: One log-weight per item.
        k: How many (1 <= k <= eligible items).
        eligible: A boolean mask of the items that may be chosen; None: all.
        seed: The noise's seed (None: fresh entropy).
        top_k: Skip the noise: the k heaviest items.

    Returns:
        The chosen indices, ascending.
    """
    mask = np.ones(len(log_weights), dtype=bool) if eligible is None else eligible
    allowed = np.flatnonzero(mask)
    if not 1 <= k <= len(allowed):
        raise ValueError(f"k must be in [1, {len(allowed)}] (the eligible items), got {k}")
    scores = np.array(log_weights[allowed], dtype=np.float64)
    if not top_k:
        scores += np.random.RandomState(seed).gumbel(size=scores.shape)
    if k == len(allowed):
        return allowed
    return np.sort(allowed[np.argpartition(-scores, k)[:k]])


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two bucket distributions, with the package's 1e-8 inside the logs."""
    support = p > 0
    return float(np.sum(p[support] * (np.log(p[support] + _EPS) - np.log(q[support] + _EPS))))


def dsir_root() -> Path:
    """Where importance weights are kept on disk: ``$ARCHSEARCH_DSIR_DIR``, else
    ``$ARCHSEARCH_CACHE_DIR/dsir``, else ``~/.cache/archsearch/dsir``."""
    named = os.environ.get(DSIR_DIR_ENV)
    if named:
        return Path(named).expanduser()
    base = os.environ.get("ARCHSEARCH_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "archsearch") / "dsir"


class DsirCache:
    """Features of text lists and importance weights, kept in memory (least recently used out)
    and, with a ``folder``, on disk, so other worker processes on the machine fit once too.

    Keys are digests of the texts, so equal texts from different places share an entry. A
    disk entry is one ``.npz`` (the weights, lengths, both distributions and the pool's sparse
    features), written under a temporary name and renamed.

    Args:
        entries: How many weight sets (and twice as many feature sets) to keep in memory.
        disk: Where weights are kept on disk: a folder, True for :func:`dsir_root` (read
            at each use, so the environment can change it), False for memory only.
    """

    def __init__(self, entries: int = 4, disk: bool | str | Path = False) -> None:
        self.entries = entries
        self.disk = disk
        self._weights: OrderedDict[Hashable, ImportanceWeights] = OrderedDict()
        self._features: OrderedDict[Hashable, FeatureMatrix] = OrderedDict()
        self._featurisers: dict[tuple[int, int], HashedNgrams] = {}
        self._lock = threading.Lock()
        #: Weight look-ups answered from the cache, and those that fitted.
        self.hits = 0
        self.misses = 0

    def features(self, texts: Sequence[str], ngrams: int, buckets: int) -> FeatureMatrix:
        """The features of ``texts``, computed once per (texts, ngrams, buckets)."""
        key = (texts_digest(texts), ngrams, buckets)
        with self._lock:
            if key in self._features:
                self._features.move_to_end(key)
                return self._features[key]
            featuriser = self._featurisers.setdefault(
                (ngrams, buckets), HashedNgrams(ngrams, buckets)
            )
        found = featuriser.features(texts)
        with self._lock:
            self._features[key] = found
            while len(self._features) > 2 * self.entries:
                self._features.popitem(last=False)
        return found

    def weights(
        self,
        pool: Sequence[str],
        target: Sequence[str],
        *,
        ngrams: int = DEFAULT_NGRAMS,
        buckets: int = DEFAULT_BUCKETS,
        laplace: float = 0.0,
    ) -> tuple[ImportanceWeights, bool]:
        """The importance weights of ``pool`` towards ``target``, and whether they were cached."""
        key = (texts_digest(pool), texts_digest(target), ngrams, buckets, float(laplace))
        with self._lock:
            if key in self._weights:
                self._weights.move_to_end(key)
                self.hits += 1
                return self._weights[key], True
        fitted = self._load(key)
        hit = fitted is not None
        if fitted is None:
            fitted = fit_importance(
                self.features(pool, ngrams, buckets),
                self.features(target, ngrams, buckets),
                laplace,
            )
            self._save(key, fitted)
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1
            self._weights[key] = fitted
            while len(self._weights) > self.entries:
                self._weights.popitem(last=False)
        return fitted, hit

    def _path(self, key: tuple[Any, ...]) -> Path | None:
        if self.disk is False:
            return None
        folder = dsir_root() if self.disk is True else Path(self.disk)
        name = hashlib.sha256(json.dumps([_FORMAT, *key]).encode()).hexdigest()[:24]
        return folder / f"{name}.npz"

    def _load(self, key: tuple[Any, ...]) -> ImportanceWeights | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as f:
                pool = FeatureMatrix(
                    f["indices"], f["offsets"], int(f["ngrams"]), int(f["buckets"])
                )
                return ImportanceWeights(
                    f["log_weights"], f["lengths"], f["target_probs"], f["raw_probs"], pool
                )
        except (OSError, KeyError, ValueError):  # unreadable: fit again and overwrite it
            return None

    def _save(self, key: tuple[Any, ...], fitted: ImportanceWeights) -> None:
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.npz")
        np.savez(
            staging,
            log_weights=fitted.log_weights,
            lengths=fitted.lengths,
            target_probs=fitted.target_probs,
            raw_probs=fitted.raw_probs,
            indices=fitted.pool.indices,
            offsets=fitted.pool.offsets,
            ngrams=fitted.pool.ngrams,
            buckets=fitted.pool.buckets,
        )
        os.replace(staging, path)

    def clear(self) -> None:
        with self._lock:
            self._weights.clear()
            self._features.clear()
            self._featurisers.clear()
            self.hits = self.misses = 0


#: The worker process's cache: every trial it runs shares it; weights also go to
#: :func:`dsir_root` so the machine's other workers share them.
DEFAULT_CACHE = DsirCache(disk=True)


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
        kl_random: KL(target || a uniformly random selection of the same size and filter).
        eligible: How many pool texts passed the length filter.
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
) -> DsirSelection:
    """Selects k pool texts towards the target's n-gram distribution.

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

    Raises:
        ValueError: k is not positive, the pool or the target is empty or has no word, or
            fewer than k pool texts pass ``min_length`` (the message says how many do).
    """
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
    chosen = gumbel_top_k(weights.log_weights, k, eligible=eligible, seed=seed, top_k=top_k)
    baseline = np.sort(np.random.default_rng(seed).choice(np.flatnonzero(eligible), k, False))
    names = np.asarray(sources if sources is not None else ["pool"] * len(pool))
    return DsirSelection(
        indices=chosen,
        cache_hit=hit,
        pool_hash=texts_digest(pool),
        ids_hash=hashlib.sha256(chosen.astype(np.int64).tobytes()).hexdigest()[:16],
        shares=_shares(names[chosen]),
        pool_shares=_shares(names),
        kl_selected=_kl_of(weights, chosen),
        kl_random=_kl_of(weights, baseline),
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
