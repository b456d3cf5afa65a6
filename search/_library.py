"""The candidate library of the library loops: rows, their embeddings and features.

A library loop (BOSHNAS, the embedding GP) chooses among the rows of a
:class:`CandidateLibrary`: the space's own enumeration when it has one (the
``flexibert-small`` table's 620 scored architectures, the hierarchical FlexiBERT level with
9,312), otherwise ``library_size`` distinct architectures drawn from the space with the
library's seed. Each row is embedded with :class:`~archsearch.surrogates.Transformer2vec`
fitted on the library's graphs and cached on disk under ``$ARCHSEARCH_CACHE_DIR/embeddings``
(default ``~/.cache/archsearch/embeddings``), keyed by the library and the fit's settings:
every study on the same space reuses them, and a lost cache is only recomputed (the embeddings
are a pure function of the library and the seed, so the server still keeps no state the
storage lacks). An architecture the library lacks (a user's enqueued one) is embedded with
``embed_new`` against the library, without refitting it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.search._param_codes import ParamCodes
from archsearch.spaces import (
    DataSpace,
    DesignSpace,
    EnumerableSpace,
    FeatureSpace,
    GraphSpace,
    RawFeatureSpace,
    SpecError,
)

log = logging.getLogger(__name__)

#: Environment variable naming archsearch's cache root (shared with the worker's teacher cache).
CACHE_DIR_ENV = "ARCHSEARCH_CACHE_DIR"
#: Bump when the library or the embedding cache's layout changes.
EMBEDDING_CACHE_VERSION = 1
#: What a library loop's surrogate sees of a row (loop option ``features``).
FEATURES = ("both", "embedding", "architecture", "numeric", "embedding+numeric", "numeric+totals")


def default_cache_root() -> Path:
    """``$ARCHSEARCH_CACHE_DIR/embeddings``, or ``~/.cache/archsearch/embeddings``."""
    base = os.environ.get(CACHE_DIR_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "archsearch"
    return root / "embeddings"


def arch_key(architecture: dict[str, Any]) -> str:
    """A canonical string for an architecture (sorted-key JSON)."""
    return json.dumps(architecture, sort_keys=True, separators=(",", ":"))


class CandidateLibrary:
    """The rows a library loop chooses from: architectures, their keys and embeddings.

    Args:
        space: The study's design space; it must build graphs (``graph(arch)``) and name its
            label vocabulary (``graph_labels()``), as the FlexiBERT spaces do.
        size: Rows drawn when the space has no enumeration of its own.
        seed: Seed of the draw and of the embedding fit.
        dim: Embedding dimension.
        cache_root: Where fitted embeddings are kept (None: no cache).
    """

    def __init__(
        self,
        space: DesignSpace,
        size: int,
        seed: int,
        dim: int,
        cache_root: Path | None,
        embedding_options: dict[str, Any] | None = None,
    ) -> None:
        from archsearch.surrogates import Transformer2vec

        graphless = not isinstance(space, GraphSpace)
        if graphless and not (
            isinstance(space, EnumerableSpace) and isinstance(space, FeatureSpace)
        ):
            raise SpecError(
                "loop",
                f"the {space.name!r} space has no architecture graphs, which library loops embed",
                "use the flexibert or flexibert-small space, or another loop",
            )
        self.space = space
        # The library and its embeddings belong to the space, not to a study: the seed is the
        # loop option ``library_seed`` (default 0), not the study's, so every study on a space
        # shares one cached fit.
        self.archs = _library_architectures(space, size, seed)
        self.keys = [arch_key(a) for a in self.archs]
        self.index = {k: i for i, k in enumerate(self.keys)}
        # per kind (architecture, numeric): the codes fitted on first use, and every row's
        self._codes: dict[str, tuple[ParamCodes, np.ndarray]] = {}
        #: ``both`` and ``embedding+numeric``: embeddings | codes, rebuilt when rows change
        self._joined: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._t2v: Any = None
        if graphless:
            # The rows of a table without graphs (``archsearch replay`` on a nas-tables file or
            # a CSV, a ``RowTableSpace``): nothing to embed; the surrogate sees the rows'
            # one-hot features (``both`` is those alone, ``embedding`` is refused).
            self.embeddings = np.zeros((len(self.archs), 0), dtype=np.float64)
            return
        assert isinstance(space, GraphSpace)
        self._graph: Callable[[dict[str, Any]], Any] = space.graph
        self._options = dict(embedding_options or {})
        self._t2v = Transformer2vec(
            labels=space.graph_labels(), dim=dim, seed=seed, **self._options
        )
        digest = hashlib.sha256(
            json.dumps(
                [
                    EMBEDDING_CACHE_VERSION,
                    space.name,
                    space.options(),
                    dim,
                    seed,
                    self._options,
                    self.keys,
                ],
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()[:24]
        path = cache_root / f"{space.name}-{digest}.npz" if cache_root is not None else None
        if path is not None and path.exists():
            try:
                self._t2v = Transformer2vec.load(path)
                log.info("library embeddings loaded from %s", path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("ignoring embedding cache %s (%s); refitting", path, e)
                path.unlink(missing_ok=True)
        if not len(self._t2v.keys):
            graphs = {k: space.graph(a) for k, a in zip(self.keys, self.archs, strict=True)}
            self._t2v.fit(graphs)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
                self._t2v.save(tmp)
                os.replace(tmp, path)
                log.info("library embeddings (%d rows) cached in %s", len(self.keys), path)
        self.embeddings = np.asarray(self._t2v.vectors(self.keys), dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keys)

    def _feature_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        if isinstance(self.space, FeatureSpace):
            return dict(self.space.feature_params(architecture))
        return dict(self.space.to_params(architecture))

    def _param_codes(self, kind: str) -> np.ndarray:
        """Every row's parameter codes of ``kind`` (``architecture``: one-hot; ``numeric``:
        numbers as scaled numbers, :class:`~archsearch.search._param_codes.ParamCodes`), fitted
        on the library on first use; rows added later by ``row`` are coded with the same
        columns. The values are ``feature_params`` when the space has it (``raw_feature_params``
        for ``numeric`` where the space bins its numbers), else ``to_params``."""
        numbers = kind in ("numeric", "numeric+totals")

        def values(arch: dict[str, Any]) -> dict[str, Any]:
            if numbers and isinstance(self.space, RawFeatureSpace):
                return dict(self.space.raw_feature_params(arch))
            return self._feature_params(arch)

        with self._lock:
            if kind not in self._codes:
                rows = [values(a) for a in self.archs]
                codes = ParamCodes(rows, numbers=numbers, totals=kind == "numeric+totals")
                self._codes[kind] = (codes, codes.transform(rows))
            codes, coded = self._codes[kind]
            missing = len(self.archs) - coded.shape[0]
            if missing > 0:  # rows added by ``row`` since the codes were fitted
                extra = codes.transform([values(a) for a in self.archs[-missing:]])
                coded = np.vstack([coded, extra])
                self._codes[kind] = (codes, coded)
            return coded

    def architecture_features(self) -> np.ndarray:
        """One-hot codes of every row's readable parameters, one column per (parameter, value)
        of the library (scikit-learn's ``OneHotEncoder``). A row added later with a value the
        library lacks gets zeros for that parameter."""
        return self._param_codes("architecture")

    def numeric_features(self) -> np.ndarray:
        """The rows' parameters with numbers as scaled numbers and the rest one-hot."""
        return self._param_codes("numeric")

    def features(self, kind: str) -> np.ndarray:
        """The surrogate's inputs: ``embedding`` (Transformer2vec, the paper's), ``architecture``
        (one-hot parameters), ``both`` (their concatenation), ``numeric`` (parameters with
        numbers kept as numbers), ``embedding+numeric`` (the embedding and the numeric
        codes) or ``numeric+totals`` (the numeric codes and each per-layer group's sum and
        mean, ``search._param_codes``). On a space without graphs, ``both`` and
        ``embedding+numeric`` are the codes alone."""
        if kind == "embedding":
            if self._t2v is None:
                raise SpecError(
                    "loop_options.features",
                    f"the {self.space.name!r} space has no architecture graphs to embed",
                    "use features architecture or both (its one-hot features)",
                )
            return self.embeddings
        if kind == "architecture":
            return self.architecture_features()
        if kind in ("numeric", "numeric+totals"):
            return self._param_codes(kind)
        if kind in ("both", "embedding+numeric"):
            # the codes first: they bring rows added by ``row`` up to date
            codes = self.architecture_features() if kind == "both" else self.numeric_features()
            joined = self._joined.get(kind)
            if joined is None or joined.shape[0] != codes.shape[0]:
                joined = self._joined[kind] = np.hstack([self.embeddings, codes])
            return joined
        raise ValueError(f"unknown feature kind {kind!r}; known: {', '.join(FEATURES)}")

    def row(self, architecture: dict[str, Any]) -> int:
        """The row of ``architecture``, adding (and embedding) it when the library lacks it."""
        key = arch_key(architecture)
        found = self.index.get(key)
        if found is not None:
            return found
        with self._lock:
            vec = (
                np.zeros((1, 0))
                if self._t2v is None
                else self._t2v.embed_new({key: self._graph(architecture)})
            )
            self.archs.append(architecture)
            self.keys.append(key)
            self.index[key] = len(self.keys) - 1
            self.embeddings = np.vstack([self.embeddings, np.asarray(vec, dtype=np.float64)])
            return self.index[key]


def _library_architectures(space: DesignSpace, size: int, seed: int) -> list[dict[str, Any]]:
    """The space's enumeration when it has one, else ``size`` distinct seeded draws."""
    if isinstance(space, EnumerableSpace):
        archs = list(space.enumerate())
        if archs:
            return archs
    rng = random.Random(seed)
    seen: dict[str, dict[str, Any]] = {}
    attempts = 0
    while len(seen) < size and attempts < size * 20:
        a = space.sample(rng)
        seen.setdefault(arch_key(a), a)
        attempts += 1
    return list(seen.values())


def check_embedding_options(emb: dict[str, Any], dim: int, seed: int) -> None:
    """Builds the library's embedder with ``emb`` at launch, so that a bad option is a
    SpecError now rather than a crash when the first library is built."""
    from archsearch.surrogates import Transformer2vec

    taken = sorted(set(emb) & {"labels", "dim", "seed"})
    if taken:
        raise SpecError(
            f"loop_options.embedding.{taken[0]}",
            "is set by the loop",
            "use loop_options.embedding_dim or loop_options.library_seed",
        )
    timeout = emb.get("ged_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise SpecError("loop_options.embedding.ged_timeout", f"must be > 0, got {timeout!r}")
    try:
        Transformer2vec(labels=["x"], dim=dim, seed=seed, **emb)
    except (TypeError, ValueError) as e:
        raise SpecError("loop_options.embedding", str(e)) from e


def positive_int(opts: dict[str, Any], key: str, default: int, most: int | None = None) -> int:
    """``opts[key]`` (default ``default``): an int in 1..``most``.

    Raises:
        SpecError: Not a whole number, below 1, or above ``most`` (a typo's 50,000,000-row
            library would fill the server's memory while it builds).
    """
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"loop_options.{key}", f"must be a positive int, got {value!r}")
    if most is not None and value > most:
        raise SpecError(f"loop_options.{key}", f"must be <= {most:,}, got {value:,}")
    return value


class JointRows:
    """The rows a library loop chooses among: each library row with each combination of
    the study's data space (row ``r``, combination ``c`` -> ``r * len(data) + c``), whose
    features are the library row's with the combination's one-hot codes appended. Without
    a data space, the library's rows themselves."""

    def __init__(self, lib: CandidateLibrary, data_space: DataSpace | None) -> None:
        self.lib = lib
        self.data_space = data_space
        self.combos = list(data_space.combos()) if data_space is not None else [{}]

    def __len__(self) -> int:
        return len(self.lib) * len(self.combos)

    def split(self, index: int) -> tuple[int, dict[str, Any]]:
        """The library row and data keys of joint row ``index``."""
        row, combo = divmod(index, len(self.combos))
        return row, dict(self.combos[combo])

    def index_of(self, lib_row: int, t: Any) -> int | None:
        """The joint row of a trial on ``lib_row``: its data choice read from its
        ``data.<field>`` parameters (None when they are not the data space's)."""
        if self.data_space is None:
            return lib_row
        try:
            data = self.data_space.from_params(t.params)
        except KeyError:
            return None
        return lib_row * len(self.combos) + self.data_space.index(data)

    def features(self, kind: str) -> np.ndarray:
        base = self.lib.features(kind)
        if self.data_space is None:
            return base
        codes = self.data_space.one_hot()
        return np.hstack(
            [np.repeat(base, len(self.combos), axis=0), np.tile(codes, (len(base), 1))]
        )
