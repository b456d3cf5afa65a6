"""Where DSIR's features and importance weights are kept between trials: in memory (least
recently used out) and on disk (``dsir_root``), so trials that differ only in k or the seed
resample in a fraction of a second and other worker processes on the machine fit once too.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.spaces._selection_checks import DEFAULT_BUCKETS, DEFAULT_NGRAMS
from archsearch.worker._dsir_features import (
    FeatureMatrix,
    HashedNgrams,
    ImportanceWeights,
    fit_importance,
    texts_digest,
)

#: Environment variable naming the folder importance weights are kept in.
DSIR_DIR_ENV = "ARCHSEARCH_DSIR_DIR"
# Bump when the weights change in a way the key does not capture: old files then miss.
_FORMAT = 1


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
