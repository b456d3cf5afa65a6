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
cached (``_dsir_cache``: features and weights in memory, weights on disk), so trials that differ
only in k or the seed resample in a fraction of a second. ``_dsir.dsir_select`` returns the
chosen indices with their provenance; ``_dsir.select_texts`` is the plain "k texts from a pool
towards a target" entry point.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np
import regex

from archsearch.spaces._selection_checks import DEFAULT_BUCKETS, DEFAULT_NGRAMS

#: NLTK's ``WordPunctTokenizer`` pattern and flags (``nltk.tokenize.regexp``, through
#: ``nltk.redos``, which compiles with ``regex``).
_WORD_PUNCT = regex.compile(r"\w+|[^\w\s]+", regex.UNICODE | regex.MULTILINE | regex.DOTALL)
#: The package's smoothing constant inside the logarithms.
_EPS = 1e-8
#: The package's ``min_example_length`` default, named in the error for too short pools.
PACKAGE_MIN_LENGTH = 100


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
